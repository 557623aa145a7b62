//! ami-central: the head end. Sites dial out and POST batches to the ingest API; operators query readings,
//! queue commands and watch the dashboard. SQLite is the embedded default, PostgreSQL the store for scale.
