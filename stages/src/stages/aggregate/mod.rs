//! The `aggregate` stage: distance and amount per OBU and billing period.
//!
//! Segments are grouped (every batch already waiting joins the group), summed
//! per OBU, period and price in memory, and written in one SQLite transaction
//! together with each OBU's high-water mark, the end time of the last segment
//! applied. A segment that ends at or before the mark was applied already, so
//! a redelivered segment is counted once. Acknowledgements are released only
//! after the commit.

mod book;
pub mod period;
pub mod tariff;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::ack::AckSet;
use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, ComponentError, Context, Input, Kind,
    Output, RunResult, Signature, Stage,
};
use crate::event::{Batch, EventKind, Events, ObuId, Segment, Total};
use crate::invoice::SharedBook;
use crate::otel::{Span, SpanKind, Tracer};
use crate::registry::{self, ComponentType, FieldError, Validate};
use crate::store::{BilledEnd, Durability, PeriodDelta, SqliteStore};
use crate::telemetry::{ComponentMetrics, Counter};
use period::PeriodClock;
use tariff::Tariff;

pub use book::{invoice_from, StoreBook};

pub const TYPE: ComponentType = ComponentType {
    name: "aggregate",
    kind: Kind::Stage,
    about: "distance and amount per OBU and billing period, persisted, idempotent",
    parse: registry::parse::<AggregateConfig>,
};

/// `[stages.NAME] type = "aggregate"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Price of one kilometre, in `currency`.
    pub price_per_km: f64,
    /// ISO 4217 code shown on invoices.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Where totals are kept: `sqlite://PATH`.
    pub store: String,
    /// IANA time zone whose calendar months are the billing periods.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// `full`: every commit is on disk before it is acknowledged; `normal`:
    /// faster, and loses recent commits only if the machine (not the process) crashes.
    #[serde(default)]
    pub durability: Durability,
    /// Most segments written in one transaction.
    #[serde(default = "default_max_group_segments")]
    pub max_group_segments: usize,
}

fn default_currency() -> String {
    "EUR".to_owned()
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

fn default_max_group_segments() -> usize {
    65_536
}

impl Validate for AggregateConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if !self.price_per_km.is_finite() || self.price_per_km < 0.0 {
            return Err(FieldError::at("price_per_km", "must be a finite number, zero or more"));
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(FieldError::at("currency", "must be a three-letter ISO 4217 code"));
        }
        crate::store::sqlite_path(&self.store)
            .map_err(|e| FieldError::at("store", e.to_string()))?;
        self.tz()?;
        if self.max_group_segments == 0 {
            return Err(FieldError::at("max_group_segments", "must be at least 1"));
        }
        Ok(())
    }
}

impl AggregateConfig {
    fn tz(&self) -> Result<Tz, FieldError> {
        self.time_zone.parse().map_err(|_| {
            FieldError::at("time_zone", format!("unknown time zone `{}`", self.time_zone))
        })
    }
}

impl ComponentConfig for AggregateConfig {
    fn signature(&self) -> Signature {
        Signature::transform(EventKind::Segment, EventKind::Total)
    }

    fn may_go_unconsumed(&self) -> bool {
        true
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        let tz = self.tz().map_err(|e| BuildError::new(e.message))?;
        let path = crate::store::sqlite_path(&self.store)
            .map_err(|e| BuildError::with("bad store url", e))?;
        // A reload that changed the price (or another setting) goes on with
        // the same open store and marks; totals are kept per price, so the
        // new price applies to what is billed from now on.
        let previous = cx
            .take_over::<Kept>()
            .filter(|kept| kept.path == path && kept.durability == self.durability);
        let (store, marks, tariff) = match previous {
            Some(kept) => {
                let mut tariff = kept.tariff;
                tariff.change(chrono::Utc::now().timestamp_millis(), self.price_per_km);
                (kept.store, kept.marks, tariff)
            }
            None => {
                let store = SqliteStore::open(&path, self.durability).map_err(|e| {
                    BuildError::with(format!("cannot open store {}", path.display()), e)
                })?;
                let marks =
                    store.marks().map_err(|e| BuildError::with("cannot read the store", e))?;
                let marks = marks.into_iter().map(|(k, v)| (ObuId::from(k), v)).collect();
                (Arc::new(store), marks, Tariff::new(self.price_per_km))
            }
        };
        let book = SharedBook(Arc::new(StoreBook::new(store.clone(), tz)));
        cx.resources.publish(cx.name, Arc::new(book));
        Ok(Component::Stage(Box::new(Aggregate {
            path,
            durability: self.durability,
            store,
            clock: PeriodClock::new(tz),
            marks,
            tariff,
            currency: self.currency.clone(),
            max_group_segments: self.max_group_segments,
        })))
    }
}

