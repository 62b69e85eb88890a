//! `runner`: runs, validates or draws a pipeline file.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = runner::cli::Cli::parse();
    runner::logging::init(cli.log_format);
    runner::cli::execute(cli)
}
