//! `amid`: the ami concentrator daemon and command-line tool. See `amid --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ami_collector::cli::main()
}
