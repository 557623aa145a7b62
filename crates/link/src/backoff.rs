//! Retry back-off as a pure iterator: exponential with full jitter, capped.
