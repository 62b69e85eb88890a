//! Embedded SQLite behind the store interface.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Durability, StoreError};
use crate::event::{Chord, TrackState};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS totals (
    obu_id TEXT NOT NULL,
    period TEXT NOT NULL,
    price_per_km REAL NOT NULL,
    currency TEXT NOT NULL,
    distance_mm INTEGER NOT NULL,
    segments INTEGER NOT NULL,
    first_fix_ms INTEGER NOT NULL,
    last_fix_ms INTEGER NOT NULL,
    PRIMARY KEY (obu_id, period, price_per_km, currency)
);
CREATE TABLE IF NOT EXISTS obu_marks (
    obu_id TEXT PRIMARY KEY NOT NULL,
    last_to_ms INTEGER NOT NULL,
    last_lat REAL NOT NULL,
    last_lon REAL NOT NULL,
    chord_m REAL,
    chord_bearing_deg REAL,
    chord_turn_in_deg REAL,
    track_state BLOB
);
";

/// Distance to add to one OBU's total in one period at one price.
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodDelta {
    pub obu_id: String,
    pub period: String,
    pub price_per_km: f64,
    pub currency: String,
    pub distance_mm: i64,
    pub segments: i64,
    pub first_fix_ms: i64,
    pub last_fix_ms: i64,
}

/// Columns of `obu_marks` added after its first layout, with how they are
/// added to a store created by an earlier version.
const ADDED_MARK_COLUMNS: [(&str, &str); 6] = [
    ("last_lat", "REAL NOT NULL DEFAULT 0"),
    ("last_lon", "REAL NOT NULL DEFAULT 0"),
    ("chord_m", "REAL"),
    ("chord_bearing_deg", "REAL"),
    ("chord_turn_in_deg", "REAL"),
    ("track_state", "BLOB"),
];

/// The filter state as little-endian numbers: the anchor's time, latitude and
/// longitude, the cluster's count and sums, then each recent position.
/// Written for every OBU of every commit, so it is kept small and cheap.
fn encode_state(state: &TrackState) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(48 + 16 * state.recent.len());
    let (ts_ms, lat, lon) = state.anchor;
    let (n, lat_sum, lon_sum) = state.cluster;
    bytes.extend_from_slice(&ts_ms.to_le_bytes());
    for value in [lat, lon, n, lat_sum, lon_sum] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    for (lat, lon) in &state.recent {
        bytes.extend_from_slice(&lat.to_le_bytes());
        bytes.extend_from_slice(&lon.to_le_bytes());
    }
    bytes
}

fn decode_state(bytes: &[u8]) -> Option<TrackState> {
    if bytes.len() < 48 || (bytes.len() - 48) % 16 != 0 {
        return None;
    }
    let word = |i: usize| -> [u8; 8] { bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default() };
    let float = |i: usize| f64::from_le_bytes(word(i));
    let recent = (6..bytes.len() / 8).step_by(2).map(|i| (float(i), float(i + 1))).collect();
    Some(TrackState {
        anchor: (i64::from_le_bytes(word(0)), float(1), float(2)),
        cluster: (float(3), float(4), float(5)),
        recent,
    })
}

/// Brings a store written by an earlier version up to the current layout.
/// OBUs marked before have no filter state: the distance stage starts them
/// afresh (nothing is billed twice; the segment across the upgrade is lost).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('obu_marks')")?;
    let have: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
    for (column, declaration) in ADDED_MARK_COLUMNS {
        if !have.iter().any(|c| c == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE obu_marks ADD COLUMN {column} {declaration}"
            ))?;
        }
    }
    Ok(())
}

/// The end of the last segment billed to an OBU.
#[derive(Clone, Debug, PartialEq)]
pub struct BilledEnd {
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
    /// The chord the segment was measured on.
    pub chord: Option<Chord>,
    /// What the distance filter knew after it.
    pub state: TrackState,
}

/// One row of totals as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTotal {
    pub price_per_km: f64,
    pub currency: String,
    pub distance_mm: i64,
    pub segments: i64,
    pub first_fix_ms: i64,
    pub last_fix_ms: i64,
}

