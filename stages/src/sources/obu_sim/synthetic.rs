//! A seeded fleet of simulated trucks: driving, stopping, losing signal.
//!
//! All trucks advance in lockstep, one fix interval at a time, drawing from
//! one seeded ChaCha generator in a fixed order, so a seed always yields the
//! same fixes. Physics run in sub-steps of at most one second so headings and
//! speeds stay smooth at long fix intervals.

use std::collections::VecDeque;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::config::ObuSimConfig;
use super::emit::Feed;
use super::truck::{Area, Model, Truck};
use crate::event::{EventContext, Fix, Millis};

/// The simulated fleet, producing its fixes in time order.
pub struct Fleet {
    trucks: Vec<Truck>,
    rng: ChaCha8Rng,
    model: Model,
    start_ms: Millis,
    interval_ms: Millis,
    /// Fix intervals to simulate; `None` runs until shutdown.
    steps: Option<u64>,
    /// The interval being produced, and the next truck to move in it.
    step: u64,
    cursor: usize,
    /// Fixes ready to go before any new one is simulated (backlogs).
    pending: VecDeque<Fix>,
    flushed: bool,
}

impl Fleet {
    pub fn new(config: &ObuSimConfig, start_ms: Millis) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let area = Area::from_config(config);
        let model = Model::from_config(config, area);
        let trucks = (1..=config.trucks).map(|n| Truck::new(n, &model, &mut rng)).collect();
        let interval_ms = config.interval_ms as Millis;
        let by_duration = config.duration_s.map(|s| (s * 1_000).div_ceil(config.interval_ms));
        let steps = match (by_duration, config.fixes_per_truck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Fleet {
            trucks,
            rng,
            model,
            start_ms,
            interval_ms,
            steps,
            step: 0,
            cursor: 0,
            pending: VecDeque::new(),
            flushed: false,
        }
    }

    /// Fixes the simulation will produce at most (for progress), if limited.
    pub fn total(&self) -> Option<u64> {
        self.steps.map(|s| s * self.trucks.len() as u64)
    }

    fn time_of(&self, step: u64) -> Millis {
        self.start_ms + step as Millis * self.interval_ms
    }

    fn steps_left(&self, step: u64) -> bool {
        self.steps.is_none_or(|limit| step < limit)
    }

    /// Simulates the next truck of the current interval.
    fn simulate_one(&mut self, out: &mut Vec<Fix>) {
        let now_ms = self.time_of(self.step);
        let truck = &mut self.trucks[self.cursor];
        truck.advance(&self.model, &mut self.rng, now_ms, self.interval_ms);

        let sigma = self.model.gps_noise_m;
        let north: f64 = self.rng.sample::<f64, _>(StandardNormal) * sigma;
        let east: f64 = self.rng.sample::<f64, _>(StandardNormal) * sigma;
        let (lat, lon) = truck.noisy_position(north, east);
        let ctx = EventContext { received_ms: now_ms, trace: None };
        let fix = Fix { obu_id: truck.id.clone(), ts_ms: now_ms, lat, lon, ctx };

        if truck.in_gap(now_ms) {
            if truck.gap_backlog {
                truck.backlog.push(fix);
            }
        } else if truck.backlog.is_empty() {
            out.push(fix);
        } else {
            // Signal is back: the stored fixes go first, received now.
            self.pending.extend(truck.backlog.drain(..).map(|mut f| {
                f.ctx.received_ms = now_ms;
                f
            }));
            self.pending.push_back(fix);
        }
        self.cursor += 1;
    }

    /// At the end of the simulation, backlogs still held are sent.
    fn flush_backlogs(&mut self) {
        let end_ms = self.time_of(self.step);
        for truck in &mut self.trucks {
            self.pending.extend(truck.backlog.drain(..).map(|mut f| {
                f.ctx.received_ms = end_ms;
                f
            }));
        }
        self.flushed = true;
    }
}

impl Feed for Fleet {
    fn next_due_ms(&mut self) -> Option<Millis> {
        if !self.pending.is_empty()
            || (self.cursor < self.trucks.len() && self.steps_left(self.step))
        {
            return Some(self.time_of(self.step));
        }
        if self.cursor >= self.trucks.len() && self.steps_left(self.step + 1) {
            return Some(self.time_of(self.step + 1));
        }
        if !self.flushed {
            self.flush_backlogs();
            return (!self.pending.is_empty()).then(|| self.time_of(self.step));
        }
        None
    }

    fn fill(&mut self, out: &mut Vec<Fix>, limit: usize, until_ms: Millis) {
        while out.len() < limit {
            if let Some(fix) = self.pending.pop_front() {
                out.push(fix);
                continue;
            }
            if self.cursor >= self.trucks.len() {
                let next = self.step + 1;
                if !self.steps_left(next) || self.time_of(next) > until_ms {
                    return;
                }
                (self.step, self.cursor) = (next, 0);
            }
            if !self.steps_left(self.step) {
                return;
            }
            self.simulate_one(out);
        }
    }
}
