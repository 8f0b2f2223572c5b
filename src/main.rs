use std::process::ExitCode;

fn main() -> ExitCode {
    unifs::cli::main()
}
