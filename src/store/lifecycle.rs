//! A run's lifecycle in the store: sweeps, creating and claiming runs (atomically across
//! processes), heartbeats, finishing, Slurm submission and settling, and whether a run's
//! claimant is gone (stale).

use super::*;

impl Store {
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

    /// The newest sweep of `recipe` that planned every run of `run_ids`, if any.
    pub fn sweep_covering(&self, recipe: &str, run_ids: &[i64]) -> Result<Option<i64>, StoreError> {
        let ids = serde_json::to_string(run_ids).unwrap_or_else(|_| "[]".into());
        self.conn
            .query_row(
                "SELECT s.id FROM sweeps s WHERE s.recipe = ?1
                   AND (SELECT COUNT(DISTINCT sr.run_id) FROM sweep_runs sr
                        WHERE sr.sweep_id = s.id
                          AND sr.run_id IN (SELECT value FROM json_each(?2))) = ?3
                 ORDER BY s.id DESC LIMIT 1",
                params![recipe, ids, run_ids.len() as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
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
        let tag = self.folder_tag().to_string();
        self.write(|tx| insert_queued_tx(tx, &tag, run))
    }

    /// Claims a queued (or stale) run for this process: status `running`, pid, heartbeat.
    /// Returns false when another live process holds it. Atomic across processes.
    pub fn claim_run(&mut self, id: i64, stale_after: Duration) -> Result<bool, StoreError> {
        let pid = std::process::id() as i64;
        let cutoff = stale_cutoff(stale_after);
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE runs SET status = 'running', pid = ?2, heartbeat = ?3, pid_start = ?5,
                        host = ?6, started = COALESCE(started, ?3), error = NULL
                 WHERE id = ?1 AND (status = 'queued'
                                    OR (status = 'running' AND (heartbeat IS NULL OR heartbeat < ?4)))",
                params![id, pid, now(), cutoff, own_start_time(), hostname()],
            )?;
            Ok(n == 1)
        })
    }

    /// Finds or creates the run for `new.key` and claims it for this process, atomically:
    /// a `done` run is reported, a run held by a live process is reported busy, anything else
    /// (queued, interrupted, a dead claimant's running run, failed / diverged runs when
    /// `retry_failed`, paused / pruned runs when `continue_stopped`) is claimed. Two processes
    /// never claim the same key.
    pub fn claim_key(
        &mut self,
        new: &NewRun,
        stale_after: Duration,
        retry_failed: bool,
        continue_stopped: bool,
    ) -> Result<Claim, StoreError> {
        let pid = std::process::id() as i64;
        let pid_start = own_start_time();
        let host = hostname();
        let cutoff = stale_cutoff(stale_after);
        let tag = self.folder_tag().to_string();
        self.write(|tx| {
            let existing = newest_of_key(tx, &new.key)?;
            let claim = |tx: &rusqlite::Transaction, id: i64| -> rusqlite::Result<()> {
                tx.execute(
                    "UPDATE runs SET status = 'running', pid = ?2, host = ?3, heartbeat = ?4,
                            pid_start = ?5, started = COALESCE(started, ?4), finished = NULL,
                            error = NULL
                     WHERE id = ?1",
                    params![id, pid, host, now(), pid_start],
                )?;
                Ok(())
            };
            match existing {
                Some(ClaimRow { id, status, .. }) if status == "done" => Ok(Claim::Done(id)),
                // its Slurm task holds it: no heartbeat to go stale, so no takeover
                Some(ClaimRow { id, status, .. }) if status == "submitted" => {
                    Ok(Claim::Submitted(id))
                }
                Some(row) if row.status == "running" => {
                    if row.claimant_gone(&cutoff) {
                        claim(tx, row.id)?;
                        Ok(Claim::Claimed {
                            id: row.id,
                            resumed: true,
                        })
                    } else {
                        Ok(Claim::Busy(row.id))
                    }
                }
                Some(ClaimRow { id, status, .. })
                    if status == "queued"
                        || status == "interrupted"
                        || (retry_failed && (status == "failed" || status == "diverged"))
                        || (continue_stopped && (status == "paused" || status == "pruned")) =>
                {
                    claim(tx, id)?;
                    Ok(Claim::Claimed {
                        id,
                        resumed: status != "queued",
                    })
                }
                Some(ClaimRow { id, status, .. }) => Ok(Claim::Finished {
                    id,
                    status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
                }),
                None => {
                    let id = insert_queued_tx(tx, &tag, new)?;
                    claim(tx, id)?;
                    Ok(Claim::Claimed { id, resumed: false })
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
        self.submit_key_continuing(new, stale_after, retry_failed, false)
    }

    /// `submit_key`, and with `continue_stopped` also a `paused` or `pruned` run (a halving
    /// sweep's promoted runs, continued from their rung checkpoints).
    pub fn submit_key_continuing(
        &mut self,
        new: &NewRun,
        stale_after: Duration,
        retry_failed: bool,
        continue_stopped: bool,
    ) -> Result<Submit, StoreError> {
        let cutoff = stale_cutoff(stale_after);
        let tag = self.folder_tag().to_string();
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
                Some(ClaimRow { id, status, .. }) if status == "done" => Ok(Submit::Done(id)),
                Some(ClaimRow { id, status, .. }) if status == "submitted" => {
                    Ok(Submit::AlreadySubmitted(id))
                }
                Some(row) if row.status == "running" => {
                    if row.claimant_gone(&cutoff) {
                        submit(tx, row.id)?;
                        Ok(Submit::Submitted {
                            id: row.id,
                            previous: Some(RunStatus::Running),
                        })
                    } else {
                        Ok(Submit::Busy(row.id))
                    }
                }
                Some(ClaimRow { id, status, .. })
                    if status == "queued"
                        || status == "interrupted"
                        || (retry_failed && (status == "failed" || status == "diverged"))
                        || (continue_stopped && (status == "paused" || status == "pruned")) =>
                {
                    submit(tx, id)?;
                    Ok(Submit::Submitted {
                        id,
                        previous: RunStatus::parse(&status),
                    })
                }
                Some(ClaimRow { id, status, .. }) => Ok(Submit::Finished {
                    id,
                    status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
                }),
                None => {
                    let id = insert_queued_tx(tx, &tag, new)?;
                    submit(tx, id)?;
                    Ok(Submit::Submitted { id, previous: None })
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
}

/// The run a claim or submission of `key` looks at: its done run, else its running or
/// submitted one, else its newest.
fn newest_of_key(tx: &rusqlite::Transaction, key: &str) -> rusqlite::Result<Option<ClaimRow>> {
    tx.query_row(
        "SELECT id, status, pid, pid_start, host, heartbeat FROM runs WHERE key = ?1 ORDER BY
           CASE status WHEN 'done' THEN 0 WHEN 'running' THEN 1 WHEN 'submitted' THEN 1 ELSE 2 END, id DESC LIMIT 1",
        params![key],
        |r| {
            Ok(ClaimRow {
                id: r.get(0)?,
                status: r.get(1)?,
                pid: r.get(2)?,
                pid_start: r.get(3)?,
                host: r.get(4)?,
                heartbeat: r.get(5)?,
            })
        },
    )
    .optional()
}

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

/// The run a claim or submission looks at.
struct ClaimRow {
    id: i64,
    status: String,
    pid: Option<i64>,
    pid_start: Option<i64>,
    host: Option<String>,
    heartbeat: Option<String>,
}

impl ClaimRow {
    /// Whether its claimant is gone (see `claimant_gone_at`).
    fn claimant_gone(&self, cutoff: &str) -> bool {
        claimant_gone_at(
            self.host.as_deref(),
            self.pid,
            self.pid_start,
            self.heartbeat.as_deref(),
            cutoff,
        )
    }
}

/// Whether the claimant of a `running` run is gone: on this host, its process (pid and start
/// time, so a reused pid does not count) has exited, however fresh its last heartbeat; on
/// another host (or with no process recorded), its heartbeat is older than `cutoff`.
fn claimant_gone_at(
    host: Option<&str>,
    pid: Option<i64>,
    pid_start: Option<i64>,
    heartbeat: Option<&str>,
    cutoff: &str,
) -> bool {
    match (host, pid) {
        (Some(h), Some(p)) if h == hostname() => !process_alive_since(p, pid_start),
        _ => heartbeat.is_none_or(|hb| hb < cutoff),
    }
}

/// `claimant_gone_at` with the `STALE_AFTER` window: whether reading commands show a
/// `running` run as `interrupted (stale)`.
pub(crate) fn claimant_gone(
    host: Option<&str>,
    pid: Option<i64>,
    pid_start: Option<i64>,
    heartbeat: Option<&str>,
) -> bool {
    claimant_gone_at(host, pid, pid_start, heartbeat, &stale_cutoff(STALE_AFTER))
}

/// How long a claimed run may go without a heartbeat before it counts as stale (its
/// heartbeat is refreshed every few seconds while it trains).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Inserts a new run as `queued`, with its folder (`set_new_run_dir`); the claim or the
/// submission that follows, in the same transaction, sets its status.
fn insert_queued_tx(tx: &rusqlite::Transaction, tag: &str, run: &NewRun) -> rusqlite::Result<i64> {
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
    let id = tx.last_insert_rowid();
    set_new_run_dir(tx, tag, run, id)?;
    Ok(id)
}

/// Records a new run's folder: `<checkpoint.dir>/<key>/run-<id>-<folder tag>`.
fn set_new_run_dir(
    tx: &rusqlite::Transaction,
    tag: &str,
    run: &NewRun,
    id: i64,
) -> rusqlite::Result<()> {
    let dir = checkpoint_base(&run.config)
        .join(&run.key)
        .join(format!("run-{id}-{tag}"));
    tx.execute(
        "UPDATE runs SET dir = ?2 WHERE id = ?1",
        params![id, dir.display().to_string()],
    )?;
    Ok(())
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`, clock ticks after boot).
pub fn process_start_time(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // after the command name in parentheses: field 3 (state) is the first
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// This process's start time (see `process_start_time`).
fn own_start_time() -> Option<i64> {
    process_start_time(std::process::id() as i64)
}

/// Whether the process `pid` exists and, where `start` is known, is the one that started
/// then (not a later process that reuses the pid).
pub fn process_alive_since(pid: i64, start: Option<i64>) -> bool {
    if !process_alive(pid) {
        return false;
    }
    match (start, process_start_time(pid)) {
        (Some(want), Some(now)) => want == now,
        _ => true,
    }
}
