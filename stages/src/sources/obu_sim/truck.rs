//! One simulated truck: speed, heading, stops and signal gaps.
//!
//! Positions are integrated in degrees on a sphere of the mean Earth radius,
//! so distances between fixes match a haversine computed by a consumer.

use std::f64::consts::{PI, TAU};

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::config::ObuSimConfig;
use crate::event::{Fix, Millis, ObuId};

/// Metres per degree of latitude on a sphere of the mean Earth radius.
const METRES_PER_DEGREE: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;
/// Trucks accelerate gently and brake harder.
const ACCEL_MPS2: f64 = 0.6;
const BRAKE_MPS2: f64 = 1.5;
/// Fastest heading change, about 7 degrees per second.
const MAX_TURN_RAD_S: f64 = 0.12;
/// Mean time between two changes of cruising speed.
const CRUISE_CHANGE_S: f64 = 60.0;
/// Trucks steer back to the centre once past this share of the area's half-size.
const EDGE_SHARE: f64 = 0.8;

/// The driving area: a centre and half-extents in metres.
#[derive(Clone, Copy, Debug)]
pub struct Area {
    centre_lat: f64,
    centre_lon: f64,
    half_north_m: f64,
    half_east_m: f64,
}

impl Area {
    pub fn from_config(config: &ObuSimConfig) -> Self {
        match config.bbox {
            Some(b) => {
                let centre_lat = (b.min_lat + b.max_lat) / 2.0;
                let lon_scale = METRES_PER_DEGREE * centre_lat.to_radians().cos();
                Area {
                    centre_lat,
                    centre_lon: (b.min_lon + b.max_lon) / 2.0,
                    half_north_m: (b.max_lat - b.min_lat) / 2.0 * METRES_PER_DEGREE,
                    half_east_m: (b.max_lon - b.min_lon) / 2.0 * lon_scale,
                }
            }
            None => Area {
                centre_lat: config.centre_lat,
                centre_lon: config.centre_lon,
                half_north_m: config.radius_m,
                half_east_m: config.radius_m,
            },
        }
    }

    /// Offset of a position from the centre, as shares of the half-extents.
    fn relative(&self, lat: f64, lon: f64) -> (f64, f64) {
        let north_m = (lat - self.centre_lat) * METRES_PER_DEGREE;
        let east_m = (lon - self.centre_lon) * METRES_PER_DEGREE * lat.to_radians().cos();
        (north_m / self.half_north_m, east_m / self.half_east_m)
    }
}

/// Fleet-wide driving behaviour, from the configuration.
pub struct Model {
    area: Area,
    max_speed_mps: f64,
    stop_rate_per_s: f64,
    stop_mean_s: f64,
    gap_rate_per_s: f64,
    gap_mean_s: f64,
    backlog_share: f64,
    pub gps_noise_m: f64,
}

impl Model {
    pub fn from_config(config: &ObuSimConfig, area: Area) -> Self {
        let rate = |every_s: f64| if every_s > 0.0 { 1.0 / every_s } else { 0.0 };
        Model {
            area,
            max_speed_mps: config.max_speed_kmh / 3.6,
            stop_rate_per_s: rate(config.stop_every_s),
            stop_mean_s: config.stop_s,
            gap_rate_per_s: rate(config.gap_every_s),
            gap_mean_s: config.gap_s,
            backlog_share: config.backlog_share,
            gps_noise_m: config.gps_noise_m,
        }
    }

    fn cruise_speed(&self, rng: &mut ChaCha8Rng) -> f64 {
        self.max_speed_mps * (0.4 + 0.6 * rng.random::<f64>())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Driving,
    Braking,
    Parked { until_ms: Millis },
}

pub struct Truck {
    pub id: ObuId,
    lat: f64,
    lon: f64,
    heading_rad: f64,
    speed_mps: f64,
    target_mps: f64,
    turn_rad_s: f64,
    phase: Phase,
    gap_until_ms: Millis,
    /// Whether the current gap's fixes are kept and sent when it ends.
    pub gap_backlog: bool,
    pub backlog: Vec<Fix>,
}

impl Truck {
    /// Truck number `n` (from 1), placed at random inside the area.
    pub fn new(n: usize, model: &Model, rng: &mut ChaCha8Rng) -> Self {
        let area = &model.area;
        let north_m = (rng.random::<f64>() * 2.0 - 1.0) * area.half_north_m * EDGE_SHARE;
        let east_m = (rng.random::<f64>() * 2.0 - 1.0) * area.half_east_m * EDGE_SHARE;
        let lat = area.centre_lat + north_m / METRES_PER_DEGREE;
        let lon = area.centre_lon + east_m / (METRES_PER_DEGREE * lat.to_radians().cos());
        let target_mps = model.cruise_speed(rng);
        Truck {
            id: ObuId::from(format!("obu-{n:04}")),
            lat,
            lon,
            heading_rad: rng.random::<f64>() * TAU,
            speed_mps: target_mps,
            target_mps,
            turn_rad_s: 0.0,
            phase: Phase::Driving,
            gap_until_ms: Millis::MIN,
            gap_backlog: false,
            backlog: Vec::new(),
        }
    }

