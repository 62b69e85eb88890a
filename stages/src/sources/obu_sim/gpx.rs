//! Reading GPX track points (`<trk>/<trkseg>/<trkpt lat lon><time>`) into fixes.
//!
//! Each track becomes one OBU: the id is the configured fixed `obu_id`, or the
//! prefix and the track's `<name>`, or the prefix and `track-N` (N counting
//! tracks from 1) when a track has no name. Route and way points carry no
//! track and are not read.

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;

use super::config::ReplayConfig;
use super::formats::{check_position, make_fix, make_id, LoadError, Loaded, Reject};
use super::time::parse_timestamp;
use crate::event::Millis;

/// A track point waiting for its time and its track's id.
struct Point {
    line: u64,
    position: Result<(f64, f64), String>,
    time: String,
}

/// Which text the reader is collecting.
#[derive(Clone, Copy, PartialEq)]
enum Capture {
    Nothing,
    TrackName,
    Time,
}

/// The reader's place in the document.
struct State<'c> {
    config: &'c ReplayConfig,
    loaded: Loaded,
    tracks: u64,
    in_track: bool,
    track_name: String,
    /// Points of the current track, made into fixes when the track ends.
    track: Vec<(Millis, f64, f64)>,
    point: Option<Point>,
    capture: Capture,
    text: String,
}

pub fn read_gpx(config: &ReplayConfig, path: &str, bytes: &[u8]) -> Result<Loaded, LoadError> {
    let malformed = |line: u64, detail: String| LoadError::Malformed {
        path: path.to_owned(),
        format: "gpx",
        detail: format!("line {line}: {detail}"),
    };
    let mut reader = Reader::from_reader(bytes);
    let mut lines = LineCounter::default();
    let mut state = State {
        config,
        loaded: Loaded::default(),
        tracks: 0,
        in_track: false,
        track_name: String::new(),
        track: Vec::new(),
        point: None,
        capture: Capture::Nothing,
        text: String::new(),
    };
    let mut buf = Vec::new();
    loop {
        let offset = reader.buffer_position();
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(e) => {
                return Err(malformed(lines.line_at(bytes, reader.error_position()), e.to_string()))
            }
        };
        let line = lines.line_at(bytes, offset);
        let step = match event {
            Event::Start(e) => {
                state.start(e.local_name().as_ref(), &e, line);
                Ok(())
            }
            Event::Empty(e) => {
                state.start(e.local_name().as_ref(), &e, line);
                state.end(e.local_name().as_ref());
                Ok(())
            }
            Event::Text(t) if state.capture != Capture::Nothing => {
                t.decode().map(|s| state.text.push_str(&s)).map_err(|e| e.to_string())
            }
            Event::GeneralRef(r) if state.capture != Capture::Nothing => {
                resolve_entity(&r).map(|s| state.text.push_str(&s))
            }
            Event::End(e) => {
                state.end(e.local_name().as_ref());
                Ok(())
            }
            Event::Eof => break,
            _ => Ok(()),
        };
        step.map_err(|detail| malformed(line, detail))?;
        buf.clear();
    }
    Ok(state.loaded)
}

impl State<'_> {
    fn start(&mut self, name: &[u8], element: &BytesStart<'_>, line: u64) {
        match name {
            b"trk" => {
                self.tracks += 1;
                self.in_track = true;
                self.track_name.clear();
                self.track.clear();
            }
            b"name" if self.in_track && self.point.is_none() => self.collect(Capture::TrackName),
            b"trkpt" if self.in_track => {
                let position = attribute(element, "lat")
                    .and_then(|lat| Ok((lat, attribute(element, "lon")?)))
                    .and_then(|(lat, lon)| check_position(lat, lon));
                self.point = Some(Point { line, position, time: String::new() });
            }
            b"time" if self.point.is_some() => self.collect(Capture::Time),
            _ => {}
        }
    }

    fn end(&mut self, name: &[u8]) {
        match name {
            b"name" if self.capture == Capture::TrackName => {
                self.track_name = self.text.trim().to_owned();
                self.capture = Capture::Nothing;
            }
            b"time" if self.capture == Capture::Time => {
                if let Some(point) = self.point.as_mut() {
                    point.time = std::mem::take(&mut self.text);
                }
                self.capture = Capture::Nothing;
            }
            b"trkpt" => {
                if let Some(point) = self.point.take() {
                    self.finish_point(point);
                }
            }
            b"trk" if self.in_track => self.finish_track(),
            _ => {}
        }
    }

    fn collect(&mut self, capture: Capture) {
        self.capture = capture;
        self.text.clear();
    }

    fn finish_point(&mut self, point: Point) {
        let parsed = point.position.and_then(|(lat, lon)| {
            if point.time.trim().is_empty() {
                return Err("trkpt has no <time>".to_owned());
            }
            let ts = parse_timestamp(&point.time).map_err(|e| e.to_string())?;
            Ok((ts, lat, lon))
        });
        match parsed {
            Ok(p) => self.track.push(p),
            Err(reason) => self.loaded.rejects.push(Reject { line: point.line, reason }),
        }
    }

    fn finish_track(&mut self) {
        let numbered;
        let name = if self.track_name.is_empty() {
            numbered = format!("track-{}", self.tracks);
            &numbered
        } else {
            &self.track_name
        };
        // A track name that cannot be an OBU id falls back to the track's number.
        let numbered_id = || make_id(self.config, &format!("track-{}", self.tracks));
        let Ok(id) = make_id(self.config, name).or_else(|_| numbered_id()) else {
            self.track.clear();
            self.in_track = false;
            return;
        };
        let fixes = self.track.drain(..).map(|(ts, lat, lon)| make_fix(id.clone(), ts, lat, lon));
        self.loaded.fixes.extend(fixes);
        self.in_track = false;
    }
}

fn attribute(element: &BytesStart<'_>, name: &str) -> Result<f64, String> {
    let found = element.try_get_attribute(name).map_err(|e| e.to_string())?;
    let value = found.ok_or_else(|| format!("trkpt has no {name} attribute"))?;
    let text = String::from_utf8_lossy(&value.value);
    text.trim().parse().map_err(|_| format!("{name} {text:?} is not a number"))
}

/// The text an entity reference (`&amp;`, `&#233;`) stands for.
fn resolve_entity(reference: &BytesRef<'_>) -> Result<String, String> {
    if let Some(c) = reference.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c.to_string());
    }
    let text = match &**reference {
        b"amp" => "&",
        b"lt" => "<",
        b"gt" => ">",
        b"quot" => "\"",
        b"apos" => "'",
        other => return Err(format!("unknown entity &{};", String::from_utf8_lossy(other))),
    };
    Ok(text.to_owned())
}

/// Turns byte offsets into line numbers, counting each byte once as offsets grow.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: u64,
}

impl LineCounter {
    fn line_at(&mut self, bytes: &[u8], offset: u64) -> u64 {
        let offset = (offset as usize).min(bytes.len());
        if offset >= self.offset {
            self.line += bytes[self.offset..offset].iter().filter(|&&b| b == b'\n').count() as u64;
            self.offset = offset;
        }
        self.line + 1
    }
}
