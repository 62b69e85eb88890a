//! One service: a runner process with its own pipeline file, started until
//! it is ready, killed, restarted on the same file, stopped; and the
//! component summaries it logs when it ends.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kafka_common;
use crate::support::{self, Background};

/// How a started service shows it is ready.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    /// Its listener on this port takes connections (aggregator, receiver).
    Listening(u16),
    /// Its gateway answers `/health` on this port.
    Health(u16),
    /// It holds every one of this many Kafka partitions (distance).
    Assigned(i32),
    /// Nothing to wait for (the OBU service sends from the start).
    Started,
}

/// A runner process; killed when dropped, so no test leaves one behind.
pub struct Service {
    pub runner: Background,
    pub pipeline: PathBuf,
    pub stem: String,
    ready: Ready,
    dir: PathBuf,
}

impl Service {
    /// Writes `text` to `dir/<stem>.toml`, starts it and waits until it is ready.
    pub fn start(dir: &Path, stem: &str, text: &str, ready: Ready) -> Service {
        let pipeline = dir.join(format!("{stem}.toml"));
        std::fs::write(&pipeline, text).expect("pipeline file is written");
        let runner = Background::spawn(&pipeline, &[], dir, stem);
        let mut service =
            Service { runner, pipeline, stem: stem.to_owned(), ready, dir: dir.to_owned() };
        service.wait_ready();
        service
    }

    /// Starts the service listening on a fresh port rendered into its file by
    /// `render`; a port taken meanwhile by another process is replaced.
    pub fn start_listening(
        dir: &Path,
        stem: &str,
        render: impl Fn(u16) -> String,
        ready: impl Fn(u16) -> Ready,
    ) -> (Service, u16) {
        for _attempt in 0..5 {
            let port = support::free_port();
            let pipeline = dir.join(format!("{stem}.toml"));
            std::fs::write(&pipeline, render(port)).expect("pipeline file is written");
            let runner = Background::spawn(&pipeline, &[], dir, stem);
            let mut service = Service {
                runner,
                pipeline,
                stem: stem.to_owned(),
                ready: ready(port),
                dir: dir.to_owned(),
            };
            if service.try_ready() {
                return (service, port);
            }
            assert!(
                service.runner.stderr().contains("cannot listen on"),
                "{stem} ended before it was ready:\n{}",
                kafka_common::tail(&service.runner.stderr())
            );
        }
        panic!("no free port for {stem} after five attempts");
    }

    /// SIGKILL: the process gets no chance to flush, commit or say goodbye.
    pub fn kill(&mut self) {
        self.runner.kill();
    }

    /// Starts the same pipeline file again (same ports, same store) and waits until ready.
    pub fn restart(&mut self) {
        self.runner.kill();
        self.runner = Background::spawn(&self.pipeline, &[], &self.dir, &self.stem);
        self.wait_ready();
    }

    /// SIGTERM and a bounded wait; fails unless the service ends successfully.
    pub fn stop(&mut self) {
        match self.runner.terminate(Duration::from_secs(40)) {
            Some(status) if status.success() => {}
            other => panic!(
                "{} did not stop cleanly ({other:?}):\n{}",
                self.stem,
                kafka_common::tail(&self.runner.stderr())
            ),
        }
    }

    /// Fails the test when the service has ended.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.runner.exited() {
            let log = kafka_common::tail(&self.runner.stderr());
            panic!("{} ended ({status}):\n{log}", self.stem);
        }
    }

    /// Lines of the service's log containing `text` (colours removed).
    pub fn log_lines(&self, text: &str) -> Vec<String> {
        strip_colours(&self.runner.stderr())
            .lines()
            .filter(|line| line.contains(text))
            .map(str::to_owned)
            .collect()
    }

    /// `received` and `sent` of `component` in the summary logged at the
    /// service's last end, and the rest of that line.
    pub fn summary(&self, component: &str) -> (u64, u64, String) {
        let marker = format!("component={component} ");
        let lines = self.log_lines("component summary");
        let line = lines
            .iter()
            .rev()
            .find(|line| line.contains(&marker))
            .unwrap_or_else(|| panic!("{} logged no summary of {component}", self.stem));
        let field = |key: &str| -> u64 {
            let after = line.split(&format!(" {key}=")).nth(1).expect("summary field");
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("summary count")
        };
        (field("received"), field("sent"), line.clone())
    }

    fn wait_ready(&mut self) {
        if !self.try_ready() {
            let log = kafka_common::tail(&self.runner.stderr());
            panic!("{} ended before it was ready:\n{log}", self.stem);
        }
    }

    /// Waits (bounded) until ready; false if the process ended first.
    fn try_ready(&mut self) -> bool {
        let deadline = Instant::now() + support::START_TIMEOUT;
        loop {
            if self.runner.exited().is_some() {
                return false;
            }
            if self.is_ready() {
                return true;
            }
            assert!(Instant::now() < deadline, "{} not ready within 30 s", self.stem);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn is_ready(&mut self) -> bool {
        match self.ready {
            Ready::Listening(port) => {
                let address = SocketAddr::from(([127, 0, 0, 1], port));
                TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
            }
            Ready::Health(port) => {
                let base = format!("http://127.0.0.1:{port}");
                support::wait_for_health(&mut self.runner, &base).is_some()
            }
            Ready::Assigned(partitions) => {
                let held = kafka_common::assignment(&self.runner.stderr());
                held.len() == partitions as usize
            }
            Ready::Started => true,
        }
    }
}

/// `text` without the terminal colour sequences of the runner's log.
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // An escape runs to its first letter.
        for c in chars.by_ref() {
            if c.is_ascii_alphabetic() {
                break;
            }
        }
    }
    out
}
