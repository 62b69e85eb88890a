//! The console sink: writes every event it receives as one JSON line to
//! standard output or standard error, for debugging and demos.
//!
//! Each line is the event's fields plus its `kind`, for example
//! `{"kind":"total","obu_id":"obu-1","period":"2024-05",...}`. A batch is
//! serialised into one buffer and written with one locked write, so lines of
//! a batch are never interleaved with other output.

use std::io::Write;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, ComponentError, Context, Input, Kind,
    RunResult, Signature, Sink,
};
use crate::event::{EventKind, Events};
use crate::registry::{self, ComponentType, Validate};

pub const TYPE: ComponentType = ComponentType {
    name: "console",
    kind: Kind::Sink,
    about: "writes every event as one JSON line to stdout or stderr",
    parse: registry::parse::<ConsoleConfig>,
};

/// Declaration of a console sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The stream the lines go to: `"stdout"` (the default) or `"stderr"`.
    #[serde(default)]
    pub target: Target,
}

/// A standard stream of the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Stdout,
    Stderr,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Stdout => "stdout",
            Target::Stderr => "stderr",
        }
    }
}

impl Validate for ConsoleConfig {}

impl ComponentConfig for ConsoleConfig {
    fn signature(&self) -> Signature {
        Signature::sink(vec![EventKind::Fix, EventKind::Segment, EventKind::Total])
    }

    fn build(&self, _cx: &mut BuildContext) -> Result<Component, BuildError> {
        Ok(Component::Sink(Box::new(Console { target: self.target })))
    }
}

/// A built console sink.
#[derive(Debug)]
pub struct Console {
    target: Target,
}

impl Sink for Console {
    fn run(self: Box<Self>, input: Input, cx: Context) -> BoxFuture<'static, RunResult> {
        Box::pin(self.write_all(input, cx))
    }
}

impl Console {
    async fn write_all(self, mut input: Input, cx: Context) -> RunResult {
        let target = self.target;
        while let Some(batch) = input.recv().await {
            // Writing to a terminal or pipe blocks when the reader is slow,
            // so it happens off the async workers.
            let written = tokio::task::spawn_blocking(move || {
                let result = write_batch(target, &batch.events);
                if result.is_err() {
                    batch.acks.fail();
                }
                result
            })
            .await;

            let error = match written {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => ComponentError::with(
                    format!("console sink cannot write to {}", target.as_str()),
                    error,
                ),
                Err(join) => ComponentError::with("console sink writer task failed", join),
            };
            cx.metrics.errors.add(1);
            return Err(error);
        }
        Ok(())
    }
}

/// Serialises a batch, then writes it to the stream in one locked write.
fn write_batch(target: Target, events: &Events) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(events.len() * 160);
    write_lines(events, &mut buffer)?;
    match target {
        Target::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(&buffer)?;
            out.flush()
        }
        Target::Stderr => {
            let mut out = std::io::stderr().lock();
            out.write_all(&buffer)?;
            out.flush()
        }
    }
}

/// One output line: the event's own fields, flattened, after its kind.
#[derive(Serialize)]
struct Line<'a, T> {
    kind: &'static str,
    #[serde(flatten)]
    event: &'a T,
}

/// Appends one JSON line per event of `events` to `out`.
pub fn write_lines(events: &Events, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match events {
        Events::Fixes(fixes) => lines_of(EventKind::Fix, fixes, out),
        Events::Segments(segments) => lines_of(EventKind::Segment, segments, out),
        Events::Totals(totals) => lines_of(EventKind::Total, totals, out),
    }
}

fn lines_of<T: Serialize>(
    kind: EventKind,
    events: &[T],
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    for event in events {
        serde_json::to_writer(&mut *out, &Line { kind: kind.as_str(), event })?;
        out.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{Ack, AckSet, AckStatus};
    use crate::event::{Batch, EventContext, Fix, Total};

    fn parse_lines(out: &[u8]) -> Vec<serde_json::Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'), "every line ends with a newline");
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    #[test]
    fn each_total_becomes_one_json_line_with_its_kind() {
        let totals = Events::Totals(vec![
            Total {
                obu_id: "obu-1".into(),
                period: "2024-05".into(),
                distance_m: 1500.0,
                amount: 0.3,
                currency: "EUR".into(),
            },
            Total {
                obu_id: "obu-2".into(),
                period: "2024-05".into(),
                distance_m: 20.5,
                amount: 0.0,
                currency: "EUR".into(),
            },
        ]);
        let mut out = Vec::new();

        write_lines(&totals, &mut out).unwrap();

        let lines = parse_lines(&out);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({
                "kind": "total", "obu_id": "obu-1", "period": "2024-05",
                "distance_m": 1500.0, "amount": 0.3, "currency": "EUR"
            })
        );
        assert_eq!(lines[1]["obu_id"], "obu-2");
    }

    #[test]
    fn fix_line_keeps_its_context_and_omits_absent_trace() {
        let fixes = Events::Fixes(vec![Fix {
            obu_id: "obu-7".into(),
            ts_ms: 1_700_000_000_000,
            lat: 50.5,
            lon: 4.25,
            ctx: EventContext { received_ms: 1_700_000_000_123, trace: None },
        }]);
        let mut out = Vec::new();

        write_lines(&fixes, &mut out).unwrap();

        let lines = parse_lines(&out);
        assert_eq!(
            lines,
            vec![serde_json::json!({
                "kind": "fix", "obu_id": "obu-7", "ts_ms": 1_700_000_000_000_i64,
                "lat": 50.5, "lon": 4.25, "ctx": {"received_ms": 1_700_000_000_123_i64}
            })]
        );
    }

    #[test]
    fn empty_batch_writes_nothing() {
        let mut out = Vec::new();
        write_lines(&Events::Segments(Vec::new()), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn sink_acknowledges_written_batches_and_ends_when_input_closes() {
        let telemetry = crate::telemetry::Telemetry::new();
        let metrics = telemetry.component("console", "sink", "console");
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let input = Input::new(rx, Some(metrics.clone()));
        let cx = Context {
            name: "console".into(),
            metrics: metrics.clone(),
            shutdown: crate::component::Shutdown::never(),
        };
        let (ack, delivered) = Ack::channel();
        let batch = Batch::new(Events::Segments(Vec::new()), AckSet::one(ack));
        let sink = Box::new(Console { target: Target::Stderr });

        let running = tokio::spawn(sink.run(input, cx));
        tx.send(batch).await.unwrap();
        drop(tx);

        assert_eq!(delivered.await.unwrap(), AckStatus::Delivered);
        running.await.unwrap().unwrap();
        assert_eq!(metrics.errors.get(), 0);
    }

    #[test]
    fn target_defaults_to_stdout_and_refuses_unknown_streams() {
        let config: ConsoleConfig = toml::from_str("").unwrap();
        assert_eq!(config.target, Target::Stdout);
        let config: ConsoleConfig = toml::from_str("target = \"stderr\"").unwrap();
        assert_eq!(config.target, Target::Stderr);
        assert!(toml::from_str::<ConsoleConfig>("target = \"file\"").is_err());
        assert!(toml::from_str::<ConsoleConfig>("colour = true").is_err());
    }
}
