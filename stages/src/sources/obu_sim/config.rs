//! The `obu_sim` declaration: synthetic fleet settings and the optional replay table.
//!
//! Without a `replay` table the source simulates a fleet; with one it replays
//! a recorded file.
//!
//! Shortcoming: the fleet keys (`trucks` to `backlog_share`, `start`,
//! `duration_s`, `fixes_per_truck`) only apply to the simulation and are
//! silently ignored next to a `replay` table, so a mistaken `trucks = 5` on a
//! replay goes unnoticed; refusing them needs them to become `Option`s.

use std::path::PathBuf;

use serde::Deserialize;

use super::time::parse_timestamp;
use crate::event::Millis;
use crate::registry::FieldError;

/// Settings of one `obu_sim` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObuSimConfig {
    /// Number of simulated trucks (ids `obu-0001` upwards).
    #[serde(default = "default_trucks")]
    pub trucks: usize,
    /// Simulated time between two fixes of one truck, in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Seed of the simulation; the same seed yields the same fixes.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Multiple of real time: 1.0 = real time, 10 = ten times faster, 0 = as
    /// fast as possible. Default 1.0 when simulating, 0 when replaying.
    #[serde(default)]
    pub speedup: Option<f64>,
    /// Simulated seconds after which the simulation ends; unlimited by default.
    #[serde(default)]
    pub duration_s: Option<u64>,
    /// Fix intervals simulated per truck before the simulation ends (fixes
    /// lost in signal gaps count); unlimited by default.
    #[serde(default)]
    pub fixes_per_truck: Option<u64>,
    /// Simulated time of the first fix, RFC 3339 with an offset; default: now.
    #[serde(default)]
    pub start: Option<String>,
    /// Most fixes per emitted batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Latitude of the centre of the driving area, in degrees.
    #[serde(default = "default_centre_lat")]
    pub centre_lat: f64,
    /// Longitude of the centre of the driving area, in degrees.
    #[serde(default = "default_centre_lon")]
    pub centre_lon: f64,
    /// Half the side of the square driving area around the centre, in metres.
    #[serde(default = "default_radius_m")]
    pub radius_m: f64,
    /// Driving area as a box; replaces the centre and radius when given.
    #[serde(default)]
    pub bbox: Option<BoundingBox>,
    /// Top cruising speed of a truck, in km/h.
    #[serde(default = "default_max_speed_kmh")]
    pub max_speed_kmh: f64,
    /// Standard deviation of the GPS error on each axis, in metres.
    #[serde(default = "default_gps_noise_m")]
    pub gps_noise_m: f64,
    /// Mean driving time between two stops, in seconds; 0 = never stop.
    #[serde(default = "default_stop_every_s")]
    pub stop_every_s: f64,
    /// Mean length of a stop, in seconds.
    #[serde(default = "default_stop_s")]
    pub stop_s: f64,
    /// Mean time between two signal gaps, in seconds; 0 = no gaps.
    #[serde(default = "default_gap_every_s")]
    pub gap_every_s: f64,
    /// Mean length of a signal gap, in seconds.
    #[serde(default = "default_gap_s")]
    pub gap_s: f64,
    /// Share of gaps (0 to 1) after which the OBU sends the missed fixes in
    /// one backlog; the fixes of the other gaps are lost.
    #[serde(default = "default_backlog_share")]
    pub backlog_share: f64,
    /// Replay a recorded file instead of simulating.
    #[serde(default)]
    pub replay: Option<ReplayConfig>,
}

/// A rectangular driving area, in degrees.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundingBox {
    pub min_lat: f64,
    pub min_lon: f64,
    pub max_lat: f64,
    pub max_lon: f64,
}

