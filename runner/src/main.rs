//! `runner`: runs, validates or draws a pipeline file.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    let matches = runner::cli::Cli::command().get_matches();
    let cli = runner::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The pipeline file's `[telemetry] log_format` applies unless the
    // command line names one.
    let given = matches.value_source("log_format") == Some(ValueSource::CommandLine);
    let from_file = runner::config::telemetry::log_format_of(&cli.pipeline);
    runner::logging::init(if given { cli.log_format } else { from_file.unwrap_or(cli.log_format) });
    runner::cli::execute(cli)
}
