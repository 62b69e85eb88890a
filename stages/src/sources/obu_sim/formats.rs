//! Reading recorded files (CSV, JSON, GPX) into fixes through the field mapping.
//!
//! The whole file is read into memory and parsed once, when the source is
//! built. That is fine for recordings up to a few million rows (a parsed fix
//! takes about 80 bytes, so ten million rows need roughly 1 GB); larger files
//! would need a streaming reader, which `order = "time"` could not use anyway.
//! Rows that cannot be read are kept as [`Reject`]s for the source to count
//! and log; only an unreadable file, a malformed document or a mapping that
//! names a missing column stops the build.

use compact_str::CompactString;
use serde_json::Value;

use super::config::{ReplayConfig, ReplayFormat};
use super::time::parse_timestamp;
use crate::event::{EventContext, Fix, Millis, ObuId};

/// A row that was skipped, with where it was and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// 1-based line in the file (for a JSON array: the 1-based element).
    pub line: u64,
    pub reason: String,
}

/// The fixes of a file, in file order, and the rows that were skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub fixes: Vec<Fix>,
    pub rejects: Vec<Reject>,
}

/// Why a file could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading replay file {path}")]
    Read { path: String, source: std::io::Error },
    #[error("replay file {path} has no field {missing:?} (available: {available})")]
    MissingField { path: String, missing: String, available: String },
    #[error("replay file {path} is not well-formed {format}: {detail}")]
    Malformed { path: String, format: &'static str, detail: String },
}

/// Reads and parses the file a replay names.
pub fn load(config: &ReplayConfig) -> Result<Loaded, LoadError> {
    let path = config.path.display().to_string();
    let bytes = std::fs::read(&config.path)
        .map_err(|source| LoadError::Read { path: path.clone(), source })?;
    match config.format {
        ReplayFormat::Csv => read_csv(config, &path, &bytes),
        ReplayFormat::Json => read_json(config, &path, &bytes),
        ReplayFormat::Gpx => super::gpx::read_gpx(config, &path, &bytes),
    }
}

/// The OBU id of a row: the fixed id, or the prefix and the row's value;
/// refused unless [`crate::event::valid_obu_id`] accepts it.
pub fn make_id(config: &ReplayConfig, value: &str) -> Result<ObuId, String> {
    if let Some(fixed) = &config.obu_id {
        return Ok(ObuId::from(fixed.as_str()));
    }
    let mut id = CompactString::with_capacity(config.obu_id_prefix.len() + value.len());
    id.push_str(&config.obu_id_prefix);
    id.push_str(value);
    if crate::event::valid_obu_id(&id) {
        Ok(id)
    } else {
        Err(crate::event::OBU_ID_RULE.to_owned())
    }
}

/// A fix as read from a file; the receive time is set when it is replayed.
pub fn make_fix(obu_id: ObuId, ts_ms: Millis, lat: f64, lon: f64) -> Fix {
    Fix { obu_id, ts_ms, lat, lon, ctx: EventContext::default() }
}

/// Checks that a latitude and longitude are on the globe.
pub fn check_position(lat: f64, lon: f64) -> Result<(f64, f64), String> {
    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) {
        Ok((lat, lon))
    } else {
        Err(format!("position lat {lat} lon {lon} is off the globe"))
    }
}

/// Parses WKT `POINT(lon lat)` or `POINT (lon lat)` into (lat, lon).
pub fn parse_wkt_point(text: &str) -> Result<(f64, f64), String> {
    let bad = || format!("{text:?} is not a WKT POINT(lon lat)");
    let t = text.trim();
    let head = t.get(..5).filter(|h| h.eq_ignore_ascii_case("point")).ok_or_else(bad)?;
    let body = t[head.len()..].trim_start();
    let inner = body.strip_prefix('(').and_then(|b| b.strip_suffix(')')).ok_or_else(bad)?;
    let mut numbers = inner.split_ascii_whitespace().map(str::parse::<f64>);
    let (Some(Ok(lon)), Some(Ok(lat)), None) = (numbers.next(), numbers.next(), numbers.next())
    else {
        return Err(bad());
    };
    check_position(lat, lon)
}

fn parse_degrees(text: &str, what: &str) -> Result<f64, String> {
    text.trim().parse::<f64>().map_err(|_| format!("{what} {text:?} is not a number"))
}

/// The columns of a row's position: one WKT point, or latitude and longitude.
enum Position {
    Point(usize),
    LatLon(usize, usize),
}

