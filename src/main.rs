//! The `cutover` command; all the work is in the library, see `cutover::scan` etc.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
