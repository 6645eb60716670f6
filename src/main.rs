//! The `salve` command. The library does the work; the command parses
//! arguments, prints, and maps errors to exit codes (see `salve --help`).

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
