//! Noticing that the pipeline file, or a file it references, has changed.
//!
//! The watcher follows the directories that hold the files rather than the
//! files themselves: an editor that saves by writing a new file and renaming
//! it over the old one, or by deleting and recreating it, replaces the inode
//! a file watch would follow, but the directory sees every step. Events for
//! other files in those directories are ignored. Bursts of events (a save is
//! often several) are debounced into one reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

/// Quiet time after the last event before a reload is asked for.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `files` (which the caller may change) and sends the time a change
/// was first noticed, once per burst of events.
pub fn spawn(
    mut files: watch::Receiver<Vec<PathBuf>>,
    changed: mpsc::Sender<Instant>,
) -> Result<(), notify::Error> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = events_tx.send(event);
    })?;
    let mut watched = Watched::default();
    watched.update(&mut watcher, &files.borrow_and_update());
    tokio::spawn(async move {
        let mut first_seen: Option<Instant> = None;
        loop {
            let quiet = async {
                match first_seen {
                    Some(_) => tokio::time::sleep(DEBOUNCE).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(Ok(event)) => {
                        // Reading a file (the reload itself does) is no change.
                        let writes = !matches!(event.kind, EventKind::Access(_) | EventKind::Other);
                        if writes && event.paths.iter().any(|p| watched.files.contains(p)) {
                            first_seen.get_or_insert_with(Instant::now);
                        }
                    }
                    Some(Err(error)) => tracing::warn!(%error, "file watch error"),
                    None => return,
                },
                () = quiet => {
                    if let Some(noticed) = first_seen.take() {
                        if changed.send(noticed).await.is_err() {
                            return;
                        }
                    }
                }
                updated = files.changed() => {
                    if updated.is_err() {
                        return;
                    }
                    watched.update(&mut watcher, &files.borrow_and_update());
                }
            }
        }
    });
    Ok(())
}

/// The files of interest and the directories watched for them.
#[derive(Default)]
struct Watched {
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl Watched {
    fn update(&mut self, watcher: &mut notify::RecommendedWatcher, files: &[PathBuf]) {
        self.files = files.iter().map(|f| absolute(f)).collect();
        let dirs: HashSet<PathBuf> =
            self.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        for gone in self.dirs.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        for dir in dirs.difference(&self.dirs) {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                // A referenced file in a directory that does not exist yet is
                // not watched; the build reports the missing file.
                tracing::warn!(directory = %dir.display(), %error, "cannot watch for changes");
            }
        }
        self.dirs = dirs;
    }
}

/// The path made absolute without resolving links, as watch events name it.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
