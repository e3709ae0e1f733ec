//! The experiment store (SQLite through rusqlite): sweeps, runs, per-epoch metrics,
//! checkpoints and verification results. The only module that writes SQL.

mod details;
pub mod filter;
mod leaderboard;
mod lifecycle;
pub mod migrations;
mod queries;
pub(crate) mod records;
mod rungs;
mod studies;
mod writes;

pub use leaderboard::{bench_fill, bench_fill_with, maximize, BenchConfig, METRICS};
pub use lifecycle::{
    hostname, process_alive, process_alive_since, process_start_time, STALE_AFTER,
};

pub use details::{
    DevPredictions, Misclassified, PackedDistribution, ScoreDistributionRecord, MAX_DEV_IMAGES,
    MAX_MISCLASSIFIED,
};
pub use records::*;
pub use rungs::{RungRecord, PROMOTED, PRUNED};
pub use studies::{StudyRecord, TrialRecord};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// Store errors name the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: store schema version {found} is newer than this runner understands ({supported}); upgrade runner")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("no run `{0}` in the store")]
    NoSuchRun(String),
    #[error("run reference `{reference}` is ambiguous: it matches runs {matches}")]
    Ambiguous { reference: String, matches: String },
}

/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether an error is SQLite's "database is locked / busy".
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// This store's own id (16 hex digits, made when the store was created): its first 8 are
    /// in the name of every run and sweep folder it creates, so two stores in one folder never
    /// write the same files.
    store_id: String,
}

/// The folder a configuration's `checkpoint.dir` names, absolute from the working directory
/// (so that the paths stored work from any directory).
pub fn checkpoint_base(config: &serde_json::Value) -> PathBuf {
    let dir = config
        .get("checkpoint")
        .and_then(|c| c.get("dir"))
        .and_then(|d| d.as_str())
        .unwrap_or("runs");
    std::env::current_dir()
        .map(|cwd| cwd.join(dir))
        .unwrap_or_else(|_| PathBuf::from(dir))
}

/// The current time as RFC 3339 UTC with milliseconds (sorts as text).
pub fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(d.as_secs() as i64, d.subsec_millis())
}

fn format_utc(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Store {
    /// Opens (creating and migrating as needed) the store at `path`: WAL mode, a busy timeout.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
            }
        }
        // Opening a new store from several processes at once can meet SQLITE_BUSY where
        // SQLite does not call the busy handler (switching to WAL, a read lock upgrading):
        // retry the whole setup for as long as the busy timeout.
        let started = std::time::Instant::now();
        let mut conn = loop {
            match Self::setup(path) {
                Ok(c) => break c,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(err(e)),
            }
        };
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if found > migrations::SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                supported: migrations::SCHEMA_VERSION,
            });
        }
        loop {
            match migrations::migrate(&mut conn) {
                Ok(_) => break,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(err(e)),
            }
        }
        let store_id: String = conn
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'store_id'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            store_id,
        })
    }

    /// A connection with the store's settings: busy timeout, WAL, foreign keys.
    fn setup(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's id (`store_meta`).
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The part of the store id in its folder names: its first 8 hex digits.
    pub fn folder_tag(&self) -> &str {
        &self.store_id[..8.min(self.store_id.len())]
    }

    /// The name of a sweep's Slurm folder: `sweep-<id>-<folder tag>`.
    pub fn sweep_folder_name(&self, sweep_id: i64) -> String {
        format!("sweep-{sweep_id}-{}", self.folder_tag())
    }

    /// The schema version of the open store.
    /// A number that changes whenever another connection (process) commits to the store
    /// (SQLite's `PRAGMA data_version`): `report --watch` polls it.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in an IMMEDIATE transaction (the write lock is taken up front, so concurrent
    /// writers queue on the busy timeout instead of failing on lock upgrade).
    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let out = f(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Direct access for migrations tests and the benchmark that fills a large store.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_dates() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_utc(1_795_000_000, 0), "2026-11-18T11:06:40.000Z");
    }
}