/// Where a replay reads its fixes and how the file's fields map onto a fix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// The recorded file.
    pub path: PathBuf,
    /// `csv` (with a header row), `json` (an array or JSON lines) or `gpx`.
    pub format: ReplayFormat,
    /// Field (CSV column or JSON key) holding the OBU id.
    #[serde(default)]
    pub obu_id_field: Option<String>,
    /// Field holding the fix time (RFC 3339, `T` or space, offset required).
    #[serde(default)]
    pub time_field: Option<String>,
    /// Field holding the latitude in degrees.
    #[serde(default)]
    pub lat_field: Option<String>,
    /// Field holding the longitude in degrees.
    #[serde(default)]
    pub lon_field: Option<String>,
    /// Field holding the position as WKT `POINT(lon lat)`, instead of
    /// `lat_field` and `lon_field`.
    #[serde(default)]
    pub point_field: Option<String>,
    /// One OBU id for every row (files without an id, or GPX instead of the
    /// track name).
    #[serde(default)]
    pub obu_id: Option<String>,
    /// Text put before every id read from the file (or GPX track name).
    #[serde(default)]
    pub obu_id_prefix: String,
    /// `file` keeps the rows as they appear; `time` sorts them by fix time.
    #[serde(default)]
    pub order: ReplayOrder,
    /// Times every row is sent, one copy after the other.
    #[serde(default = "default_repeat_each")]
    pub repeat_each: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayFormat {
    Csv,
    Json,
    Gpx,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayOrder {
    #[default]
    File,
    Time,
}

fn default_trucks() -> usize {
    10
}
fn default_interval_ms() -> u64 {
    1_000
}
fn default_seed() -> u64 {
    1
}
fn default_batch_size() -> usize {
    1_024
}
// Default area: around Hof, Upper Franconia (where one of the sample data sets was recorded).
fn default_centre_lat() -> f64 {
    50.31
}
fn default_centre_lon() -> f64 {
    11.92
}
fn default_radius_m() -> f64 {
    15_000.0
}
fn default_max_speed_kmh() -> f64 {
    90.0
}
fn default_gps_noise_m() -> f64 {
    3.0
}
fn default_stop_every_s() -> f64 {
    900.0
}
fn default_stop_s() -> f64 {
    120.0
}
fn default_gap_every_s() -> f64 {
    1_800.0
}
fn default_gap_s() -> f64 {
    60.0
}
fn default_backlog_share() -> f64 {
    0.5
}
fn default_repeat_each() -> u32 {
    1
}

impl ObuSimConfig {
    /// The pacing: what the user asked for, or the mode's default.
    pub fn speedup(&self) -> f64 {
        self.speedup.unwrap_or(if self.replay.is_some() { 0.0 } else { 1.0 })
    }

    /// The configured start time, if any (validated at parse time).
    pub fn start_ms(&self) -> Option<Millis> {
        self.start.as_deref().and_then(|s| parse_timestamp(s).ok())
    }

    pub(super) fn check(&self) -> Result<(), FieldError> {
        let positive = [
            ("trucks", self.trucks as f64),
            ("interval_ms", self.interval_ms as f64),
            ("batch_size", self.batch_size as f64),
            ("radius_m", self.radius_m),
            ("max_speed_kmh", self.max_speed_kmh),
        ];
        for (key, value) in positive {
            if value.is_nan() || value <= 0.0 {
                return Err(FieldError::at(key, "must be greater than 0"));
            }
        }
        let non_negative = [
            ("speedup", self.speedup()),
            ("gps_noise_m", self.gps_noise_m),
            ("stop_every_s", self.stop_every_s),
            ("stop_s", self.stop_s),
            ("gap_every_s", self.gap_every_s),
            ("gap_s", self.gap_s),
        ];
        for (key, value) in non_negative {
            if !value.is_finite() || value < 0.0 {
                return Err(FieldError::at(key, "must be a finite number, 0 or more"));
            }
        }
        // Each truck keeps state and a place in every batch; beyond this the
        // simulation no longer fits in memory on a normal machine.
        if self.trucks > MAX_TRUCKS {
            return Err(FieldError::at("trucks", format!("must be at most {MAX_TRUCKS}")));
        }
        if self.batch_size > MAX_BATCH_SIZE {
            return Err(FieldError::at("batch_size", format!("must be at most {MAX_BATCH_SIZE}")));
        }
        if !(0.0..=1.0).contains(&self.backlog_share) {
            return Err(FieldError::at("backlog_share", "must be between 0 and 1"));
        }
        if let Some(start) = &self.start {
            parse_timestamp(start).map_err(|e| FieldError::at("start", e.to_string()))?;
        }
        if let Some(b) = &self.bbox {
            let ordered = b.min_lat < b.max_lat && b.min_lon < b.max_lon;
            if !ordered || b.min_lat < -85.0 || b.max_lat > 85.0 {
                return Err(FieldError::at("bbox", "needs min < max, latitudes within ±85"));
            }
        }
        match &self.replay {
            Some(replay) => replay.check().map_err(|mut e| {
                e.path.insert(0, "replay".to_owned());
                e
            }),
            None => Ok(()),
        }
    }
}

/// Most simulated trucks in one source.
pub const MAX_TRUCKS: usize = 1_000_000;
/// Most fixes in one emitted batch.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

impl ReplayConfig {
    fn check(&self) -> Result<(), FieldError> {
        if !(1..=1_000).contains(&self.repeat_each) {
            return Err(FieldError::at("repeat_each", "must be from 1 to 1000"));
        }
        if let Some(id) = self.obu_id.as_deref().filter(|id| !crate::event::valid_obu_id(id)) {
            return Err(FieldError::at("obu_id", format!("`{id}`: {}", crate::event::OBU_ID_RULE)));
        }
        let fields = [
            ("obu_id_field", &self.obu_id_field),
            ("time_field", &self.time_field),
            ("lat_field", &self.lat_field),
            ("lon_field", &self.lon_field),
            ("point_field", &self.point_field),
        ];
        if self.format == ReplayFormat::Gpx {
            return match fields.iter().find(|(_, v)| v.is_some()) {
                Some((key, _)) => Err(FieldError::at(key, "gpx files have fixed fields")),
                None => Ok(()),
            };
        }
        if self.time_field.is_none() {
            return Err(FieldError::at("time_field", "is required for csv and json"));
        }
        match (&self.obu_id_field, &self.obu_id) {
            (None, None) => {
                return Err(FieldError::at("obu_id_field", "or a fixed obu_id is required"));
            }
            (Some(_), Some(_)) => {
                return Err(FieldError::at("obu_id", "cannot be combined with obu_id_field"));
            }
            _ => {}
        }
        match (&self.point_field, &self.lat_field, &self.lon_field) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
            (Some(_), _, _) => {
                Err(FieldError::at("point_field", "cannot be combined with lat_field or lon_field"))
            }
            _ => Err(FieldError::at("point_field", "or both lat_field and lon_field are required")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ObuSimConfig, FieldError> {
        let config: ObuSimConfig = toml::from_str(text)
            .map_err(|e| FieldError { path: Vec::new(), message: e.to_string() })?;
        config.check().map(|()| config)
    }

    #[test]
    fn empty_declaration_simulates_ten_trucks_in_real_time() {
        let config = parse("").unwrap();
        assert_eq!((config.trucks, config.interval_ms, config.batch_size), (10, 1_000, 1_024));
        assert_eq!(config.speedup(), 1.0);
    }

    #[test]
    fn replay_defaults_to_full_speed_file_order_and_one_copy() {
        let text = "[replay]\npath = \"x.gpx\"\nformat = \"gpx\"\n";
        let config = parse(text).unwrap();
        let replay = config.replay.as_ref().unwrap();
        assert_eq!(config.speedup(), 0.0);
        assert_eq!((replay.order, replay.repeat_each), (ReplayOrder::File, 1));
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let cases = [
            ("trucks = 0", vec!["trucks"]),
            ("speedup = -1.0", vec!["speedup"]),
            ("backlog_share = 1.5", vec!["backlog_share"]),
            ("start = \"tomorrow\"", vec!["start"]),
            ("bbox = { min_lat = 2.0, min_lon = 0.0, max_lat = 1.0, max_lon = 1.0 }", vec!["bbox"]),
            (
                "[replay]\npath = \"x\"\nformat = \"csv\"\ntime_field = \"t\"\npoint_field = \"p\"",
                vec!["replay", "obu_id_field"],
            ),
            (
                "[replay]\npath = \"x\"\nformat = \"csv\"\nobu_id = \"a\"\ntime_field = \"t\"\n\
                 point_field = \"p\"\nlat_field = \"y\"",
                vec!["replay", "point_field"],
            ),
        ];
        for (text, path) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.path, path, "{text}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(parse("truck = 3").is_err());
        assert!(parse("[replay]\npath = \"x\"\nformat = \"gpx\"\nspeed = 2").is_err());
    }
}
