//! Shared setup of the gateway tests: an in-memory invoice book (a test
//! double of the aggregate's book) and a gateway running on 127.0.0.1:0.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stages::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Input, Resources, RunResult,
    Shutdown, Sink,
};
use stages::event::Batch;
use stages::invoice::SharedBook;
use stages::registry::Validate;
use stages::sinks::gateway::GatewayConfig;
use stages::telemetry::Telemetry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[path = "../common/book.rs"]
mod book;
// Each test file uses a different part of the shared book.
#[allow(unused_imports)]
pub use book::{invoice, MemoryBook, CURRENT_PERIOD};

pub const ALL_TOKEN: &str = "tok-all-4f9c2a7e61d0";
pub const SCOPED_TOKEN: &str = "tok-scoped-b81e05c3d7";

/// A tokens file with a comment, blank lines, a bare and a scoped token.
pub fn tokens_text() -> String {
    format!("# gateway tokens\n\n{ALL_TOKEN}\n   \n# fleet A only\n{SCOPED_TOKEN} obu-1 obu-2\n")
}

pub fn write_tokens(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("gateway-tokens");
    std::fs::write(&path, text).expect("write tokens file");
    path
}

/// A gateway config on port 0 reading tokens from `tokens_file`.
pub fn config(tokens_file: &Path) -> GatewayConfig {
    let text = format!("listen = \"127.0.0.1:0\"\ntokens_file = {:?}\n", tokens_file);
    parse(&text)
}

pub fn parse(text: &str) -> GatewayConfig {
    let config: GatewayConfig = toml::from_str(text).expect("gateway config parses");
    config.validate().expect("gateway config is valid");
    config
}

/// Builds `config` as component `gateway` whose input `aggregate` publishes `book`.
pub fn build(config: &GatewayConfig, book: Option<MemoryBook>) -> Result<Component, BuildError> {
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();
    if let Some(book) = book {
        resources.publish("aggregate", Arc::new(SharedBook(Arc::new(book))));
    }
    let mut cx = BuildContext {
        name: "gateway",
        inputs: vec!["aggregate".to_owned()],
        telemetry: &telemetry,
        resources: &mut resources,
    };
    config.build(&mut cx)
}

/// A gateway serving on a real socket.
pub struct Running {
    pub base: String,
    pub telemetry: Telemetry,
    pub input: Option<mpsc::Sender<Batch>>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<RunResult>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests shutdown and waits for the sink to end.
    pub async fn stop(self) -> RunResult {
        drop(self.input);
        let _ = self.stop.send(true);
        self.task.await.expect("gateway task does not panic")
    }
}

/// Starts a gateway with the standard tokens file over `book`.
pub async fn start(dir: &Path, book: MemoryBook) -> Running {
    let tokens = write_tokens(dir, &tokens_text());
    start_with(&config(&tokens), book)
}

pub fn start_with(config: &GatewayConfig, book: MemoryBook) -> Running {
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();
    resources.publish("aggregate", Arc::new(SharedBook(Arc::new(book))));
    let mut cx = BuildContext {
        name: "gateway",
        inputs: vec!["aggregate".to_owned()],
        telemetry: &telemetry,
        resources: &mut resources,
    };
    let gateway = config.bind(&mut cx).expect("gateway builds");
    let base = format!("http://{}", gateway.local_addr());

    let (tx, rx) = mpsc::channel(4);
    let metrics = telemetry.component("gateway", "sink", "gateway");
    let input = Input::new(rx, Some(metrics.clone()));
    let (stop, shutdown) = Shutdown::new();
    let cx = Context { name: Arc::from("gateway"), metrics, shutdown };
    let task = tokio::spawn(Box::new(gateway).run(input, cx));
    Running { base, telemetry, input: Some(tx), stop, task }
}
