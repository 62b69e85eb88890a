//! Progress of a run: a bar on a terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Time between two progress log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    component: String,
    bar: Option<ProgressBar>,
    /// Fixes the run will send, when known.
    total: Option<u64>,
    sent: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    pub fn new(component: &str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| make_bar(component, total));
        let now = Instant::now();
        Progress {
            component: component.to_owned(),
            bar,
            total,
            sent: 0,
            started: now,
            last_log: now,
        }
    }

    pub fn advance(&mut self, fixes: u64) {
        self.sent += fixes;
        if let Some(bar) = &self.bar {
            bar.inc(fixes);
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            self.log();
        }
    }

    /// Clears the bar and logs the totals.
    pub fn finish(&mut self, outcome: &'static str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        tracing::info!(
            component = %self.component,
            fixes_sent = self.sent,
            elapsed_ms,
            outcome,
            "obu_sim finished"
        );
    }

    fn log(&self) {
        let component = &self.component;
        let share = |total: u64| (self.sent as f64 * 100.0 / total as f64).round();
        let percent = self.total.filter(|&t| t > 0).map(share);
        tracing::info!(%component, fixes_sent = self.sent, percent, "obu_sim progress");
    }
}

fn make_bar(component: &str, total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} fixes \
             ({per_sec}, eta {eta})",
        ),
        None => (ProgressBar::new_spinner(), "{prefix} {spinner} {human_pos} fixes ({per_sec})"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_prefix(component.to_owned());
    bar
}
