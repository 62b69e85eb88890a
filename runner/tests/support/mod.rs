//! Helpers shared by the runner's end-to-end tests: paths, running the real
//! binary, and reading what it billed from its store.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root; pipeline files name paths relative to it.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("runner/ has a parent").to_owned()
}

/// The folder of recorded GPS traces kept beside the repository.
pub fn shared_data() -> PathBuf {
    match std::env::var_os("TOLL_SHARED_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("../shared/data"),
    }
}

/// `runner` started in the repository root with `args` and extra environment.
pub fn runner(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
    command.current_dir(repo_root()).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs a pipeline to completion and fails the test if the runner failed.
pub fn run_pipeline(pipeline: &str, env: &[(&str, String)]) -> Output {
    let output = runner(&["--pipeline", pipeline], env).output().expect("runner starts");
    assert!(
        output.status.success(),
        "runner failed on {pipeline}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A store URL for a fresh database in `dir`.
pub fn store_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

/// Billed millimetres per OBU and period, read from the store.
pub fn totals(db: &Path) -> BTreeMap<(String, String), i64> {
    let conn = rusqlite::Connection::open(db).expect("store opens");
    let mut stmt = conn
        .prepare("SELECT obu_id, period, SUM(distance_mm) FROM totals GROUP BY obu_id, period")
        .expect("query prepares");
    let rows = stmt
        .query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))
        .expect("query runs");
    rows.collect::<Result<_, _>>().expect("rows read")
}

/// Billed metres per OBU over every period.
pub fn billed_m(db: &Path) -> BTreeMap<String, f64> {
    let mut per_obu = BTreeMap::new();
    for ((obu, _), mm) in totals(db) {
        *per_obu.entry(obu).or_insert(0.0) += mm as f64 / 1000.0;
    }
    per_obu
}

/// The `q`-quantile of `values` by linear interpolation between ranks.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}