fn read_csv(config: &ReplayConfig, path: &str, bytes: &[u8]) -> Result<Loaded, LoadError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let header = reader.headers().map_err(|e| LoadError::Malformed {
        path: path.to_owned(),
        format: "csv",
        detail: e.to_string(),
    })?;
    let column = |name: &Option<String>| -> Result<Option<usize>, LoadError> {
        let Some(name) = name else { return Ok(None) };
        match header.iter().position(|h| h == name) {
            Some(i) => Ok(Some(i)),
            None => Err(LoadError::MissingField {
                path: path.to_owned(),
                missing: name.clone(),
                available: header.iter().collect::<Vec<_>>().join(", "),
            }),
        }
    };
    let id_col = column(&config.obu_id_field)?;
    let time_col = column(&config.time_field)?.unwrap_or_default();
    let position = match column(&config.point_field)? {
        Some(p) => Position::Point(p),
        None => Position::LatLon(
            column(&config.lat_field)?.unwrap_or_default(),
            column(&config.lon_field)?.unwrap_or_default(),
        ),
    };

    let mut loaded = Loaded::default();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            // A recorded fix never holds a line break: a row spanning several
            // lines is an unbalanced quote that swallowed the rows after it.
            Ok(true) if reader.position().line() > line + 1 => {
                let swallowed = reader.position().line() - line;
                let reason = format!("row spans {swallowed} lines (an unbalanced quote?)");
                loaded.rejects.push(Reject { line, reason });
            }
            Ok(true) => match csv_fix(config, &record, id_col, time_col, &position) {
                Ok(fix) => loaded.fixes.push(fix),
                Err(reason) => loaded.rejects.push(Reject { line, reason }),
            },
            Err(e) => loaded.rejects.push(Reject { line, reason: e.to_string() }),
        }
    }
    Ok(loaded)
}

fn csv_fix(
    config: &ReplayConfig,
    record: &csv::StringRecord,
    id_col: Option<usize>,
    time_col: usize,
    position: &Position,
) -> Result<Fix, String> {
    let field = |i: usize| record.get(i).ok_or_else(|| format!("row has no column {}", i + 1));
    let obu_id = make_id(config, id_col.map(field).transpose()?.unwrap_or_default())?;
    let ts_ms = parse_timestamp(field(time_col)?).map_err(|e| e.to_string())?;
    let (lat, lon) = match *position {
        Position::Point(p) => parse_wkt_point(field(p)?)?,
        Position::LatLon(la, lo) => check_position(
            parse_degrees(field(la)?, "latitude")?,
            parse_degrees(field(lo)?, "longitude")?,
        )?,
    };
    Ok(make_fix(obu_id, ts_ms, lat, lon))
}

fn read_json(config: &ReplayConfig, path: &str, bytes: &[u8]) -> Result<Loaded, LoadError> {
    let malformed =
        |detail: String| LoadError::Malformed { path: path.to_owned(), format: "json", detail };
    // An array is one document; anything else is read as JSON lines.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let rows: Vec<(u64, Result<Value, String>)> = if first == Some(&b'[') {
        let values: Vec<Value> =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        values.into_iter().zip(1..).map(|(v, n)| (n, Ok(v))).collect()
    } else {
        let text = std::str::from_utf8(bytes).map_err(|e| malformed(e.to_string()))?;
        let lines = text.lines().zip(1..).filter(|(l, _)| !l.trim().is_empty());
        lines.map(|(l, n)| (n, serde_json::from_str(l).map_err(|e| e.to_string()))).collect()
    };
    check_json_fields(config, path, rows.iter().find_map(|(_, r)| r.as_ref().ok()))?;

    let mut loaded = Loaded::default();
    for (line, row) in rows {
        match row.and_then(|value| json_fix(config, &value)) {
            Ok(fix) => loaded.fixes.push(fix),
            Err(reason) => loaded.rejects.push(Reject { line, reason }),
        }
    }
    Ok(loaded)
}

fn mapped_fields(config: &ReplayConfig) -> impl Iterator<Item = &String> {
    [&config.obu_id_field, &config.time_field, &config.lat_field, &config.lon_field]
        .into_iter()
        .chain([&config.point_field])
        .flatten()
}

/// JSON has no header, so the first readable record stands in for it.
fn check_json_fields(
    config: &ReplayConfig,
    path: &str,
    first: Option<&Value>,
) -> Result<(), LoadError> {
    let Some(Value::Object(object)) = first else { return Ok(()) };
    match mapped_fields(config).find(|name| json_field(first, name).is_none()) {
        Some(missing) => Err(LoadError::MissingField {
            path: path.to_owned(),
            missing: missing.clone(),
            available: object.keys().cloned().collect::<Vec<_>>().join(", "),
        }),
        None => Ok(()),
    }
}

