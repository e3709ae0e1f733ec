//! The local executor: trains planned runs one after another on this machine. It claims
//! each run in the store (so two processes never run the same run), keeps a heartbeat while it
//! trains, skips runs already done (or submitted to Slurm), resumes interrupted runs (or runs
//! whose process died) from their last checkpoint, and summarises.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SummaryRow;
use crate::engine::progress::Reporter;
use crate::engine::records::RunRecords;
use crate::engine::run::{execute, RunOutcome, RunRequest, StartFrom};
use crate::engine::EngineError;
use crate::plan::prune::EarlyStop;
use crate::plan::PlannedRun;
use crate::store::{Claim, NewRun, RunStatus, Store};

/// How long a claimed run may go without a heartbeat before another process may take it over.
pub use crate::store::STALE_AFTER;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    pub max_runs: Option<usize>,
    pub retry_failed: bool,
    pub fail_fast: bool,
    /// `[sweep.prune]` of the recipe, with its metric and direction resolved.
    pub prune: Option<crate::plan::prune::PrunePlan>,
    /// `--jobs`: runs in child processes on device slots.
    pub jobs: Option<JobsOptions>,
}

/// `--jobs N [--devices LIST] [--threads-per-run T]`.
#[derive(Debug, Clone, Default)]
pub struct JobsOptions {
    pub jobs: usize,
    pub devices: Vec<String>,
    pub threads_per_run: Option<usize>,
}

/// The newest kept checkpoint of a run whose file still exists.
pub fn latest_checkpoint(
    store: &dyn RunRecords,
    run_id: i64,
) -> Result<Option<PathBuf>, EngineError> {
    let mut kept: Vec<_> = store
        .checkpoints(run_id)?
        .into_iter()
        .filter(|c| c.kept && Path::new(&c.path).is_file())
        .collect();
    // Ordered by epoch then write order: the last one is the newest state.
    Ok(kept.pop().map(|c| PathBuf::from(c.path)))
}

