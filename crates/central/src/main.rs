//! `ami-central`: see `ami-central --help`.
fn main() {}