/// A key of an object, or a JSON pointer (`/a/b`) into nested objects.
fn json_field<'v>(value: Option<&'v Value>, name: &str) -> Option<&'v Value> {
    let value = value?;
    if name.starts_with('/') {
        value.pointer(name)
    } else {
        value.get(name)
    }
}

fn json_text<'v>(value: &'v Value, name: &Option<String>) -> Result<JsonText<'v>, String> {
    let name = name.as_deref().unwrap_or_default();
    match json_field(Some(value), name) {
        Some(Value::String(s)) => Ok(JsonText::Str(s)),
        Some(Value::Number(n)) => Ok(JsonText::Num(n)),
        Some(other) => Err(format!("field {name:?} holds {other}, not text or a number")),
        None => Err(format!("field {name:?} is missing")),
    }
}

enum JsonText<'v> {
    Str(&'v str),
    Num(&'v serde_json::Number),
}

fn json_fix(config: &ReplayConfig, value: &Value) -> Result<Fix, String> {
    let obu_id = match &config.obu_id_field {
        None => make_id(config, "")?,
        Some(_) => match json_text(value, &config.obu_id_field)? {
            JsonText::Str(s) => make_id(config, s)?,
            JsonText::Num(n) => make_id(config, &n.to_string())?,
        },
    };
    let ts_ms = match json_text(value, &config.time_field)? {
        JsonText::Str(s) => parse_timestamp(s).map_err(|e| e.to_string())?,
        JsonText::Num(n) => return Err(format!("time {n} is a number, not a timestamp")),
    };
    let degrees = |name: &Option<String>, what: &str| match json_text(value, name)? {
        JsonText::Str(s) => parse_degrees(s, what),
        JsonText::Num(n) => n.as_f64().ok_or_else(|| format!("{what} {n} is out of range")),
    };
    let (lat, lon) = match &config.point_field {
        Some(_) => match json_text(value, &config.point_field)? {
            JsonText::Str(s) => parse_wkt_point(s)?,
            JsonText::Num(n) => return Err(format!("point {n} is a number, not WKT")),
        },
        None => check_position(
            degrees(&config.lat_field, "latitude")?,
            degrees(&config.lon_field, "longitude")?,
        )?,
    };
    Ok(make_fix(obu_id, ts_ms, lat, lon))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn csv_config(path: &Path) -> ReplayConfig {
        let text = format!(
            "path = {path:?}\nformat = \"csv\"\nobu_id_field = \"id\"\ntime_field = \"t\"\n\
             point_field = \"p\"\n"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn wkt_points_with_and_without_space_give_lat_then_lon() {
        assert_eq!(parse_wkt_point("POINT(11.5 48.1)"), Ok((48.1, 11.5)));
        assert_eq!(parse_wkt_point(" point ( -97.7  30.2 ) "), Ok((30.2, -97.7)));
    }

    #[test]
    fn malformed_or_impossible_wkt_points_are_refused() {
        for bad in ["POINT(11.5)", "POINT(1 2 3)", "LINESTRING(1 2)", "POINT 1 2", "POINT(1 x)"] {
            assert!(parse_wkt_point(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_wkt_point("POINT(11.5 95)").is_err(), "latitude beyond the pole");
    }

    #[test]
    fn csv_rejects_name_the_file_line_of_the_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        let rows = "id,t,p\na,2024-01-01T00:00:00Z,POINT(1 2)\n\
                    a,2024-01-01T00:00:01Z,POINT(1)\n\
                    \"b\nc\",2024-01-01T00:00:02Z,POINT(1 2)\n\
                    a,never,POINT(1 2)\n";
        std::fs::write(&path, rows).unwrap();

        let loaded = load(&csv_config(&path)).unwrap();

        assert_eq!(loaded.fixes.len(), 1);
        let lines: Vec<u64> = loaded.rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4, 6], "the quoted id spans lines 4 and 5");
        assert!(loaded.rejects[1].reason.contains("spans 2 lines"), "{:?}", loaded.rejects[1]);
    }

    #[test]
    fn json_array_that_is_not_json_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.json");
        std::fs::write(&path, "[{\"id\": 1},").unwrap();
        let mut config = csv_config(&path);
        config.format = ReplayFormat::Json;

        assert!(matches!(load(&config), Err(LoadError::Malformed { format: "json", .. })));
    }
}
