//! EN 13757-3 application layer: fixed header and variable data records.
