//! The command line: `runner --pipeline FILE [run | validate | graph]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use stages::telemetry::Telemetry;
use tokio::sync::mpsc;

use crate::config;
use crate::graph::Graph;
use crate::logging::LogFormat;
use crate::otel::Otel;
use crate::topology::{self, Outcome, Reload};

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

    /// Do not watch the pipeline file for changes (SIGHUP still reloads it).
    #[arg(long, global = true)]
    pub no_watch: bool,

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
            let watch = !cli.no_watch;
            run(cli.pipeline, graph, options, telemetry_settings, watch)
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
    pipeline: PathBuf,
    graph: Graph,
    options: topology::Options,
    telemetry_settings: config::TelemetrySettings,
    watch: bool,
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
        let files = watched_files(&pipeline, &graph);
        let running = match topology::start(graph, &telemetry, options) {
            Ok(running) => running,
            Err(error) => {
                let error = stages::error_chain(&error);
                tracing::error!(%error, "pipeline did not start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("pipeline running");
        let reloads = match reloader(pipeline, files, watch, telemetry.clone(), telemetry_settings)
        {
            Ok(reloads) => reloads,
            Err(error) => {
                tracing::error!(%error, "cannot watch the pipeline file");
                return ExitCode::FAILURE;
            }
        };
        let outcome = running.run_until(stop_signal(), reloads).await;
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

/// The pipeline file and every file its components read.
fn watched_files(pipeline: &Path, graph: &Graph) -> Vec<PathBuf> {
    let referenced = graph.nodes.iter().flat_map(|n| n.declaration.config.referenced_files());
    std::iter::once(pipeline.to_path_buf()).chain(referenced).collect()
}

/// Reads the pipeline file again whenever it (or a file it references)
/// changes, or on SIGHUP, and hands the result to the running topology.
fn reloader(
    pipeline: PathBuf,
    files: Vec<PathBuf>,
    watch: bool,
    telemetry: Telemetry,
    mut telemetry_settings: config::TelemetrySettings,
) -> Result<mpsc::Receiver<Reload>, notify::Error> {
    let (noticed_tx, mut noticed) = mpsc::channel::<Instant>(8);
    let (files_tx, files_rx) = tokio::sync::watch::channel(files);
    if watch {
        crate::watch::spawn(files_rx, noticed_tx.clone())?;
        tracing::info!(file = %pipeline.display(), "watching the pipeline file for changes");
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                let noticed_tx = noticed_tx.clone();
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        if noticed_tx.send(Instant::now()).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP"),
        }
    }
    drop(noticed_tx);
    let (reloads_tx, reloads) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut also_changed = Vec::new();
        while let Some(at) = noticed.recv().await {
            // Several notices while a reload runs make one reload.
            while noticed.try_recv().is_ok() {}
            let loaded = config::load_pipeline(&pipeline)
                .and_then(|p| Ok((Graph::build(p.declarations)?, p.telemetry)));
            let graph = match loaded {
                Ok((graph, settings)) => {
                    let files = watched_files(&pipeline, &graph);
                    if let Some(missing) = files.iter().find(|f| !f.exists()) {
                        // A referenced file being replaced: building with it
                        // now would fail, so wait until it is written back.
                        tracing::warn!(
                            file = %missing.display(),
                            "a file the pipeline reads is gone; the running pipeline goes on \
                             until it is back",
                        );
                        let _ = files_tx.send(files);
                        continue;
                    }
                    let _ = files_tx.send(files);
                    for warning in &graph.warnings {
                        tracing::warn!(warning = %warning, "pipeline file warning");
                    }
                    if crate::otel::retune(&telemetry, &telemetry_settings, &settings) {
                        also_changed.push("telemetry".to_owned());
                    }
                    telemetry_settings = settings;
                    Ok(graph)
                }
                Err(_) if !pipeline.exists() => {
                    // Deleted to be written again, or moved away: nothing to apply yet.
                    tracing::warn!(
                        file = %pipeline.display(),
                        "pipeline file is gone; the running pipeline goes on until it is back",
                    );
                    continue;
                }
                Err(diagnostics) => {
                    let found: Vec<String> = diagnostics.0.iter().map(|d| d.to_string()).collect();
                    Err(found.join("; "))
                }
            };
            let also_changed = std::mem::take(&mut also_changed);
            let reload = Reload { graph, also_changed, noticed: at };
            if reloads_tx.send(reload).await.is_err() {
                return;
            }
        }
    });
    Ok(reloads)
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
