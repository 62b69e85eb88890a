//! Consumer and producer runners in the background: starting, restarting,
//! stopping, and waiting (bounded) on their logs and `/metrics`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Topic;
use crate::support::{self, Background};

/// A runner with a gateway, its port and its pipeline file.
pub struct Gatewayed {
    pub runner: Background,
    pub port: u16,
    pub pipeline: std::path::PathBuf,
    pub stem: String,
}

impl Gatewayed {
    /// Writes `render(gateway_port)` to `dir/<stem>.toml` and starts it until `/health` answers.
    pub fn start(dir: &Path, stem: &str, render: impl Fn(u16) -> String) -> Gatewayed {
        let (runner, ports, pipeline) =
            support::start_pipeline(dir, stem, 1, |p| render(p[0]), |p| p[0], &[]);
        Gatewayed { runner, port: ports[0], pipeline, stem: stem.to_owned() }
    }

    /// Starts the same pipeline file again after the runner ended or was killed.
    pub fn restart(&mut self, dir: &Path) {
        self.runner.kill();
        self.runner = Background::spawn(&self.pipeline, &[], dir, &self.stem);
        let base = self.base();
        if support::wait_for_health(&mut self.runner, &base).is_none() {
            panic!(
                "restarted {} ended before /health answered:\n{}",
                self.stem,
                self.runner.stderr()
            );
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `/metrics` page, or `None` while the gateway does not answer.
    pub fn metrics(&self) -> Option<String> {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client builds");
        let response = client.get(format!("{}/metrics", self.base())).send().ok()?;
        response.status().is_success().then(|| response.text().ok()).flatten()
    }

    /// A metric summed over the samples carrying `labels` (0 while unanswered).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().map_or(0.0, |page| support::sample_sum(&page, name, labels))
    }

    /// Fixes the distance stage received in this run.
    pub fn distance_received(&self) -> f64 {
        self.metric("toll_component_received_events_total", &[("component", "distance")])
    }

    /// Waits (bounded) until the distance stage received `count` fixes in this run.
    pub fn wait_distance_received(&mut self, count: f64, within: Duration) {
        let deadline = Instant::now() + within;
        let mut seen = 0.0;
        while Instant::now() < deadline {
            if let Some(status) = self.runner.exited() {
                panic!(
                    "{} ended ({status}) at {seen} of {count} fixes:\n{}",
                    self.stem,
                    self.runner.stderr()
                );
            }
            seen = self.distance_received();
            if seen >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{}: distance received {seen} of {count} fixes within {within:?}; stderr:\n{}",
            self.stem,
            tail(&self.runner.stderr())
        );
    }

    /// SIGTERM and a bounded wait; fails unless the runner ends successfully.
    pub fn stop(&mut self) {
        match self.runner.terminate(Duration::from_secs(40)) {
            Some(status) if status.success() => {}
            other => panic!(
                "{} did not stop cleanly ({other:?}):\n{}",
                self.stem,
                tail(&self.runner.stderr())
            ),
        }
    }
}

/// The last 40 lines of a log, for failure messages.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits (bounded) until the distance stage of `consumer` received `fixes`,
/// stops it with SIGTERM, and checks that the group then committed the whole topic.
pub fn drain(consumer: &mut Gatewayed, topic: &Topic, fixes: i64, within: Duration) {
    consumer.wait_distance_received(fixes as f64, within);
    consumer.stop();
    let left = topic.uncommitted();
    assert_eq!(left, 0, "{}: {left} messages left uncommitted after a clean stop", consumer.stem);
}

/// `text` without terminal colour sequences (the runner's log colours fields).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The partitions a consumer runner holds according to its last rebalance
/// log line: empty before the first assignment and after a revocation.
pub fn assignment(stderr: &str) -> Vec<i32> {
    let text = strip_ansi(stderr);
    let last = text.lines().rev().find(|line| {
        line.contains("kafka partitions assigned") || line.contains("kafka partitions revoked")
    });
    let Some(line) = last.filter(|line| line.contains("assigned")) else { return Vec::new() };
    let Some(list) = line.split("partitions=[").nth(1).and_then(|rest| rest.split(']').next())
    else {
        return Vec::new();
    };
    list.split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

/// Waits (bounded) until every runner of `consumers` holds partitions and
/// together they hold all `partitions` of the topic.
pub fn wait_assigned(consumers: &mut [&mut Gatewayed], partitions: i32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let held: Vec<Vec<i32>> =
            consumers.iter().map(|c| assignment(&c.runner.stderr())).collect();
        let mut all: Vec<i32> = held.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        if held.iter().all(|h| !h.is_empty()) && all.len() == partitions as usize {
            return;
        }
        for consumer in consumers.iter_mut() {
            if let Some(status) = consumer.runner.exited() {
                panic!("{} ended ({status}):\n{}", consumer.stem, tail(&consumer.runner.stderr()));
            }
        }
        assert!(Instant::now() < deadline, "partitions not assigned within {within:?}: {held:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the distance stage of `consumer` has received at
/// least `at_least` fixes and then nothing more for `quiet`: the topic is
/// read to its end once its producer has finished.
pub fn wait_quiet(
    consumer: &mut Gatewayed,
    at_least: f64,
    quiet: Duration,
    within: Duration,
) -> f64 {
    let deadline = Instant::now() + within;
    let (mut last, mut since) = (-1.0, Instant::now());
    while Instant::now() < deadline {
        if let Some(status) = consumer.runner.exited() {
            panic!("{} ended ({status}):\n{}", consumer.stem, tail(&consumer.runner.stderr()));
        }
        let now = consumer.distance_received();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now >= at_least && since.elapsed() >= quiet {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{}: received {last} (at least {at_least} expected), not quiet within {within:?}",
        consumer.stem
    );
}

/// Waits (bounded) for a runner that ends by itself; fails unless it succeeded.
pub fn wait_success(runner: &mut Background, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = runner.exited() {
            assert!(status.success(), "{what} failed ({status}):\n{}", tail(&runner.stderr()));
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not finish within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