/// A SQLite database file holding aggregate state.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    // Readers (the gateway) use their own connection so that, in WAL mode,
    // they never wait for a commit.
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating when missing) the database and its tables.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Directory { path: dir.to_owned(), source })?;
        }
        let conn = Connection::open(path).map_err(|e| sqlite(path, e))?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA busy_timeout = 5000; {SCHEMA}"
        ))
        .map_err(|e| sqlite(path, e))?;
        migrate(&conn).map_err(|e| sqlite(path, e))?;
        let reader = Connection::open(path).map_err(|e| sqlite(path, e))?;
        reader.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| sqlite(path, e))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: Mutex::new(conn),
            reader: Mutex::new(reader),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last segment end applied for every OBU.
    pub fn marks(&self) -> Result<HashMap<String, i64>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT obu_id, last_to_ms FROM obu_marks")
            .map_err(|e| sqlite(&self.path, e))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .map_err(|e| sqlite(&self.path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| sqlite(&self.path, e))
    }

    /// Adds `deltas` and moves the OBUs' marks in one transaction.
    pub fn apply<S: AsRef<str>>(
        &self,
        deltas: &[PeriodDelta],
        marks: &[(S, BilledEnd)],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| sqlite(&self.path, e))?;
        {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO totals (obu_id, period, price_per_km, currency, distance_mm, \
                     segments, first_fix_ms, last_fix_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (obu_id, period, price_per_km, currency) DO UPDATE SET \
                     distance_mm = distance_mm + excluded.distance_mm, \
                     segments = segments + excluded.segments, \
                     first_fix_ms = min(first_fix_ms, excluded.first_fix_ms), \
                     last_fix_ms = max(last_fix_ms, excluded.last_fix_ms)",
                )
                .map_err(|e| sqlite(&self.path, e))?;
            for d in deltas {
                add.execute(params![
                    d.obu_id,
                    d.period,
                    d.price_per_km,
                    d.currency,
                    d.distance_mm,
                    d.segments,
                    d.first_fix_ms,
                    d.last_fix_ms
                ])
                .map_err(|e| sqlite(&self.path, e))?;
            }
            let mut mark = tx
                .prepare_cached(
                    "INSERT INTO obu_marks (obu_id, last_to_ms, last_lat, last_lon, chord_m, \
                     chord_bearing_deg, chord_turn_in_deg, track_state) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (obu_id) DO UPDATE SET last_to_ms = excluded.last_to_ms, \
                     last_lat = excluded.last_lat, last_lon = excluded.last_lon, \
                     chord_m = excluded.chord_m, chord_bearing_deg = excluded.chord_bearing_deg, \
                     chord_turn_in_deg = excluded.chord_turn_in_deg, \
                     track_state = excluded.track_state \
                     WHERE excluded.last_to_ms > last_to_ms",
                )
                .map_err(|e| sqlite(&self.path, e))?;
            for (obu_id, end) in marks {
                let chord = end.chord;
                let state = encode_state(&end.state);
                mark.execute(params![
                    obu_id.as_ref(),
                    end.ts_ms,
                    end.lat,
                    end.lon,
                    chord.map(|c| c.metres),
                    chord.map(|c| c.bearing_deg),
                    chord.and_then(|c| c.turn_in_deg),
                    state
                ])
                .map_err(|e| sqlite(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| sqlite(&self.path, e))
    }

    /// Every price row of one OBU in one period.
    pub fn totals(&self, obu_id: &str, period: &str) -> Result<Vec<StoredTotal>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn
            .prepare_cached(
                "SELECT price_per_km, currency, distance_mm, segments, first_fix_ms, last_fix_ms \
                 FROM totals WHERE obu_id = ?1 AND period = ?2 ORDER BY first_fix_ms",
            )
            .map_err(|e| sqlite(&self.path, e))?;
        let rows = stmt
            .query_map(params![obu_id, period], |row| {
                Ok(StoredTotal {
                    price_per_km: row.get(0)?,
                    currency: row.get(1)?,
                    distance_mm: row.get(2)?,
                    segments: row.get(3)?,
                    first_fix_ms: row.get(4)?,
                    last_fix_ms: row.get(5)?,
                })
            })
            .map_err(|e| sqlite(&self.path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| sqlite(&self.path, e))
    }

    /// Where the OBU's last billed segment ended, if it has one.
    pub fn billed_end(&self, obu_id: &str) -> Result<Option<BilledEnd>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let row = conn
            .query_row(
                "SELECT last_to_ms, last_lat, last_lon, chord_m, chord_bearing_deg, \
                 chord_turn_in_deg, track_state FROM obu_marks WHERE obu_id = ?1",
                params![obu_id],
                |row| {
                    let chord = match (row.get::<_, Option<f64>>(3)?, row.get(4)?) {
                        (Some(metres), Some(bearing_deg)) => {
                            Some(Chord { metres, bearing_deg, turn_in_deg: row.get(5)? })
                        }
                        _ => None,
                    };
                    let end = (row.get(0)?, row.get(1)?, row.get(2)?, chord);
                    Ok((end, row.get::<_, Option<Vec<u8>>>(6)?))
                },
            )
            .optional()
            .map_err(|e| sqlite(&self.path, e))?;
        // A mark without filter state comes from a store of an earlier version.
        let Some(((ts_ms, lat, lon, chord), Some(state))) = row else {
            return Ok(None);
        };
        match decode_state(&state) {
            Some(state) => Ok(Some(BilledEnd { ts_ms, lat, lon, chord, state })),
            None => {
                tracing::warn!(obu_id, "unreadable filter state in the store; starting afresh");
                Ok(None)
            }
        }
    }

    /// Whether the OBU has any total at all (tells "unknown OBU" from "no
    /// distance this period").
    pub fn knows(&self, obu_id: &str) -> Result<bool, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row("SELECT 1 FROM obu_marks WHERE obu_id = ?1", params![obu_id], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| sqlite(&self.path, e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-transaction rolls the transaction back; the connection stays usable.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn sqlite(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(obu: &str, mm: i64, price: f64) -> PeriodDelta {
        PeriodDelta {
            obu_id: obu.into(),
            period: "2024-05".into(),
            price_per_km: price,
            currency: "EUR".into(),
            distance_mm: mm,
            segments: 1,
            first_fix_ms: 10,
            last_fix_ms: 20,
        }
    }

    #[test]
    fn filter_state_survives_its_encoding() {
        let state = TrackState {
            anchor: (1_714_000_000_123, 50.123456789012, -11.9),
            cluster: (3.0, 150.3, -35.7),
            recent: [(50.1, 11.9), (50.2, -11.8), (-0.5, 179.9)].into_iter().collect(),
        };
        assert_eq!(decode_state(&encode_state(&state)), Some(state));
        assert_eq!(decode_state(&[1, 2, 3]), None, "truncated state is refused");
    }

    #[test]
    fn a_store_of_the_first_layout_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE obu_marks (obu_id TEXT PRIMARY KEY NOT NULL, last_to_ms INTEGER NOT NULL);
             INSERT INTO obu_marks VALUES ('a', 20);",
        )
        .unwrap();
        drop(old);

        let store = SqliteStore::open(&path, Durability::Normal).unwrap();
        assert_eq!(store.marks().unwrap().get("a"), Some(&20));
        assert_eq!(store.billed_end("a").unwrap(), None, "no filter state was kept then");
        let end = BilledEnd {
            ts_ms: 30,
            lat: 50.0,
            lon: 11.0,
            chord: None,
            state: TrackState::default(),
        };
        store.apply(&[], &[("a", end.clone())]).unwrap();
        assert_eq!(store.billed_end("a").unwrap(), Some(end));
    }

    #[test]
    fn totals_and_marks_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/toll.db");
        {
            let store = SqliteStore::open(&path, Durability::Normal).unwrap();
            let chord = Chord { metres: 12.5, bearing_deg: 90.0, turn_in_deg: Some(-3.0) };
            let state = TrackState::default();
            let end = |ts_ms| BilledEnd {
                ts_ms,
                lat: 50.0,
                lon: 11.0,
                chord: Some(chord),
                state: state.clone(),
            };
            store
                .apply(&[delta("a", 1500, 0.19), delta("a", 500, 0.19)], &[("a", end(20))])
                .unwrap();
            store.apply(&[delta("a", 1000, 0.25)], &[("a", end(30))]).unwrap();
            let older = BilledEnd { ts_ms: 25, lat: 0.0, lon: 0.0, chord: None, state };
            store.apply(&[], &[("a", older)]).unwrap();
        }
        let store = SqliteStore::open(&path, Durability::Normal).unwrap();
        let rows = store.totals("a", "2024-05").unwrap();
        let mm: Vec<(f64, i64)> = rows.iter().map(|r| (r.price_per_km, r.distance_mm)).collect();
        assert_eq!(mm, vec![(0.19, 2000), (0.25, 1000)]);
        assert_eq!(store.marks().unwrap().get("a"), Some(&30));
        let end = store.billed_end("a").unwrap().unwrap();
        assert_eq!((end.ts_ms, end.lat), (30, 50.0), "an older end never replaces a newer one");
        assert_eq!(end.chord.and_then(|c| c.turn_in_deg), Some(-3.0));
        assert!(store.knows("a").unwrap());
        assert!(!store.knows("b").unwrap());
    }
}
