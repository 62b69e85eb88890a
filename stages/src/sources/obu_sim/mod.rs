//! The `obu_sim` source: a simulated truck fleet, or the replay of a recorded file.
//!
//! Without a `replay` table it simulates `trucks` trucks (ids `obu-0001`...)
//! from a seed: plausible speeds and smooth headings inside an area, GPS
//! noise, stops, and signal gaps after which some OBUs send their backlog.
//! With one it replays a CSV, JSON or GPX file through a field mapping:
//!
//! ```toml
//! [sources.fleet]
//! type = "obu_sim"
//! speedup = 0            # as fast as possible (default for replays)
//! [sources.fleet.replay]
//! path = "points.csv"
//! format = "csv"         # csv | json (array or JSON lines) | gpx
//! obu_id_field = "id"    # or obu_id = "one-fixed-id"
//! obu_id_prefix = "hof-"
//! time_field = "time"
//! point_field = "geometry"   # WKT POINT(lon lat), or lat_field + lon_field
//! order = "time"         # file (default) | time
//! repeat_each = 1
//! ```
//!
//! Either way the source ends cleanly when its fixes run out, which closes
//! its output.

mod config;
mod emit;
mod formats;
mod gpx;
mod progress;
mod replay;
mod synthetic;
mod time;
mod truck;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use config::{BoundingBox, ObuSimConfig, ReplayConfig, ReplayFormat, ReplayOrder};
pub use time::{parse_timestamp, TimeError};

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Kind, Output, RunResult,
    Signature, Source,
};
use crate::event::{EventKind, Millis};
use crate::registry::{self, ComponentType, FieldError};
use emit::{Feed, Outcome};
use formats::{LoadError, Reject};
use progress::Progress;
use replay::ReplayFeed;
use synthetic::Fleet;

pub const TYPE: ComponentType = ComponentType {
    name: "obu_sim",
    kind: Kind::Source,
    about: "simulates a fleet of trucks, or replays recorded fixes from CSV, JSON or GPX",
    parse: registry::parse::<ObuSimConfig>,
};

/// Unparseable rows logged one by one; the rest are only counted.
const LOGGED_REJECTS: usize = 10;

impl registry::Validate for ObuSimConfig {
    fn validate(&self) -> Result<(), FieldError> {
        self.check()
    }
}

impl ComponentConfig for ObuSimConfig {
    fn signature(&self) -> Signature {
        Signature::source(EventKind::Fix)
    }

    fn build(&self, _cx: &mut BuildContext) -> Result<Component, BuildError> {
        let mode = match &self.replay {
            None => Mode::Synthetic,
            Some(replay) => {
                let loaded = formats::load(replay).map_err(|e| match e {
                    LoadError::Read { path, source } => {
                        BuildError::with(format!("reading replay file {path}"), source)
                    }
                    other => BuildError::new(other.to_string()),
                })?;
                let path = replay.path.display().to_string().into();
                let feed = ReplayFeed::new(replay, loaded.fixes);
                Mode::Replay { feed, rejects: loaded.rejects, path }
            }
        };
        Ok(Component::Source(Box::new(ObuSim { config: self.clone(), mode })))
    }

    fn referenced_files(&self) -> Vec<PathBuf> {
        self.replay.iter().map(|r| r.path.clone()).collect()
    }
}

enum Mode {
    Synthetic,
    Replay { feed: ReplayFeed, rejects: Vec<Reject>, path: Arc<str> },
}

/// A built `obu_sim` source.
pub struct ObuSim {
    config: ObuSimConfig,
    mode: Mode,
}

impl Source for ObuSim {
    fn run(self: Box<Self>, output: Output, cx: Context) -> BoxFuture<'static, RunResult> {
        Box::pin(self.emit(output, cx))
    }
}

impl ObuSim {
    async fn emit(self, output: Output, mut cx: Context) -> RunResult {
        let (speedup, batch_size) = (self.config.speedup(), self.config.batch_size);
        let name = cx.name.clone();
        let (mut feed, total): (Box<dyn Feed>, Option<u64>) = match self.mode {
            Mode::Synthetic => {
                let start_ms = self.config.start_ms().unwrap_or_else(now_ms);
                let fleet = Fleet::new(&self.config, start_ms);
                let trucks = self.config.trucks;
                tracing::info!(component = %name, trucks, start_ms, speedup, "obu_sim simulating");
                let total = fleet.total();
                (Box::new(fleet), total)
            }
            Mode::Replay { feed, rejects, path } => {
                report_rejects(&cx, &path, &rejects);
                let fixes = feed.total();
                let file = &path;
                tracing::info!(component = %name, %file, fixes, speedup, "obu_sim replaying");
                (Box::new(feed), Some(fixes))
            }
        };

        let mut progress = Progress::new(&name, total);
        let outcome =
            emit::run(feed.as_mut(), &output, &mut cx, speedup, batch_size, &mut progress).await;
        progress.finish(match outcome {
            Outcome::Finished => "finished",
            Outcome::Stopped => "stopped",
            Outcome::Closed => "consumers_gone",
        });
        Ok(())
    }
}

/// Counts the rows the loader skipped and logs the first few of them.
fn report_rejects(cx: &Context, path: &str, rejects: &[Reject]) {
    cx.metrics.rejected("unparseable_row").add(rejects.len() as u64);
    for reject in rejects.iter().take(LOGGED_REJECTS) {
        tracing::warn!(
            component = %cx.name,
            file = path,
            line = reject.line,
            reason = %reject.reason,
            "unparseable row skipped"
        );
    }
    if rejects.len() > LOGGED_REJECTS {
        let more = rejects.len() - LOGGED_REJECTS;
        tracing::warn!(component = %cx.name, file = path, more, "further unparseable rows skipped");
    }
}

fn now_ms() -> Millis {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map(|d| d.as_millis() as Millis).unwrap_or_default()
}
