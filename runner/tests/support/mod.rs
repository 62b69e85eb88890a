//! Helpers shared by the runner's end-to-end tests: paths, running the real
//! binary, and reading what it billed from its store.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

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

/// How long a started runner may take before `/health` answers.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A port on 127.0.0.1 that was free a moment ago: bound to port 0, then
/// released. Another process may take it before the runner binds it, which
/// [`start_pipeline`] answers by trying again with fresh ports.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port exists");
    listener.local_addr().expect("bound socket has an address").port()
}

/// The runner started in the background with its output in files; it is
/// killed when dropped, so a failing test never leaves it running.
pub struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    /// Starts `runner --pipeline PIPELINE` with stdout and stderr written to
    /// `logs/<stem>.stdout` and `logs/<stem>.stderr` (appended to, so a
    /// restart keeps the earlier output).
    pub fn spawn(pipeline: &Path, env: &[(&str, String)], logs: &Path, stem: &str) -> Background {
        let stdout = logs.join(format!("{stem}.stdout"));
        let stderr = logs.join(format!("{stem}.stderr"));
        let open = |path: &Path| {
            std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log opens")
        };
        let pipeline = pipeline.to_str().expect("pipeline path is utf-8");
        let child = runner(&["--pipeline", pipeline], env)
            .stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr))
            .spawn()
            .expect("runner starts");
        Background { child, stdout, stderr }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status, if the runner has already ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("runner status is readable")
    }

    /// Kills the runner with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Asks the runner to stop with SIGTERM and waits (bounded) for it to
    /// end; kills it when it does not. Returns the status if it ended by itself.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if sent.is_ok_and(|s| s.success()) {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if let Some(status) = self.exited() {
                    return Some(status);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
        None
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking HTTP client for the gateway on loopback (no proxy, bounded waits).
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client builds")
}

/// `GET url` with an optional bearer token: status and body.
pub fn get(client: &reqwest::blocking::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_else(|e| panic!("GET {url} body unreadable: {e}")))
}

/// Polls `/health` until it answers 200 with `status == "ok"` and returns
/// its body; `None` if the runner ended first. Fails after [`START_TIMEOUT`].
pub fn wait_for_health(runner: &mut Background, base: &str) -> Option<serde_json::Value> {
    wait_for(runner, base, START_TIMEOUT, |_| true)
}

/// Polls `/health` until `component` reports `state`, for at most `within`.
pub fn wait_for_state(
    runner: &mut Background,
    base: &str,
    component: &str,
    state: &str,
    within: Duration,
) -> serde_json::Value {
    let reached = |health: &serde_json::Value| health["components"][component] == state;
    match wait_for(runner, base, within, reached) {
        Some(health) => health,
        None => panic!("runner ended before {component} was {state}:\n{}", runner.stderr()),
    }
}

fn wait_for(
    runner: &mut Background,
    base: &str,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client builds");
    let deadline = Instant::now() + within;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if runner.exited().is_some() {
            return None;
        }
        match client.get(format!("{base}/health")).send() {
            Ok(response) if response.status().is_success() => {
                let health: serde_json::Value = response.json().expect("/health answers json");
                if health["status"] == "ok" && done(&health) {
                    return Some(health);
                }
                last = health.to_string();
            }
            Ok(response) => last = format!("status {}", response.status()),
            Err(error) => last = error.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/health not as expected within {within:?} (last: {last}); stderr:\n{}", runner.stderr())
}

/// Writes the pipeline `render(ports)` to `dir/<stem>.toml` with `ports`
/// fresh ports and starts it, until `/health` answers on `gateway(ports)`.
/// A start that fails because a port was taken meanwhile is retried with
/// other ports. Returns the runner, the ports and the pipeline file.
pub fn start_pipeline(
    dir: &Path,
    stem: &str,
    ports: usize,
    render: impl Fn(&[u16]) -> String,
    gateway: impl Fn(&[u16]) -> u16,
    env: &[(&str, String)],
) -> (Background, Vec<u16>, PathBuf) {
    let pipeline = dir.join(format!("{stem}.toml"));
    for _attempt in 0..5 {
        let chosen: Vec<u16> = (0..ports).map(|_| free_port()).collect();
        std::fs::write(&pipeline, render(&chosen)).expect("pipeline file is written");
        let mut runner = Background::spawn(&pipeline, env, dir, stem);
        let base = format!("http://127.0.0.1:{}", gateway(&chosen));
        if wait_for_health(&mut runner, &base).is_some() {
            return (runner, chosen, pipeline);
        }
        let stderr = runner.stderr();
        if !stderr.contains("cannot listen on") {
            panic!("runner ended before /health answered:\n{stderr}");
        }
    }
    panic!("no free ports for {stem} after five attempts");
}

/// Every sample of metric `name` in a Prometheus text page: labels and value.
pub fn samples(page: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut found = Vec::new();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let (metric, labels) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("label is key=value");
                (key.to_owned(), value.trim_matches('"').to_owned())
            })
            .collect();
        found.push((labels, value.parse().expect("sample value is a number")));
    }
    found
}

/// The sum of metric `name` over every sample whose labels include `with`.
pub fn sample_sum(page: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    samples(page, name)
        .into_iter()
        .filter(|(labels, _)| with.iter().all(|(k, v)| labels.get(*k).is_some_and(|l| l == v)))
        .map(|(_, value)| value)
        .sum()
}
