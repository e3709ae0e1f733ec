//! Executing planned runs: claim each run in the store (so two processes never run the same
//! run), keep a heartbeat while it trains, skip runs already done, resume interrupted runs (or
//! runs whose process died) from their last checkpoint, and summarise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::progress::Reporter;
use super::run::{execute, RunOutcome, RunRequest, StartFrom};
use super::EngineError;
use crate::plan::PlannedRun;
use crate::store::{Claim, NewRun, RunStatus, Store};

/// How long a claimed run may go without a heartbeat before another process may take it over.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    pub max_runs: Option<usize>,
    pub retry_failed: bool,
    pub fail_fast: bool,
}

/// One line of a sweep's summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryRow {
    /// The sweep this invocation recorded (`runner leaderboard --sweep ID`).
    pub sweep_id: i64,
    pub index: usize,
    pub key: String,
    pub run_id: Option<i64>,
    pub overrides: BTreeMap<String, serde_json::Value>,
    pub status: String,
    /// What this process did: "trained", "resumed", "skipped (done)", "skipped (running elsewhere)", ...
    pub action: String,
    pub seconds: f64,
}

/// The newest kept checkpoint of a run whose file still exists.
pub fn latest_checkpoint(store: &Store, run_id: i64) -> Result<Option<PathBuf>, EngineError> {
    let mut kept: Vec<_> = store
        .checkpoints(run_id)?
        .into_iter()
        .filter(|c| c.kept && Path::new(&c.path).is_file())
        .collect();
    // Ordered by epoch then write order: the last one is the newest state.
    Ok(kept.pop().map(|c| PathBuf::from(c.path)))
}

/// Where a claimed run starts: its newest checkpoint when it had started before.
pub fn start_for(store: &mut Store, run_id: i64, resumed: bool) -> Result<StartFrom, EngineError> {
    if !resumed {
        return Ok(StartFrom::Scratch);
    }
    match latest_checkpoint(store, run_id)? {
        Some(p) => Ok(StartFrom::Continue(p)),
        None => {
            store.truncate_epochs(run_id, 0)?;
            Ok(StartFrom::Scratch)
        }
    }
}

/// The record of a planned run.
pub fn new_run(recipe_path: &str, run: &PlannedRun, sweep_id: Option<i64>) -> NewRun {
    NewRun {
        key: run.key.clone(),
        recipe: recipe_path.to_string(),
        config: serde_json::to_value(&run.recipe).unwrap_or_default(),
        overrides: serde_json::to_value(&run.overrides).unwrap_or_default(),
        data_fingerprint: run.data_fingerprint.clone(),
        sweep_id,
        parent_id: None,
        resumed_from: None,
    }
}

/// Keeps a run's heartbeat fresh from a second connection while it trains.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(db: &Path, run_id: i64) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let db = db.to_path_buf();
        let handle = std::thread::spawn(move || {
            let Ok(mut store) = Store::open(&db) else {
                return;
            };
            let mut last = Instant::now();
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= HEARTBEAT_EVERY {
                    let _ = store.heartbeat(run_id);
                    last = Instant::now();
                }
            }
        });
        Heartbeat {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs every planned run not yet done, one after another.
pub fn execute_sweep(
    store: &mut Store,
    recipe_path: &str,
    runs: &[PlannedRun],
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<Vec<SummaryRow>, EngineError> {
    let sweep_id = store.create_sweep(recipe_path, runs.len())?;
    let bar = reporter.sweep_bar(runs.len() as u64);
    let mut rows = Vec::new();
    let mut executed = 0usize;
    // Why the runs left are not started: "interrupted" or "--fail-fast".
    let mut stopped: Option<&str> = None;
    for run in runs {
        let mut row = SummaryRow {
            sweep_id,
            index: run.index,
            key: run.key.clone(),
            run_id: None,
            overrides: run.overrides.clone(),
            status: "planned".into(),
            action: String::new(),
            seconds: 0.0,
        };
        if stopped.is_some() || opts.max_runs.is_some_and(|m| executed >= m) {
            row.action = format!("not started ({})", stopped.unwrap_or("--max-runs"));
            if let Some(s) = store.status_of_key(&run.key)? {
                row.status = s.as_str().into();
            }
            rows.push(row);
            bar.inc(1);
            continue;
        }
        let claim = store.claim_key(
            &new_run(recipe_path, run, Some(sweep_id)),
            STALE_AFTER,
            opts.retry_failed,
        )?;
        let (Claim::Done(id)
        | Claim::Busy(id)
        | Claim::Finished { id, .. }
        | Claim::Claimed { id, .. }) = claim;
        store.add_to_sweep(sweep_id, id)?;
        match claim {
            Claim::Done(id) => {
                row.run_id = Some(id);
                row.status = "done".into();
                row.action = "skipped (done)".into();
            }
            Claim::Busy(id) => {
                row.run_id = Some(id);
                row.status = "running".into();
                row.action = "skipped (running elsewhere)".into();
            }
            Claim::Finished { id, status } => {
                row.run_id = Some(id);
                row.status = status.as_str().into();
                row.action = "skipped (use --retry-failed)".into();
            }
            Claim::Claimed { id, resumed } => {
                row.run_id = Some(id);
                let started = Instant::now();
                let start = start_for(store, id, resumed)?;
                row.action = match &start {
                    StartFrom::Continue(_) => "resumed".into(),
                    _ => "trained".into(),
                };
                bar.set_message(format!("run {id} ({})", run.key));
                let _hb = Heartbeat::start(store.path(), id);
                let outcome = execute(
                    store,
                    RunRequest {
                        run_id: id,
                        key: run.key.clone(),
                        recipe: run.recipe.clone(),
                        start,
                        reporter,
                        stop: stop.clone(),
                    },
                );
                executed += 1;
                row.seconds = started.elapsed().as_secs_f64();
                match outcome {
                    Ok(RunOutcome::Done(_)) => row.status = RunStatus::Done.as_str().into(),
                    Ok(RunOutcome::Interrupted) => {
                        row.status = RunStatus::Interrupted.as_str().into();
                        stopped = Some("interrupted");
                    }
                    Ok(RunOutcome::Diverged(why)) => {
                        row.status = RunStatus::Diverged.as_str().into();
                        reporter.info(&format!("run {id} diverged: {why}"));
                        if opts.fail_fast {
                            stopped = Some("--fail-fast");
                        }
                    }
                    Err(e) => {
                        row.status = RunStatus::Failed.as_str().into();
                        reporter.info(&format!("run {id} failed: {e}"));
                        if opts.fail_fast {
                            stopped = Some("--fail-fast");
                        }
                    }
                }
            }
        }
        rows.push(row);
        bar.inc(1);
        if stop.load(Ordering::SeqCst) {
            stopped = Some("interrupted");
        }
    }
    bar.finish_and_clear();
    Ok(rows)
}
