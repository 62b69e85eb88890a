//! The one interface behind which stages keep their state.
//!
//! A store is named by a URL in the pipeline file. Today that is embedded
//! SQLite (`sqlite://var/toll.db`, relative to the working directory, or
//! `sqlite:///abs/path.db`); the aggregate keeps its totals and its per-OBU
//! high-water marks there, in one transaction per group of batches, so a
//! restart resumes exactly where the last commit left off.

mod sqlite;

use std::path::PathBuf;

pub use sqlite::{BilledEnd, PeriodDelta, SqliteStore, StoredTotal};

/// Opening or using the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store url `{0}`; expected sqlite://PATH")]
    Url(String),
    #[error("cannot create directory {path} for the store")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sqlite error on {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// How hard each commit works to survive a crash of the machine (a crash of
/// the process never loses a commit in either mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every commit reaches the disk before it is acknowledged.
    #[default]
    Full,
    /// Commits may be lost on power failure, never on a process crash.
    Normal,
}

/// Where a store URL points.
pub fn sqlite_path(url: &str) -> Result<PathBuf, StoreError> {
    let path = url.strip_prefix("sqlite://").ok_or_else(|| StoreError::Url(url.to_owned()))?;
    if path.is_empty() {
        return Err(StoreError::Url(url.to_owned()));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_relative_and_absolute_paths() {
        assert_eq!(sqlite_path("sqlite://var/toll.db").unwrap(), PathBuf::from("var/toll.db"));
        assert_eq!(sqlite_path("sqlite:///tmp/t.db").unwrap(), PathBuf::from("/tmp/t.db"));
        assert!(sqlite_path("postgres://x").is_err());
        assert!(sqlite_path("sqlite://").is_err());
    }
}