struct Aggregate {
    path: std::path::PathBuf,
    durability: Durability,
    store: Arc<SqliteStore>,
    clock: PeriodClock,
    /// End time of the last segment applied, per OBU, as committed.
    marks: HashMap<ObuId, i64>,
    tariff: Tariff,
    currency: String,
    max_group_segments: usize,
}

/// What a replaced aggregate leaves its successor.
struct Kept {
    path: std::path::PathBuf,
    durability: Durability,
    store: Arc<SqliteStore>,
    marks: HashMap<ObuId, i64>,
    tariff: Tariff,
}

/// Where each OBU's newest segment of a group ends.
type Moved = ahash::HashMap<ObuId, BilledEnd>;

/// Sums of a group by OBU, period (named by its UTC start) and price (its bits).
type Sums = ahash::HashMap<(ObuId, i64, u64), Sum>;

/// Sums for one OBU and period within a group.
#[derive(Default)]
struct Sum {
    mm: i64,
    segments: i64,
    first_ms: i64,
    last_ms: i64,
}

impl Stage for Aggregate {
    fn run(
        mut self: Box<Self>,
        mut input: Input,
        output: Output,
        cx: Context,
    ) -> BoxFuture<'static, RunResult> {
        Box::pin(async move {
            let duplicates = cx.metrics.rejected("duplicate_segment");
            let billed = Billed::register(&cx.metrics, &self.currency);
            let tracer = cx.metrics.telemetry().tracer().clone();
            let active = cx.metrics.gauge("toll_active_obus");
            while let Some(first) = input.recv().await {
                let mut acks = AckSet::default();
                let mut sums = Sums::default();
                let mut moved = Moved::default();
                let mut next = Some(first);
                let mut taken = 0;
                let mut spans = Vec::new();
                while let Some(mut batch) = next.take() {
                    taken += batch.len();
                    write_spans(&tracer, &mut batch, &mut spans);
                    duplicates.add(self.sum(batch, &mut sums, &mut moved, &mut acks));
                    if taken < self.max_group_segments {
                        next = input.try_recv();
                    }
                }
                if moved.is_empty() {
                    continue;
                }
                let totals = self.commit(sums, &moved, &acks).await.inspect_err(|_| {
                    cx.metrics.errors.add(1);
                })?;
                billed.add(&totals.0, totals.1);
                active.set(self.marks.len() as i64);
                drop(spans);
                self.marks.extend(moved.into_iter().map(|(obu, end)| (obu, end.ts_ms)));
                // The acknowledgements travel on with the totals: the events
                // are persisted, and whoever reads the totals finishes them.
                if output.send(Batch::new(Events::Totals(totals.0), acks)).await.is_err() {
                    tracing::debug!("no consumer for totals");
                }
            }
            let Aggregate { path, durability, store, marks, tariff, .. } = *self;
            cx.shutdown.leave(Kept { path, durability, store, marks, tariff });
            Ok(())
        })
    }
}

/// Opens the write span of every traced segment of a batch; the spans end
/// once the group they joined is committed.
fn write_spans(tracer: &Tracer, batch: &mut Batch, spans: &mut Vec<Span>) {
    let Events::Segments(segments) = &mut batch.events else { return };
    for segment in segments {
        if let Some(mut span) =
            tracer.start(&mut segment.ctx, "aggregate.write", SpanKind::Internal)
        {
            span.set("obu.id", segment.obu_id.as_str());
            span.set("toll.segment.metres", segment.metres);
            span.set("toll.segment.to_ms", segment.to_ms);
            span.set("toll.segment.checkpoint", segment.checkpoint);
            spans.push(span);
        }
    }
}

/// What the aggregate billed: distance in millimetres and the amount in
/// millionths of its currency.
struct Billed {
    distance_mm: Counter,
    amount_micros: Counter,
}

impl Billed {
    fn register(metrics: &ComponentMetrics, currency: &str) -> Self {
        let telemetry = metrics.telemetry();
        let component = [("component", metrics.name())];
        let with_currency = [("component", metrics.name()), ("currency", currency)];
        Billed {
            distance_mm: telemetry.counter("toll_billed_distance_meters_total", &component),
            amount_micros: telemetry.counter("toll_billed_amount_total", &with_currency),
        }
    }