    pub fn in_gap(&self, now_ms: Millis) -> bool {
        now_ms < self.gap_until_ms
    }

    /// Moves the truck through one fix interval ending at `now_ms`.
    pub fn advance(&mut self, model: &Model, rng: &mut ChaCha8Rng, now_ms: Millis, dt_ms: Millis) {
        let dt_s = dt_ms as f64 / 1_000.0;
        if !self.in_gap(now_ms) && chance(rng, model.gap_rate_per_s * dt_s) {
            let length_s = model.gap_mean_s * (0.5 + rng.random::<f64>());
            self.gap_until_ms = now_ms + (length_s * 1_000.0) as Millis;
            self.gap_backlog = rng.random::<f64>() < model.backlog_share;
        }

        let substeps = dt_s.ceil().max(1.0);
        let h = dt_s / substeps;
        for _ in 0..substeps as u32 {
            self.update_phase(model, rng, now_ms, h);
            self.update_motion(model, rng, h);
        }
    }

    fn update_phase(&mut self, model: &Model, rng: &mut ChaCha8Rng, now_ms: Millis, h: f64) {
        match self.phase {
            Phase::Driving if chance(rng, model.stop_rate_per_s * h) => {
                self.phase = Phase::Braking;
                self.target_mps = 0.0;
            }
            Phase::Driving if chance(rng, h / CRUISE_CHANGE_S) => {
                self.target_mps = model.cruise_speed(rng);
            }
            Phase::Braking if self.speed_mps <= 0.0 => {
                let parked_s = -model.stop_mean_s * (1.0 - rng.random::<f64>()).ln();
                self.phase = Phase::Parked { until_ms: now_ms + (parked_s * 1_000.0) as Millis };
            }
            Phase::Parked { until_ms } if now_ms >= until_ms => {
                self.phase = Phase::Driving;
                self.target_mps = model.cruise_speed(rng);
            }
            _ => {}
        }
    }

    fn update_motion(&mut self, model: &Model, rng: &mut ChaCha8Rng, h: f64) {
        let change = (self.target_mps - self.speed_mps).clamp(-BRAKE_MPS2 * h, ACCEL_MPS2 * h);
        self.speed_mps = (self.speed_mps + change).max(0.0);
        if self.speed_mps <= 0.0 {
            return;
        }

        // A slow random walk of the turn rate gives smooth curves; near the
        // edge of the area the truck turns back towards the centre.
        let (north, east) = model.area.relative(self.lat, self.lon);
        if north.abs() > EDGE_SHARE || east.abs() > EDGE_SHARE {
            let home = (-east).atan2(-north);
            let off = (home - self.heading_rad + PI).rem_euclid(TAU) - PI;
            self.turn_rad_s = MAX_TURN_RAD_S.copysign(off);
        } else {
            let jitter: f64 = rng.sample(StandardNormal);
            self.turn_rad_s =
                (self.turn_rad_s + jitter * 0.03 * h).clamp(-MAX_TURN_RAD_S, MAX_TURN_RAD_S);
        }
        self.heading_rad = (self.heading_rad + self.turn_rad_s * h).rem_euclid(TAU);

        let step_m = self.speed_mps * h;
        self.lat += step_m * self.heading_rad.cos() / METRES_PER_DEGREE;
        self.lon +=
            step_m * self.heading_rad.sin() / (METRES_PER_DEGREE * self.lat.to_radians().cos());
    }

    /// The position a GPS with the given error (metres north and east) reports.
    pub fn noisy_position(&self, north_m: f64, east_m: f64) -> (f64, f64) {
        let lat = self.lat + north_m / METRES_PER_DEGREE;
        let lon = self.lon + east_m / (METRES_PER_DEGREE * self.lat.to_radians().cos());
        (lat, lon)
    }
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}