/// Where a claimed run starts: its newest checkpoint when it had started before.
pub fn start_for(
    store: &mut dyn RunRecords,
    run_id: i64,
    resumed: bool,
) -> Result<StartFrom, EngineError> {
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

/// What became of one planned run.
pub(super) struct Trained {
    pub run_id: Option<i64>,
    pub status: String,
    pub action: String,
    /// Stops the runs after it: "interrupted", or "--fail-fast" after a failure.
    pub stop: Option<&'static str>,
}

/// Why a run that starts from another run's checkpoint cannot start: its parent is not done.
pub(super) fn parent_not_done(
    store: &Store,
    run: &PlannedRun,
) -> Result<Option<String>, EngineError> {
    let Some(key) = run.parent_key() else {
        return Ok(None);
    };
    Ok(match store.run_by_key(key)? {
        Some(p) if p.status() == Some(RunStatus::Done) => None,
        Some(p) => Some(format!("parent run {} {}", p.id, p.status)),
        None => Some("parent not trained".into()),
    })
}

/// Claims one planned run and trains (or resumes) it unless it is done, busy elsewhere, or
/// finished badly (without `retry_failed`).
#[allow(clippy::too_many_arguments)]
pub(super) fn train_one(
    store: &mut Store,
    run: &PlannedRun,
    sweep_id: Option<i64>,
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: &Arc<AtomicBool>,
    until_epoch: Option<u32>,
    median: Option<&EpochRuleFor>,
) -> Result<Trained, EngineError> {
    let recipe_path = run.recipe_path.display().to_string();
    // a sweep continues its paused and pruned runs (a halving sweep only those its rungs
    // promote: it does not ask for the others); one under median stopping leaves them stopped
    let claim = store.claim_key(
        &new_run(&recipe_path, run, sweep_id),
        STALE_AFTER,
        opts.retry_failed,
        sweep_id.is_some() && median.is_none(),
    )?;
    let (Claim::Done(id)
    | Claim::Busy(id)
    | Claim::Submitted(id)
    | Claim::Finished { id, .. }
    | Claim::Claimed { id, .. }) = claim;
    if let (Some(sweep), true) = (sweep_id, run.target) {
        store.add_to_sweep(sweep, id)?;
    }
    let mut t = Trained {
        run_id: Some(id),
        status: String::new(),
        action: String::new(),
        stop: None,
    };
    match claim {
        Claim::Done(_) => {
            t.status = "done".into();
            t.action = "skipped (done)".into();
        }
        Claim::Busy(_) => {
            t.status = "running".into();
            t.action = "skipped (running elsewhere)".into();
        }
        Claim::Submitted(_) => {
            t.status = RunStatus::Submitted.as_str().into();
            t.action = "skipped (submitted to Slurm)".into();
        }
        // stopped by median stopping, and killed before the decision was written
        Claim::Finished {
            status: RunStatus::Paused,
            ..
        } if median.is_some() => {
            if let Some(m) = median {
                m.record_pruned(store, id, sweep_id)?;
            }
            t.status = RunStatus::Pruned.as_str().into();
            t.action = median.map(|m| m.action()).unwrap_or_default();
        }
        Claim::Finished {
            status: RunStatus::Pruned,
            ..
        } => {
            t.status = RunStatus::Pruned.as_str().into();
            t.action = "skipped (pruned)".into();
        }
        Claim::Finished { status, .. } => {
            t.status = status.as_str().into();
            t.action = "skipped (use --retry-failed)".into();
        }
        Claim::Claimed { resumed, .. } => {
            let start = start_for(store, id, resumed)?;
            t.action = match &start {
                StartFrom::Continue(_) => "resumed".into(),
                _ => "trained".into(),
            };
            let rule = match median {
                Some(m) => m.rule(store, id)?,
                None => None,
            };
            let early_stop = match (median, &rule) {
                (Some(m), Some(r)) => Some((m.plan.metric.clone(), r.as_ref() as &dyn EarlyStop)),
                _ => None,
            };
            let _hb = Heartbeat::start(store.path(), id);
            let dir = store.run_dir(id)?;
            let outcome = execute(
                store,
                RunRequest {
                    run_id: id,
                    key: run.key.clone(),
                    recipe: run.recipe.clone(),
                    start,
                    dir,
                    reporter,
                    stop: stop.clone(),
                    until_epoch,
                    early_stop,
                },
            );
            match outcome {
                Ok(RunOutcome::Done(_)) => t.status = RunStatus::Done.as_str().into(),
                Ok(RunOutcome::Paused(_)) if median.is_some() => {
                    if let Some(m) = median {
                        m.record_pruned(store, id, sweep_id)?;
                    }
                    t.status = RunStatus::Pruned.as_str().into();
                    t.action = median.map(|m| m.action()).unwrap_or_default();
                }
                Ok(RunOutcome::Paused(_)) => t.status = RunStatus::Paused.as_str().into(),
                Ok(RunOutcome::Interrupted) => {
                    t.status = RunStatus::Interrupted.as_str().into();
                    t.stop = Some("interrupted");
                }
                Ok(RunOutcome::Diverged(why)) => {
                    t.status = RunStatus::Diverged.as_str().into();
                    reporter.info(&format!("run {id} diverged: {why}"));
                    if opts.fail_fast {
                        t.stop = Some("--fail-fast");
                    }
                }
                Err(e) => {
                    t.status = RunStatus::Failed.as_str().into();
                    reporter.info(&format!("run {id} failed: {e}"));
                    if opts.fail_fast {
                        t.stop = Some("--fail-fast");
                    }
                }
            }
        }
    }
    Ok(t)
}

/// The sweep a `runner sweep` call records its runs under: a new row, unless nothing is to be
/// trained (every planned run done) and an earlier sweep of this recipe planned them all; then
/// that sweep, so that calls which train nothing add no rows.
pub(super) fn sweep_for(
    store: &mut Store,
    recipe_path: &str,
    runs: &[PlannedRun],
) -> Result<i64, EngineError> {
    let targets = runs.iter().filter(|r| r.target).count();
    // Nothing to train (every planned run done) and an earlier sweep of this recipe planned
    // them all: that sweep, not a new row per call.
    let done_ids: Option<Vec<i64>> = runs
        .iter()
        .filter(|r| r.target)
        .map(|r| {
            Ok(store
                .run_by_key(&r.key)?
                .filter(|run| run.status() == Some(RunStatus::Done))
                .map(|run| run.id))
        })
        .collect::<Result<Vec<Option<i64>>, EngineError>>()?
        .into_iter()
        .collect();
    let earlier = match done_ids {
        Some(mut ids) if !ids.is_empty() => {
            ids.sort_unstable();
            ids.dedup();
            store.sweep_covering(recipe_path, &ids)?
        }
        _ => None,
    };
    Ok(match earlier {
        Some(id) => id,
        None => store.create_sweep(recipe_path, targets)?,
    })
}

/// The sequential loop of `execute_sweep` (and `LocalExecutor`) for a sweep already recorded.
pub(super) fn train_planned(
    store: &mut Store,
    sweep_id: i64,
    runs: &[PlannedRun],
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<Vec<SummaryRow>, EngineError> {
    // the bar counts epochs: it moves (and its ETA with it) while a run trains
    let epochs_of = |r: &PlannedRun| u64::from(r.recipe.train.epochs);
    let bar = reporter.sweep_bar(runs.iter().map(epochs_of).sum());
    let mut processed = 0u64;
    let mut rows = Vec::new();
    let mut executed = 0usize;
    // Why the runs left are not started: "interrupted" or "--fail-fast".
    let mut stopped: Option<&str> = None;
    for run in runs {
        let mut row = SummaryRow::planned(sweep_id, run);
        let not_started = match (stopped, opts.max_runs.is_some_and(|m| executed >= m)) {
            (Some(why), _) => Some(why.to_string()),
            (None, true) => Some("--max-runs".to_string()),
            (None, false) => parent_not_done(store, run)?,
        };
        if let Some(why) = not_started {
            match store.run_by_key(&run.key)? {
                // a done run is reported as done, whatever stopped the sweep
                Some(done) if done.status() == Some(RunStatus::Done) => {
                    row.run_id = Some(done.id);
                    row.status = done.status.clone();
                    row.action = "skipped (done)".into();
                    if run.target {
                        store.add_to_sweep(sweep_id, done.id)?;
                    }
                }
                other => {
                    row.action = format!("not started ({why})");
                    if let Some(r) = other {
                        row.status = r.shown_status();
                    }
                }
            }
            rows.push(row);
            // nothing to train here: out of the total, so the ETA is the work left
            bar.set_length(bar.length().unwrap_or(0).saturating_sub(epochs_of(run)));
            continue;
        }
        bar.set_message(format!("run {}/{} {}", rows.len() + 1, runs.len(), run.key));
        let reference = done_targets(store, runs, &run.key)?;
        let t = train_in_sweep(
            store, sweep_id, run, &mut row, opts, reporter, &stop, reference,
        )?;
        if row.worked() && !row.action.starts_with("pruned") {
            executed += 1;
        }
        stopped = stopped.or(t);
        if row.action == "trained" || row.action == "resumed" {
            processed += epochs_of(run);
        } else {
            bar.set_length(bar.length().unwrap_or(0).saturating_sub(epochs_of(run)));
        }
        bar.set_position(processed);
        rows.push(row);
        if stop.load(Ordering::SeqCst) {
            stopped = Some("interrupted");
        }
    }
    reporter.finish_sweep_bar();
    Ok(rows)
}

/// Trains (or resumes, or skips) one run of a recorded sweep into its summary row, with the
/// sweep's epoch rule (median stopping, or halving asked at each rung) against the `reference`
/// runs (the candidates it may compare with: fixed on the run's first claim). Returns what
/// stops the runs after it ("interrupted", "--fail-fast").
#[allow(clippy::too_many_arguments)]
pub(super) fn train_in_sweep(
    store: &mut Store,
    sweep_id: i64,
    run: &PlannedRun,
    row: &mut SummaryRow,
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: &Arc<AtomicBool>,
    reference: Vec<i64>,
) -> Result<Option<&'static str>, EngineError> {
    let started = Instant::now();
    let rule = match &opts.prune {
        Some(p) if run.target => Some(EpochRuleFor {
            plan: p.clone(),
            candidates: reference,
            epochs: run.recipe.train.epochs,
        }),
        _ => None,
    };
    let t = train_one(
        store,
        run,
        Some(sweep_id),
        opts,
        reporter,
        stop,
        None,
        rule.as_ref(),
    )?;
    row.run_id = t.run_id;
    row.status = t.status;
    row.action = t.action;
    if row.worked() {
        row.seconds = started.elapsed().as_secs_f64();
    }
    let mut stopped = t.stop;
    if stop.load(Ordering::SeqCst) {
        stopped = Some("interrupted");
    }
    Ok(stopped)
}

/// Trains the parents of a pipeline (the runs a recipe's run starts from) that are not done,
/// in order, for `runner run`; an error names the first that is not done afterwards.
pub fn train_parents(
    store: &mut Store,
    parents: &[PlannedRun],
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    // as `runner run` does for its own run: a parent that failed before is trained again
    let opts = SweepOptions {
        fail_fast: true,
        retry_failed: true,
        ..Default::default()
    };
    for run in parents {
        if let Some(why) = parent_not_done(store, run)? {
            return Err(EngineError::Other(format!(
                "{} (key {}) cannot start: {why}",
                run.recipe_path.display(),
                run.key
            )));
        }
        let t = train_one(store, run, None, &opts, reporter, &stop, None, None)?;
        if t.status != RunStatus::Done.as_str() {
            return Err(EngineError::Other(format!(
                "run {} of {} (which this recipe starts from) is {}{}",
                t.run_id.map(|i| i.to_string()).unwrap_or_default(),
                run.recipe_path.display(),
                t.status,
                if t.action.starts_with("skipped") {
                    format!(" ({})", t.action)
                } else {
                    String::new()
                }
            )));
        }
    }
    Ok(())
}

/// The epoch rule of one run of a sweep (median stopping; or halving, asked at each rung, in a
/// search sweep), and the runs it may compare with.
pub(super) struct EpochRuleFor {
    pub plan: crate::plan::prune::PrunePlan,
    /// The runs to compare with (used unless the run fixed its own when first claimed): the
    /// sweep's runs done now (median), the earlier trials (halving in a search).
    pub candidates: Vec<i64>,
    /// The run's `train.epochs` (where the rungs stop).
    pub epochs: u32,
}

impl EpochRuleFor {
    /// What a run this rule stopped shows as its action.
    fn action(&self) -> String {
        format!(
            "pruned ({})",
            if self.plan.by_rungs() {
                "halving"
            } else {
                "median"
            }
        )
    }

    /// The rule for run `id`: its stored reference runs (fixing `candidates` as those on its
    /// first claim); median stopping is None while fewer than `startup_runs` are done.
    fn rule(&self, store: &mut Store, id: i64) -> Result<Option<Box<dyn EarlyStop>>, EngineError> {
        store.set_prune_reference(id, &self.candidates)?;
        let ids = store.prune_reference(id)?.unwrap_or_default();
        let mut curves = Vec::new();
        for r in ids {
            let epochs = store.epochs(r)?;
            let last = epochs.last().map(|e| e.epoch).unwrap_or(0) as usize;
            let mut curve = vec![None; last];
            for e in &epochs {
                curve[e.epoch as usize - 1] = crate::engine::run::metrics_map(e)
                    .get(&self.plan.metric)
                    .copied();
            }
            curves.push(curve);
        }
        Ok(if self.plan.by_rungs() {
            Some(Box::new(self.plan.asynchronous(self.epochs, curves)))
        } else {
            self.plan
                .median(curves)
                .map(|m| Box::new(m) as Box<dyn EarlyStop>)
        })
    }

    /// Records the stop of a run the rule stopped (status `pruned`, its last epoch and best
    /// value so far).
    fn record_pruned(
        &self,
        store: &mut Store,
        id: i64,
        sweep_id: Option<i64>,
    ) -> Result<(), EngineError> {
        let epochs = store.epochs(id)?;
        let values = epochs.iter().filter_map(|e| {
            crate::engine::run::metrics_map(e)
                .get(&self.plan.metric)
                .copied()
        });
        let best = crate::plan::prune::best_so_far(values, self.plan.maximize);
        let epoch = epochs.last().map(|e| e.epoch).unwrap_or(0);
        // halving: the rung it stopped at (and its value there); median: one record, rung 0
        let (rung, value) = if self.plan.by_rungs() {
            let rungs = self.plan.asynchronous(self.epochs, Vec::new()).rungs;
            let at = epochs.last().and_then(|e| {
                crate::engine::run::metrics_map(e)
                    .get(&self.plan.metric)
                    .copied()
            });
            (
                rungs.iter().position(|&r| r == epoch).unwrap_or(0) as u32,
                at,
            )
        } else {
            (0, best)
        };
        store.record_rung_decisions(&[crate::store::RungRecord {
            run_id: id,
            sweep_id,
            rung,
            epoch,
            metric: self.plan.metric.clone(),
            value,
            decision: crate::store::PRUNED.to_string(),
        }])?;
        Ok(())
    }
}

/// The ids of the planned target runs done in the store, but `except`'s.
fn done_targets(store: &Store, runs: &[PlannedRun], except: &str) -> Result<Vec<i64>, EngineError> {
    let mut out = Vec::new();
    for r in runs.iter().filter(|r| r.target && r.key != except) {
        if let Some(row) = store.run_by_key(&r.key)? {
            if row.status() == Some(RunStatus::Done) {
                out.push(row.id);
            }
        }
    }
    Ok(out)
}

/// Trains the runs a sweep's own runs start from (`!target`), in full and in plan order, into
/// their summary rows (the halving and parallel executors, before their own runs). True when
/// an interrupt stopped it.
pub(super) fn train_parents_into(
    store: &mut Store,
    runs: &[PlannedRun],
    rows: &mut [SummaryRow],
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: &Arc<AtomicBool>,
) -> Result<bool, EngineError> {
    for (i, run) in runs.iter().enumerate().filter(|(_, r)| !r.target) {
        let started = Instant::now();
        let t = train_one(store, run, None, opts, reporter, stop, None, None)?;
        rows[i].run_id = t.run_id;
        rows[i].status = t.status;
        rows[i].action = t.action;
        rows[i].seconds = started.elapsed().as_secs_f64();
        if t.stop.is_some() || stop.load(Ordering::SeqCst) {
            return Ok(true);
        }
    }
    Ok(false)
}