    fn add(&self, totals: &[Total], distance_mm: u64) {
        self.distance_mm.add(distance_mm);
        let amount: f64 = totals.iter().map(|t| t.amount).sum();
        self.amount_micros.add((amount * 1e6).round().max(0.0) as u64);
    }
}

impl Aggregate {
    /// Adds a batch's new segments to `sums`; returns the duplicates skipped.
    fn sum(
        &mut self,
        mut batch: Batch,
        sums: &mut Sums,
        moved: &mut Moved,
        acks: &mut AckSet,
    ) -> u64 {
        acks.extend(std::mem::take(&mut batch.acks));
        let Events::Segments(segments) = batch.events else {
            return 0;
        };
        let mut duplicates = 0;
        for segment in segments {
            let mark = match moved.get(&segment.obu_id) {
                Some(end) => Some(&end.ts_ms),
                None => self.marks.get(&segment.obu_id),
            };
            if mark.is_some_and(|&m| segment.to_ms <= m) {
                duplicates += 1;
                continue;
            }
            if !segment.checkpoint {
                self.add(&segment, sums);
            }
            let end = BilledEnd {
                ts_ms: segment.to_ms,
                lat: segment.to_lat,
                lon: segment.to_lon,
                chord: segment.chord,
                state: segment.state,
            };
            moved.insert(segment.obu_id, end);
        }
        duplicates
    }

    fn add(&mut self, segment: &Segment, sums: &mut Sums) {
        let mm = (segment.metres * 1000.0).round() as i64;
        let (from_ms, to_ms) = (segment.from_ms, segment.to_ms);
        let clock = &mut self.clock;
        self.tariff.split(from_ms, to_ms, mm, |from, to, price, mm| {
            clock.split(from, to, mm, |period_start_ms, part| {
                let key = (segment.obu_id.clone(), period_start_ms, price.to_bits());
                let sum = sums.entry(key).or_insert(Sum { first_ms: from_ms, ..Sum::default() });
                sum.mm += part;
                sum.segments += 1;
                sum.first_ms = sum.first_ms.min(from_ms);
                sum.last_ms = sum.last_ms.max(to_ms);
            });
        });
    }

    /// Writes a group, retrying a failed commit a few times before giving up.
    async fn commit(
        &mut self,
        sums: Sums,
        moved: &Moved,
        acks: &AckSet,
    ) -> Result<(Vec<Total>, u64), ComponentError> {
        let deltas: Vec<PeriodDelta> = sums
            .into_iter()
            .map(|((obu_id, period_start_ms, price), s)| PeriodDelta {
                obu_id: obu_id.to_string(),
                period: self.clock.period_of(period_start_ms).label.clone(),
                price_per_km: f64::from_bits(price),
                currency: self.currency.clone(),
                distance_mm: s.mm,
                segments: s.segments,
                first_fix_ms: s.first_ms,
                last_fix_ms: s.last_ms,
            })
            .collect();
        let marks: Vec<(String, BilledEnd)> =
            moved.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let deltas = Arc::new(deltas);
        let marks = Arc::new(marks);
        let mut attempt = 0;
        loop {
            let (store, d, m) = (self.store.clone(), deltas.clone(), marks.clone());
            let result = tokio::task::spawn_blocking(move || store.apply(&d, &m))
                .await
                .map_err(|e| ComponentError::with("store writer panicked", e))?;
            match result {
                Ok(()) => break,
                Err(error) if attempt < 3 => {
                    attempt += 1;
                    let error = crate::error_chain(&error);
                    tracing::warn!(%error, attempt, "store commit failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                Err(error) => {
                    acks.fail();
                    return Err(ComponentError::with("cannot persist totals", error));
                }
            }
        }
        let billed: i64 = deltas.iter().map(|d| d.distance_mm).sum();
        let totals = deltas
            .iter()
            .map(|d| Total {
                obu_id: ObuId::from(d.obu_id.as_str()),
                period: d.period.as_str().into(),
                distance_m: d.distance_mm as f64 / 1e3,
                amount: d.distance_mm as f64 / 1e6 * d.price_per_km,
                currency: d.currency.as_str().into(),
            })
            .collect();
        Ok((totals, billed.max(0) as u64))
    }
}
