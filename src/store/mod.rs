//! The experiment store (SQLite through rusqlite): sweeps, runs, per-epoch metrics,
//! checkpoints and verification results. The only module that writes SQL.

pub mod filter;
pub mod migrations;
pub(crate) mod records;

pub use records::*;

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
        Ok(Store {
            conn,
            path: path.to_path_buf(),
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

    /// The schema version of the open store.
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

    /// Records a sweep and returns its id.
    pub fn create_sweep(&mut self, recipe: &str, planned: usize) -> Result<i64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO sweeps (recipe, created, planned) VALUES (?1, ?2, ?3)",
                params![recipe, now(), planned as i64],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Whether a sweep with this id was recorded.
    pub fn sweep_exists(&self, sweep_id: i64) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM sweeps WHERE id = ?1",
                params![sweep_id],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| self.err(e))
    }

    /// Records that a sweep planned a run (new or already there).
    pub fn add_to_sweep(&mut self, sweep_id: i64, run_id: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO sweep_runs (sweep_id, run_id) VALUES (?1, ?2)",
                params![sweep_id, run_id],
            )?;
            Ok(())
        })
    }

    /// Inserts a run as `queued` and returns its id.
    pub fn insert_run(&mut self, run: &NewRun) -> Result<i64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO runs (key, recipe, config, overrides, status, created, host, version,
                                   data_fingerprint, sweep_id, parent_id, resumed_from)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    run.key,
                    run.recipe,
                    run.config.to_string(),
                    run.overrides.to_string(),
                    now(),
                    hostname(),
                    env!("CARGO_PKG_VERSION"),
                    run.data_fingerprint,
                    run.sweep_id,
                    run.parent_id,
                    run.resumed_from,
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Claims a queued (or stale) run for this process: status `running`, pid, heartbeat.
    /// Returns false when another live process holds it. Atomic across processes.
    pub fn claim_run(&mut self, id: i64, stale_after: Duration) -> Result<bool, StoreError> {
        let pid = std::process::id() as i64;
        let cutoff = stale_cutoff(stale_after);
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE runs SET status = 'running', pid = ?2, heartbeat = ?3,
                        started = COALESCE(started, ?3), error = NULL
                 WHERE id = ?1 AND (status = 'queued'
                                    OR (status = 'running' AND (heartbeat IS NULL OR heartbeat < ?4)))",
                params![id, pid, now(), cutoff],
            )?;
            Ok(n == 1)
        })
    }

    /// Finds or creates the run for `new.key` and claims it for this process, atomically:
    /// a `done` run is reported, a run held by a live process is reported busy, anything else
    /// (queued, interrupted, a dead claimant's running run, and failed / diverged runs when
    /// `retry_failed`) is claimed. Two processes never claim the same key.
    pub fn claim_key(
        &mut self,
        new: &NewRun,
        stale_after: Duration,
        retry_failed: bool,
    ) -> Result<Claim, StoreError> {
        let pid = std::process::id() as i64;
        let host = hostname();
        let cutoff = stale_cutoff(stale_after);
        self.write(|tx| {
            let existing = newest_of_key(tx, &new.key)?;
            let claim = |tx: &rusqlite::Transaction, id: i64| -> rusqlite::Result<()> {
                tx.execute(
                    "UPDATE runs SET status = 'running', pid = ?2, host = ?3, heartbeat = ?4,
                            started = COALESCE(started, ?4), finished = NULL, error = NULL
                     WHERE id = ?1",
                    params![id, pid, host, now()],
                )?;
                Ok(())
            };
            match existing {
                Some((id, status, _, _, _)) if status == "done" => Ok(Claim::Done(id)),
                // its Slurm task holds it: no heartbeat to go stale, so no takeover
                Some((id, status, _, _, _)) if status == "submitted" => Ok(Claim::Submitted(id)),
                Some((id, status, run_pid, run_host, heartbeat)) if status == "running" => {
                    let dead_here = run_host.as_deref() == Some(host.as_str())
                        && run_pid.is_some_and(|p| !process_alive(p));
                    let stale = heartbeat.is_none_or(|h| h < cutoff);
                    if dead_here || stale {
                        claim(tx, id)?;
                        Ok(Claim::Claimed { id, resumed: true })
                    } else {
                        Ok(Claim::Busy(id))
                    }
                }
                Some((id, status, _, _, _))
                    if status == "queued"
                        || status == "interrupted"
                        || (retry_failed && (status == "failed" || status == "diverged")) =>
                {
                    claim(tx, id)?;
                    Ok(Claim::Claimed {
                        id,
                        resumed: status != "queued",
                    })
                }
                Some((id, status, _, _, _)) => Ok(Claim::Finished {
                    id,
                    status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
                }),
                None => {
                    tx.execute(
                        "INSERT INTO runs (key, recipe, config, overrides, status, created, host, version,
                                           data_fingerprint, sweep_id, parent_id, resumed_from, pid,
                                           heartbeat, started)
                         VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?5, ?5)",
                        params![
                            new.key,
                            new.recipe,
                            new.config.to_string(),
                            new.overrides.to_string(),
                            now(),
                            host,
                            env!("CARGO_PKG_VERSION"),
                            new.data_fingerprint,
                            new.sweep_id,
                            new.parent_id,
                            new.resumed_from,
                            pid,
                        ],
                    )?;
                    Ok(Claim::Claimed {
                        id: tx.last_insert_rowid(),
                        resumed: false,
                    })
                }
            }
        })
    }

    /// Creates a new run (e.g. `--force`, or a resume into a linked run) already claimed.
    pub fn create_claimed(&mut self, new: &NewRun) -> Result<i64, StoreError> {
        let id = self.insert_run(new)?;
        self.claim_run(id, Duration::ZERO)?;
        Ok(id)
    }

    /// Refreshes this process's heartbeat on a running run.
    pub fn heartbeat(&mut self, id: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE runs SET heartbeat = ?2 WHERE id = ?1 AND status = 'running'",
                params![id, now()],
            )?;
            Ok(())
        })
    }

    /// Records the run and checkpoint a run started from (`model.init_from = { recipe = ... }`).
    pub fn set_init_from(
        &mut self,
        id: i64,
        parent: i64,
        checkpoint: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| set_init_from_tx(tx, id, parent, checkpoint))
    }

    /// Sets a run's final (or interrupted) status, with an error text where there is one.
    pub fn finish_run(
        &mut self,
        id: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE runs SET status = ?2, finished = ?3, error = ?4, heartbeat = NULL WHERE id = ?1",
                params![id, status.as_str(), now(), error],
            )?;
            Ok(())
        })
    }

    /// Records (or replaces, on resume) one epoch's metrics.
    pub fn record_epoch(&mut self, run_id: i64, m: &EpochMetrics) -> Result<(), StoreError> {
        self.write(|tx| record_epoch_tx(tx, run_id, m))
    }

    /// Where an epoch's wall time went (the epoch's row exists: it is written first).
    pub fn record_phases(
        &mut self,
        run_id: i64,
        epoch: u32,
        phases: &PhaseSeconds,
    ) -> Result<(), StoreError> {
        self.write(|tx| record_phases_tx(tx, run_id, epoch, phases))
    }

    /// Deletes epochs after `epoch` (a resume from an earlier checkpoint recomputes them).
    pub fn truncate_epochs(&mut self, run_id: i64, after_epoch: u32) -> Result<(), StoreError> {
        self.write(|tx| truncate_epochs_tx(tx, run_id, after_epoch))
    }

    /// Records a written checkpoint.
    pub fn record_checkpoint(&mut self, c: &CheckpointRecord) -> Result<i64, StoreError> {
        self.write(|tx| record_checkpoint_tx(tx, c))
    }

    /// Marks a run's checkpoint of `epoch` as deleted.
    pub fn mark_checkpoint_deleted(&mut self, run_id: i64, epoch: u32) -> Result<(), StoreError> {
        self.write(|tx| mark_checkpoint_deleted_tx(tx, run_id, epoch))
    }

    /// Marks a checkpoint file (by path) as deleted.
    pub fn mark_checkpoint_deleted_path(
        &mut self,
        run_id: i64,
        path: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| mark_checkpoint_deleted_path_tx(tx, run_id, path))
    }

    /// Records images a run skipped as unreadable, first met in `epoch` (an image already
    /// recorded for the run keeps its first record).
    pub fn record_skipped_images(
        &mut self,
        run_id: i64,
        epoch: u32,
        images: &[(String, String)],
    ) -> Result<(), StoreError> {
        if images.is_empty() {
            return Ok(());
        }
        self.write(|tx| record_skipped_images_tx(tx, run_id, epoch, images))
    }

    /// Records a verification score.
    pub fn record_verification(&mut self, v: &VerificationRecord) -> Result<(), StoreError> {
        self.write(|tx| record_verification_tx(tx, v))
    }

    /// The images a run skipped as unreadable, by path.
    pub fn skipped_images(&self, run_id: i64) -> Result<Vec<SkippedImageRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, error, epoch FROM skipped_images WHERE run_id = ?1 ORDER BY path",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok(SkippedImageRecord {
                    path: r.get(0)?,
                    error: r.get(1)?,
                    epoch: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Finds or creates the run for `new.key` and marks it `submitted` (to Slurm),
    /// atomically, as `claim_key` claims one: a done run, a run a live local process trains,
    /// a run already submitted, and (without `retry_failed`) a failed or diverged run are
    /// reported; anything else is submitted (new runs are created `submitted`).
    pub fn submit_key(
        &mut self,
        new: &NewRun,
        stale_after: Duration,
        retry_failed: bool,
    ) -> Result<Submit, StoreError> {
        let host = hostname();
        let cutoff = stale_cutoff(stale_after);
        self.write(|tx| {
            let submit = |tx: &rusqlite::Transaction, id: i64| -> rusqlite::Result<()> {
                tx.execute(
                    "UPDATE runs SET status = 'submitted', pid = NULL, heartbeat = NULL,
                            finished = NULL, error = NULL, slurm_job_id = NULL,
                            slurm_task_id = NULL, slurm_log = NULL, slurm_sweep_id = ?2
                     WHERE id = ?1",
                    params![id, new.sweep_id],
                )?;
                Ok(())
            };
            match newest_of_key(tx, &new.key)? {
                Some((id, status, _, _, _)) if status == "done" => Ok(Submit::Done(id)),
                Some((id, status, _, _, _)) if status == "submitted" => {
                    Ok(Submit::AlreadySubmitted(id))
                }
                Some((id, status, run_pid, run_host, heartbeat)) if status == "running" => {
                    let dead_here = run_host.as_deref() == Some(host.as_str())
                        && run_pid.is_some_and(|p| !process_alive(p));
                    if dead_here || heartbeat.is_none_or(|h| h < cutoff) {
                        submit(tx, id)?;
                        Ok(Submit::Submitted {
                            id,
                            previous: Some(RunStatus::Running),
                        })
                    } else {
                        Ok(Submit::Busy(id))
                    }
                }
                Some((id, status, _, _, _))
                    if status == "queued"
                        || status == "interrupted"
                        || (retry_failed && (status == "failed" || status == "diverged")) =>
                {
                    submit(tx, id)?;
                    Ok(Submit::Submitted {
                        id,
                        previous: RunStatus::parse(&status),
                    })
                }
                Some((id, status, _, _, _)) => Ok(Submit::Finished {
                    id,
                    status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
                }),
                None => {
                    tx.execute(
                        "INSERT INTO runs (key, recipe, config, overrides, status, created, host, version,
                                           data_fingerprint, sweep_id, parent_id, resumed_from,
                                           slurm_sweep_id)
                         VALUES (?1, ?2, ?3, ?4, 'submitted', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?9)",
                        params![
                            new.key,
                            new.recipe,
                            new.config.to_string(),
                            new.overrides.to_string(),
                            now(),
                            host,
                            env!("CARGO_PKG_VERSION"),
                            new.data_fingerprint,
                            new.sweep_id,
                            new.parent_id,
                            new.resumed_from,
                        ],
                    )?;
                    Ok(Submit::Submitted {
                        id: tx.last_insert_rowid(),
                        previous: None,
                    })
                }
            }
        })
    }

    /// Where a submitted run's task writes its records, and how much of that log the store
    /// already holds (the part the submitting machine wrote itself).
    pub fn set_records(&mut self, run_id: i64, path: &str, offset: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE runs SET records_path = ?2, records_offset = ?3 WHERE id = ?1",
                params![run_id, path, offset],
            )?;
            Ok(())
        })
    }

    /// Records a submitted job array: the sweep's job id, and each run's (run id, array task
    /// id, task output file).
    pub fn record_submission(
        &mut self,
        sweep_id: i64,
        job_id: i64,
        tasks: &[(i64, i64, String)],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE sweeps SET slurm_job_id = ?2 WHERE id = ?1",
                params![sweep_id, job_id],
            )?;
            for (run_id, task, log) in tasks {
                tx.execute(
                    "UPDATE runs SET slurm_job_id = ?2, slurm_task_id = ?3, slurm_log = ?4
                     WHERE id = ?1",
                    params![run_id, job_id, task, log],
                )?;
            }
            Ok(())
        })
    }

    /// The Slurm job id a sweep's runs were submitted as (the last array submitted).
    pub fn sweep_job(&self, sweep_id: i64) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT slurm_job_id FROM sweeps WHERE id = ?1",
                params![sweep_id],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// Takes back a submission that `sbatch` refused: the run returns to the status it had
    /// (a new run becomes `queued`), with the reason.
    pub fn unsubmit(
        &mut self,
        run_id: i64,
        previous: Option<RunStatus>,
        error: &str,
    ) -> Result<(), StoreError> {
        let status = previous.unwrap_or(RunStatus::Queued);
        self.write(|tx| {
            tx.execute(
                "UPDATE runs SET status = ?2, error = ?3, slurm_job_id = NULL, slurm_task_id = NULL,
                        slurm_log = NULL WHERE id = ?1 AND status = 'submitted'",
                params![run_id, status.as_str(), error],
            )?;
            Ok(())
        })
    }

    /// Imports the records a submitted run's task appended to its log: `ops` are the complete
    /// records between byte `from` and byte `to`. One transaction with the new offset, applied
    /// only when the store's offset is still `from` (no other `collect` imported them
    /// meanwhile); returns whether they were applied.
    pub fn apply_records(
        &mut self,
        run_id: i64,
        ops: &[RecordOp],
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE runs SET records_offset = ?3 WHERE id = ?1 AND records_offset = ?2",
                params![run_id, from, to],
            )?;
            if n != 1 {
                return Ok(false);
            }
            for op in ops {
                match op {
                    RecordOp::Epoch(m) => record_epoch_tx(tx, run_id, m)?,
                    RecordOp::Verification(v) => record_verification_tx(
                        tx,
                        &VerificationRecord {
                            run_id,
                            ..v.clone()
                        },
                    )?,
                    RecordOp::Checkpoint(c) => {
                        record_checkpoint_tx(tx, &CheckpointRecord { run_id, ..c.clone() })?;
                    }
                    RecordOp::CheckpointDeleted { epoch } => {
                        mark_checkpoint_deleted_tx(tx, run_id, *epoch)?
                    }
                    RecordOp::CheckpointDeletedPath { path } => {
                        mark_checkpoint_deleted_path_tx(tx, run_id, path)?
                    }
                    RecordOp::TruncateEpochs { after } => truncate_epochs_tx(tx, run_id, *after)?,
                    RecordOp::Phases { epoch, phases } => {
                        record_phases_tx(tx, run_id, *epoch, phases)?
                    }
                    RecordOp::SkippedImages { epoch, images } => {
                        record_skipped_images_tx(tx, run_id, *epoch, images)?
                    }
                    RecordOp::InitFrom { run, checkpoint } => {
                        set_init_from_tx(tx, run_id, *run, checkpoint)?
                    }
                    RecordOp::Started { host, at } => {
                        tx.execute(
                            "UPDATE runs SET host = ?2, started = COALESCE(started, ?3) WHERE id = ?1",
                            params![run_id, host, at],
                        )?;
                    }
                }
            }
            Ok(true)
        })
    }

    /// Ends a submitted run with the status its task recorded, or `interrupted` when its job
    /// is gone without one; a run no longer `submitted` is left alone. Returns whether it
    /// changed.
    pub fn settle(
        &mut self,
        run_id: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE runs SET status = ?2, finished = ?3, error = ?4
                 WHERE id = ?1 AND status = 'submitted'",
                params![run_id, status.as_str(), now(), error],
            )?;
            Ok(n == 1)
        })
    }

    /// Runs submitted to Slurm at some point (all, or those a sweep submitted), oldest first;
    /// with `only_submitted`, those still `submitted`.
    pub fn slurm_runs(
        &self,
        sweep: Option<i64>,
        only_submitted: bool,
    ) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE records_path IS NOT NULL
               AND (?1 IS NULL OR slurm_sweep_id = ?1) AND (?2 = 0 OR status = 'submitted')
             ORDER BY id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sweep, only_submitted as i64], RunRow::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The status of the newest run with `key`, if any (for the planner's "done" column).
    pub fn status_of_key(&self, key: &str) -> Result<Option<RunStatus>, StoreError> {
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT status FROM runs WHERE key = ?1 ORDER BY
                   CASE status WHEN 'done' THEN 0 WHEN 'running' THEN 1 WHEN 'submitted' THEN 1 ELSE 2 END, id DESC LIMIT 1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(s.and_then(|s| RunStatus::parse(&s)))
    }

    /// The newest run with `key` (done ones first), if any.
    pub fn run_by_key(&self, key: &str) -> Result<Option<RunRow>, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM runs WHERE key = ?1 ORDER BY
                   CASE status WHEN 'done' THEN 0 WHEN 'running' THEN 1 WHEN 'submitted' THEN 1 ELSE 2 END, id DESC LIMIT 1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match id {
            Some(id) => self.run(id).map(Some),
            None => Ok(None),
        }
    }

    /// Resolves a run reference: a numeric id, or a (prefix of a) run key.
    pub fn resolve_run(&self, reference: &str) -> Result<i64, StoreError> {
        if let Ok(id) = reference.parse::<i64>() {
            let found: Option<i64> = self
                .conn
                .query_row("SELECT id FROM runs WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(id) = found {
                return Ok(id);
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM runs WHERE substr(key, 1, length(?1)) = ?1 ORDER BY id DESC")
            .map_err(|e| self.err(e))?;
        let ids: Vec<i64> = stmt
            .query_map(params![reference], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        match ids.as_slice() {
            [] => Err(StoreError::NoSuchRun(reference.to_string())),
            [id] => Ok(*id),
            many => {
                // Several runs of the same key (e.g. --force): the newest; distinct keys: ambiguous.
                let keys: std::collections::BTreeSet<String> = many
                    .iter()
                    .filter_map(|id| self.run(*id).ok().map(|r| r.key))
                    .collect();
                if keys.len() == 1 {
                    Ok(many[0])
                } else {
                    Err(StoreError::Ambiguous {
                        reference: reference.to_string(),
                        matches: many
                            .iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<RunRow, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                params![id],
                RunRow::from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NoSuchRun(id.to_string()))
    }

    /// Every run, oldest first; optionally only those of one sweep.
    pub fn runs(&self, sweep: Option<i64>) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR id IN
               (SELECT run_id FROM sweep_runs WHERE sweep_id = ?1)) ORDER BY id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sweep], RunRow::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A run's per-epoch metrics, in epoch order.
    pub fn epochs(&self, run_id: i64) -> Result<Vec<EpochMetrics>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT epoch, lr, train_loss, train_acc, val_loss, val_acc, verify_acc,
                        images_per_sec, seconds, phase_seconds
                 FROM epochs WHERE run_id = ?1 ORDER BY epoch",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], EpochMetrics::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A run's checkpoints (kept and deleted), in epoch order.
    pub fn checkpoints(&self, run_id: i64) -> Result<Vec<CheckpointRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, epoch, path, metric_name, metric, kept FROM checkpoints
                 WHERE run_id = ?1 ORDER BY epoch, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], CheckpointRecord::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A run's verification results, in epoch order.
    pub fn verification(&self, run_id: i64) -> Result<Vec<VerificationRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, epoch, split, metric, threshold, accuracy, accuracy_known,
                        impostor_rejection FROM verification WHERE run_id = ?1 ORDER BY epoch, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], VerificationRecord::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Every run's best value of `metric` over its epochs (max, or min for losses), with the
    /// run: the raw material of the leaderboard. One query.
    pub fn best_metrics(
        &self,
        metric: &str,
        maximize: bool,
    ) -> Result<Vec<(RunRow, f64)>, StoreError> {
        let column = match metric {
            "train_loss" | "train_acc" | "val_loss" | "val_acc" | "verify_acc" | "lr"
            | "images_per_sec" => metric,
            _ => return Ok(Vec::new()),
        };
        let agg = if maximize { "MAX" } else { "MIN" };
        let cols = RUN_COLUMNS
            .split(',')
            .map(|c| format!("r.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols}, b.best FROM runs r JOIN
               (SELECT run_id, {agg}({column}) AS best FROM epochs WHERE {column} IS NOT NULL
                GROUP BY run_id) b ON b.run_id = r.id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let n = RUN_COLUMNS.split(',').count();
        let rows = stmt
            .query_map([], |r| Ok((RunRow::from_row(r)?, r.get::<_, f64>(n)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Every run with its best value of each metric over its epochs (max for accuracies,
    /// min for losses, the last lr), in one query: the leaderboard's input. Configs are left
    /// as text so that a large store is not parsed unless a filter needs it.
    pub fn leaderboard_rows(&self, sweep: Option<i64>) -> Result<Vec<LeaderRow>, StoreError> {
        let sql = "SELECT r.id, r.key, r.status, r.recipe, r.sweep_id, r.overrides, r.config,
                    b.train_loss, b.train_acc, b.val_loss, b.val_acc, b.verify_acc, b.lr, b.epochs
             FROM runs r LEFT JOIN (
                SELECT run_id, MIN(train_loss) AS train_loss, MAX(train_acc) AS train_acc,
                       MIN(val_loss) AS val_loss, MAX(val_acc) AS val_acc,
                       MAX(verify_acc) AS verify_acc,
                       (SELECT e2.lr FROM epochs e2 WHERE e2.run_id = e.run_id ORDER BY e2.epoch DESC LIMIT 1) AS lr,
                       COUNT(*) AS epochs
                FROM epochs e GROUP BY run_id) b ON b.run_id = r.id
             WHERE (?1 IS NULL OR r.id IN (SELECT run_id FROM sweep_runs WHERE sweep_id = ?1))
             ORDER BY r.id";
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sweep], |r| {
                let names = [
                    "train_loss",
                    "train_acc",
                    "val_loss",
                    "val_acc",
                    "verify_acc",
                    "lr",
                ];
                let mut best = std::collections::BTreeMap::new();
                for (i, n) in names.iter().enumerate() {
                    if let Some(v) = r.get::<_, Option<f64>>(7 + i)? {
                        best.insert(n.to_string(), v);
                    }
                }
                Ok(LeaderRow {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    status: r.get(2)?,
                    recipe: r.get(3)?,
                    sweep_id: r.get(4)?,
                    overrides: serde_json::from_str(&r.get::<_, String>(5)?)
                        .unwrap_or(serde_json::Value::Null),
                    config_text: r.get(6)?,
                    best,
                    epochs: r.get::<_, Option<i64>>(13)?.unwrap_or(0),
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Direct access for migrations tests and the benchmark that fills a large store.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Fills a store with `runs` synthetic finished runs of `epochs` epochs each (for the
/// leaderboard benchmark), in one transaction.
pub fn bench_fill(store: &mut Store, runs: usize, epochs: u32) -> Result<(), StoreError> {
    store.write(|tx| {
        let mut run = tx.prepare(
            "INSERT INTO runs (key, recipe, config, overrides, status, created, host, version)
             VALUES (?1, 'bench.toml', ?2, ?3, 'done', ?4, 'bench', 'bench')",
        )?;
        let mut ep = tx.prepare(
            "INSERT INTO epochs (run_id, epoch, lr, train_loss, train_acc, val_loss, val_acc, images_per_sec, seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 100.0, 1.0)",
        )?;
        let created = now();
        for i in 0..runs {
            let lr = 0.001 * (1 + i % 100) as f64;
            let config = serde_json::json!({
                "model": {"kind": "convnext", "preset": "atto", "drop_path": (i % 3) as f64 * 0.1},
                "optimizer": {"kind": "sgd", "lr": lr, "momentum": 0.9},
                "train": {"epochs": epochs, "seed": i % 5},
            });
            let overrides = serde_json::json!({"optimizer.lr": lr});
            run.execute(params![format!("{i:016x}"), config.to_string(), overrides.to_string(), created])?;
            let id = tx.last_insert_rowid();
            for e in 1..=epochs {
                let x = ((i * 7919 + e as usize * 104_729) % 1000) as f64 / 1000.0;
                ep.execute(params![id, e, lr, 2.0 - x, x * 0.9, 2.1 - x, x * 0.85])?;
            }
        }
        Ok(())
    })
}

/// The run a claim or submission of `key` looks at: its done run, else its running or
/// submitted one, else its newest. (id, status, pid, host, heartbeat).
fn newest_of_key(tx: &rusqlite::Transaction, key: &str) -> rusqlite::Result<Option<ClaimRow>> {
    tx.query_row(
        "SELECT id, status, pid, host, heartbeat FROM runs WHERE key = ?1 ORDER BY
           CASE status WHEN 'done' THEN 0 WHEN 'running' THEN 1 WHEN 'submitted' THEN 1 ELSE 2 END, id DESC LIMIT 1",
        params![key],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )
    .optional()
}

// The writes of a run's records, each inside the caller's transaction: the store's own
// methods and `apply_records` (a Slurm task's records, imported) share them.

fn record_epoch_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    m: &EpochMetrics,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO epochs (run_id, epoch, lr, train_loss, train_acc, val_loss,
            val_acc, verify_acc, images_per_sec, seconds, phase_seconds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            run_id,
            m.epoch,
            m.lr,
            m.train_loss,
            m.train_acc,
            m.val_loss,
            m.val_acc,
            m.verify_acc,
            m.images_per_sec,
            m.seconds,
            m.phase_seconds.as_ref().map(phases_json)
        ],
    )?;
    tx.execute(
        "UPDATE runs SET heartbeat = ?2 WHERE id = ?1 AND status = 'running'",
        params![run_id, now()],
    )?;
    Ok(())
}

fn phases_json(p: &PhaseSeconds) -> String {
    serde_json::to_string(p).expect("six numbers serialize")
}

fn record_phases_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    epoch: u32,
    p: &PhaseSeconds,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE epochs SET phase_seconds = ?3 WHERE run_id = ?1 AND epoch = ?2",
        params![run_id, epoch, phases_json(p)],
    )?;
    Ok(())
}

fn truncate_epochs_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    after_epoch: u32,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM epochs WHERE run_id = ?1 AND epoch > ?2",
        params![run_id, after_epoch],
    )?;
    tx.execute(
        "DELETE FROM verification WHERE run_id = ?1 AND epoch > ?2",
        params![run_id, after_epoch],
    )?;
    Ok(())
}

fn record_checkpoint_tx(tx: &rusqlite::Transaction, c: &CheckpointRecord) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO checkpoints (run_id, epoch, path, metric_name, metric, kept, created)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
        params![c.run_id, c.epoch, c.path, c.metric_name, c.metric, now()],
    )?;
    Ok(tx.last_insert_rowid())
}

fn mark_checkpoint_deleted_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    epoch: u32,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE checkpoints SET kept = 0 WHERE run_id = ?1 AND epoch = ?2
           AND (metric_name IS NULL OR metric_name != 'interrupt')",
        params![run_id, epoch],
    )?;
    Ok(())
}

fn mark_checkpoint_deleted_path_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    path: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE checkpoints SET kept = 0 WHERE run_id = ?1 AND path = ?2",
        params![run_id, path],
    )?;
    Ok(())
}

fn record_skipped_images_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    epoch: u32,
    images: &[(String, String)],
) -> rusqlite::Result<()> {
    let mut st = tx.prepare(
        "INSERT OR IGNORE INTO skipped_images (run_id, path, error, epoch)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (path, error) in images {
        st.execute(params![run_id, path, error, epoch])?;
    }
    Ok(())
}

fn record_verification_tx(
    tx: &rusqlite::Transaction,
    v: &VerificationRecord,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO verification (run_id, epoch, split, metric, threshold, accuracy,
            accuracy_known, impostor_rejection, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            v.run_id,
            v.epoch,
            v.split,
            v.metric,
            v.threshold,
            v.accuracy,
            v.accuracy_known,
            v.impostor_rejection,
            now()
        ],
    )?;
    tx.execute(
        "UPDATE epochs SET verify_acc = ?3 WHERE run_id = ?1 AND epoch = ?2",
        params![v.run_id, v.epoch, v.accuracy],
    )?;
    Ok(())
}

fn set_init_from_tx(
    tx: &rusqlite::Transaction,
    id: i64,
    parent: i64,
    checkpoint: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE runs SET init_from_run = ?2, init_from_checkpoint = ?3 WHERE id = ?1",
        params![id, parent, checkpoint],
    )?;
    Ok(())
}

/// (id, status, pid, host, heartbeat) of the run a claim looks at.
type ClaimRow = (i64, String, Option<i64>, Option<String>, Option<String>);

fn stale_cutoff(stale_after: Duration) -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(stale_after);
    format_utc(d.as_secs() as i64, d.subsec_millis())
}

/// Whether a process with this pid exists on this machine.
pub fn process_alive(pid: i64) -> bool {
    if pid <= 0 {
        return false;
    }
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return !std::path::Path::new("/proc/self").exists(),
    };
    // A zombie (state Z) has exited.
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z")
}

/// This machine's name (for the runs table).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
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
