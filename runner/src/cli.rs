//! The command line: `runner --pipeline FILE [run | validate | graph]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stages::telemetry::Telemetry;

use crate::config;
use crate::graph::Graph;
use crate::logging::LogFormat;
use crate::otel::Otel;
use crate::topology::{self, Outcome};

#[derive(Debug, Parser)]
#[command(name = "runner", version, about = "Runs a toll pipeline declared in one TOML file")]
pub struct Cli {
    /// The pipeline file.
    #[arg(long, global = true, env = "TOLL_PIPELINE", default_value = "pipelines/toll.toml")]
    pub pipeline: PathBuf,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Seconds that stopping may take before running components are abandoned.
    #[arg(long, global = true, default_value_t = 30)]
    pub drain_timeout_s: u64,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline until SIGINT or SIGTERM (the default).
    Run,
    /// Check the file and print the graph; exits non-zero when it is broken.
    Validate,
    /// Print the graph in Graphviz DOT.
    Graph,
}

/// Does what the command line asks.
pub fn execute(cli: Cli) -> ExitCode {
    let loaded = config::load_pipeline(&cli.pipeline)
        .and_then(|pipeline| Ok((Graph::build(pipeline.declarations)?, pipeline.telemetry)));
    let (graph, telemetry_settings) = match loaded {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return ExitCode::from(2);
        }
    };
    for warning in &graph.warnings {
        tracing::warn!(warning = %warning, "pipeline file warning");
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Validate => {
            print_out(&format!("{} is valid:\n{}", cli.pipeline.display(), graph.describe()))
        }
        Command::Graph => print_out(&graph.to_dot()),
        Command::Run => {
            let options = topology::Options {
                drain_timeout: Duration::from_secs(cli.drain_timeout_s),
                ..topology::Options::default()
            };
            run(graph, options, telemetry_settings)
        }
    }
}

/// Writes to stdout; a closed or full stdout is an error, not a panic.
fn print_out(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    graph: Graph,
    options: topology::Options,
    telemetry_settings: config::TelemetrySettings,
) -> ExitCode {
    // Each OBU connection is a file descriptor; take what the system allows.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = Telemetry::new();
        let otel = match Otel::start(&telemetry_settings, &telemetry).await {
            Ok(otel) => otel,
            Err(error) => {
                let error = stages::error_chain(&error);
                tracing::error!(%error, "telemetry did not start");
                return ExitCode::FAILURE;
            }
        };
        let running = match topology::start(graph, &telemetry, options) {
            Ok(running) => running,
            Err(error) => {
                let error = stages::error_chain(&error);
                tracing::error!(%error, "pipeline did not start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("pipeline running");
        let outcome = running.run_until(stop_signal()).await;
        otel.shutdown().await;
        log_summary(&telemetry);
        match outcome {
            Outcome::Completed => {
                tracing::info!("pipeline completed");
                ExitCode::SUCCESS
            }
            Outcome::Stopped => {
                tracing::info!("pipeline stopped");
                ExitCode::SUCCESS
            }
            Outcome::Failed => ExitCode::FAILURE,
        }
    })
}

/// One line per component with what it received, sent, refused and failed.
fn log_summary(telemetry: &Telemetry) {
    for s in telemetry.summary() {
        let rejected: Vec<String> = s.rejected.iter().map(|(r, n)| format!("{r}={n}")).collect();
        tracing::info!(
            component = %s.component,
            received = s.received,
            sent = s.sent,
            errors = s.errors,
            rejected = %rejected.join(" "),
            "component summary",
        );
    }
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM; only SIGINT stops");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
