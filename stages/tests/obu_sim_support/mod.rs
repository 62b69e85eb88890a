//! Shared helpers of the `obu_sim` integration tests: build a source from a
//! TOML declaration, run it to its end and collect what it sent.

#![allow(dead_code)] // Each test file uses a different subset.

use std::collections::BTreeMap;

use stages::component::{
    BuildContext, BuildError, Component, Context, Output, Resources, Shutdown, Source,
};
use stages::event::{Events, Fix};
use stages::sources::obu_sim::TYPE;
use stages::telemetry::Telemetry;
use tokio::sync::mpsc;

/// What a source run produced.
pub struct Run {
    pub fixes: Vec<Fix>,
    pub batch_sizes: Vec<usize>,
    pub telemetry: Telemetry,
}

impl Run {
    pub fn rejected(&self, reason: &str) -> u64 {
        self.telemetry.counter_sum("toll_component_rejected_events_total", &[("reason", reason)])
    }

    /// Fixes grouped by OBU id, in the order they were sent.
    pub fn by_obu(&self) -> BTreeMap<String, Vec<Fix>> {
        let mut map: BTreeMap<String, Vec<Fix>> = BTreeMap::new();
        for fix in &self.fixes {
            map.entry(fix.obu_id.to_string()).or_default().push(fix.clone());
        }
        map
    }
}

/// Parses and builds an `obu_sim` declaration (the keys after `type`).
pub fn build(declaration: &str, telemetry: &Telemetry) -> Result<Box<dyn Source>, BuildError> {
    let value: toml::Value = toml::from_str(declaration).expect("test declaration is valid toml");
    let config = (TYPE.parse)(value).map_err(|e| BuildError::new(format!("{e:?}")))?;
    let mut resources = Resources::default();
    let mut cx =
        BuildContext { name: "sim", inputs: Vec::new(), telemetry, resources: &mut resources };
    match config.build(&mut cx)? {
        Component::Source(source) => Ok(source),
        _ => panic!("obu_sim must build a source"),
    }
}

/// Builds the declaration and runs it to its end, collecting every fix.
pub async fn run(declaration: &str) -> Run {
    let telemetry = Telemetry::new();
    let source = build(declaration, &telemetry).expect("declaration builds");
    let (tx, mut rx) = mpsc::channel(16);
    let metrics = telemetry.component("sim", "source", "obu_sim");
    let output = Output::new(vec![tx], Some(metrics.clone()));
    let cx = Context { name: "sim".into(), metrics, shutdown: Shutdown::never() };
    let task = tokio::spawn(source.run(output, cx));

    let (mut fixes, mut batch_sizes) = (Vec::new(), Vec::new());
    while let Some(batch) = rx.recv().await {
        batch_sizes.push(batch.len());
        match batch.events {
            Events::Fixes(mut v) => fixes.append(&mut v),
            other => panic!("obu_sim sent {:?} events", other.kind()),
        }
    }
    task.await.expect("source task").expect("source ends cleanly");
    Run { fixes, batch_sizes, telemetry }
}

/// Great-circle distance in metres on a sphere of the mean Earth radius.
pub fn haversine_m(a: &Fix, b: &Fix) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}
