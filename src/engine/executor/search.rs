//! The search executor (`sweep.mode = "tpe"`): proposes a study's trials batch by batch and
//! trains them. Trial k sees only the results of the batches before its own (and, as Optuna's
//! constant liar, the parameters of the trials before it in its batch); each trial is recorded
//! in the store when proposed, so an interrupted sweep continues its numbering and trains
//! exactly the trials an uninterrupted one would. A batch is B trials: one at a time here, or
//! B child processes with `--jobs B`. Epoch rules (median stopping, or halving asked at each
//! rung in trial order) compare a trial with the trials before it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::local::{parent_not_done, train_in_sweep, train_parents_into, SweepOptions};
use super::parallel::{train_parallel, ChildCommand, Slot};
use super::{SummaryRow, SweepOutcome};
use crate::engine::progress::Reporter;
use crate::engine::EngineError;
use crate::plan::sampler::{Outcome, Sampler, Trial};
use crate::plan::search::Search;
use crate::plan::{Fingerprinter, PlannedRun};
use crate::store::{RunStatus, Store, TrialRecord};

/// How a search trains a batch: here, one trial after another, or in child processes.
pub enum BatchExecution<'a> {
    Here,
    Children {
        slots: &'a [Slot],
        command: &'a ChildCommand<'a>,
    },
}

/// What a search did: the sweep's outcome, and every run it planned (the parents, then the
/// trials proposed so far, by number).
pub struct SearchOutcome {
    pub outcome: SweepOutcome,
    pub runs: Vec<PlannedRun>,
}

/// Runs a search: records its study (batch `batch`) and sweep, trains the runs its trials
/// start from, then proposes and trains its trials batch by batch until `search.trials` are
/// done or something stops it (an interrupt, `--fail-fast`, `--max-runs`, a trial busy
/// elsewhere).
#[allow(clippy::too_many_arguments)]
pub fn execute_search(
    store: &mut Store,
    recipe_path: &str,
    parents: &[PlannedRun],
    search: &mut Search,
    fingerprint: &Fingerprinter,
    batch: usize,
    execution: BatchExecution,
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<SearchOutcome, EngineError> {
    let batch = batch.max(1);
    let (study, recorded) = open_study(store, recipe_path, search, batch)?;
    let n = search.trials;
    // every trial proposed already: the sweep that planned them all, if one did (a call that
    // trains nothing adds no sweep row)
    let sweep_id = if recorded.len() >= n {
        let mut known: Vec<PlannedRun> = parents.to_vec();
        for t in recorded.values().filter(|t| t.number < n) {
            known.push(search.planned(t.number, &t.params, fingerprint)?);
        }
        super::local::sweep_for(store, recipe_path, &known)?
    } else {
        store.create_sweep(recipe_path, n)?
    };
    let mut runs: Vec<PlannedRun> = parents.to_vec();
    let mut rows: Vec<SummaryRow> = parents
        .iter()
        .map(|r| SummaryRow::planned(sweep_id, r))
        .collect();
    let done = |rows: Vec<SummaryRow>, runs: Vec<PlannedRun>| SearchOutcome {
        outcome: SweepOutcome {
            sweep_id,
            rows,
            job_id: None,
        },
        runs,
    };
    if train_parents_into(store, parents, &mut rows, opts, reporter, &stop)? {
        return Ok(done(rows, runs));
    }
    // the finished trials of the batches before the current one
    let mut history: Vec<Trial> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let here = matches!(execution, BatchExecution::Here);
    let epochs = u64::from(search.epochs);
    let bar = here.then(|| reporter.sweep_bar(n as u64 * epochs));
    let mut processed = 0u64;
    let mut executed = 0usize;
    let mut stopped: Option<String> = None;
    for start in (0..n).step_by(batch) {
        if stopped.is_some() {
            break;
        }
        if opts.max_runs.is_some_and(|m| executed >= m) {
            break;
        }
        let end = (start + batch).min(n);
        let (mut proposed, batch_runs) = propose_batch(
            store,
            study.id,
            search,
            &recorded,
            start..end,
            &history,
            fingerprint,
        )?;
        // train it
        let batch_rows = match &execution {
            BatchExecution::Children { slots, command } => {
                let rows = train_parallel(
                    store,
                    sweep_id,
                    &batch_runs,
                    opts,
                    slots,
                    command,
                    reporter,
                    stop.clone(),
                )?;
                if stop.load(Ordering::SeqCst) {
                    stopped = Some("interrupted".into());
                }
                rows
            }
            BatchExecution::Here => {
                let mut out = Vec::new();
                for run in &batch_runs {
                    let mut row = SummaryRow::planned(sweep_id, run);
                    if let Some(why) = stopped.clone().or(parent_not_done(store, run)?) {
                        row.action = format!("not started ({why})");
                        out.push(row);
                        continue;
                    }
                    if let Some(b) = &bar {
                        b.set_message(format!("trial {}/{n} {}", run.index + 1, run.key));
                    }
                    let reference = reference_runs(store, &keys, opts)?;
                    let why = train_in_sweep(
                        store, sweep_id, run, &mut row, opts, reporter, &stop, reference,
                    )?;
                    if row.action == "trained" || row.action == "resumed" {
                        executed += 1;
                    }
                    stopped = stopped.or(why.map(str::to_string));
                    processed += epochs;
                    if let Some(b) = &bar {
                        b.set_position(processed);
                    }
                    out.push(row);
                }
                out
            }
        };
        rows.extend(batch_rows);
        // the batch's results, for the batches after it
        for (trial, run) in proposed.iter_mut().zip(&batch_runs) {
            match outcome_of(store, &run.key, &search.metric)? {
                Some(o) => trial.outcome = o,
                None => {
                    stopped = stopped.or(Some(format!("trial {} not finished", run.index)));
                }
            }
            keys.push(run.key.clone());
        }
        history.extend(proposed);
        runs.extend(batch_runs);
    }
    if bar.is_some() {
        reporter.finish_sweep_bar();
    }
    Ok(done(rows, runs))
}

/// The search's study (recorded with `batch` when new; another batch size is an error) and its
/// trials recorded so far, by number.
fn open_study(
    store: &mut Store,
    recipe_path: &str,
    search: &Search,
    batch: usize,
) -> Result<(crate::store::StudyRecord, BTreeMap<usize, TrialRecord>), EngineError> {
    let study = store.study(&search.study_key, recipe_path, batch as u32)?;
    if study.batch as usize != batch {
        return Err(EngineError::Other(format!(
            "this study proposes its trials in batches of {}; continue it with the same batch size",
            study.batch
        )));
    }
    let recorded = store
        .trials(study.id)?
        .into_iter()
        .map(|t| (t.number, t))
        .collect();
    Ok((study, recorded))
}

/// Trials `numbers` (one batch) with their planned runs: those recorded read back, the others
/// proposed (each seeing `history`, the finished trials of the batches before, and the trials
/// before it in the batch as running) and recorded before anything trains.
fn propose_batch(
    store: &mut Store,
    study_id: i64,
    search: &mut Search,
    recorded: &BTreeMap<usize, TrialRecord>,
    numbers: std::ops::Range<usize>,
    history: &[Trial],
    fingerprint: &Fingerprinter,
) -> Result<(Vec<Trial>, Vec<PlannedRun>), EngineError> {
    let sampler = search.sampler();
    let mut proposed: Vec<Trial> = Vec::new();
    let mut runs: Vec<PlannedRun> = Vec::new();
    for k in numbers {
        let params = match recorded.get(&k) {
            Some(t) => t.params.clone(),
            None => {
                let mut seen = history.to_vec();
                seen.extend(proposed.iter().cloned());
                sampler.propose(k, &seen)
            }
        };
        let run = search.planned(k, &params, fingerprint)?;
        match recorded.get(&k) {
            Some(t) if t.run_key != run.key => {
                return Err(EngineError::Other(format!(
                    "trial {k} of this study planned run {}, but its parameters now plan run {}: the recipe changed in a way its study key does not see",
                    t.run_key, run.key
                )));
            }
            Some(_) => {}
            None => store.add_trial(
                study_id,
                &TrialRecord {
                    number: k,
                    params: params.clone(),
                    run_key: run.key.clone(),
                },
            )?,
        }
        proposed.push(Trial {
            number: k,
            params,
            outcome: Outcome::Running,
        });
        runs.push(run);
    }
    Ok((proposed, runs))
}

/// What a search run batch by batch elsewhere (Slurm) needs next.
#[derive(Debug)]
pub enum SearchStep {
    /// Train these trials' runs (the first batch not finished: its trials not done, proposed
    /// now where they were not yet).
    Train { start: usize, runs: Vec<PlannedRun> },
    /// `left` trials of the batch at `start` are still training (submitted, or elsewhere).
    Waiting { start: usize, left: usize },
    /// Every trial is finished.
    Finished,
}

/// The next step of a search whose batches are trained elsewhere: the batches before the
/// first unfinished one are read back as history; that batch is proposed (where not yet) and
/// its trials not finished are to train, unless some still train.
pub fn next_batch(
    store: &mut Store,
    recipe_path: &str,
    search: &mut Search,
    batch: usize,
    fingerprint: &Fingerprinter,
) -> Result<SearchStep, EngineError> {
    let batch = batch.max(1);
    let (study, recorded) = open_study(store, recipe_path, search, batch)?;
    let n = search.trials;
    let mut history: Vec<Trial> = Vec::new();
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let (mut proposed, runs) = propose_batch(
            store,
            study.id,
            search,
            &recorded,
            start..end,
            &history,
            fingerprint,
        )?;
        let mut to_train = Vec::new();
        let mut busy = 0;
        for (trial, run) in proposed.iter_mut().zip(runs) {
            match outcome_of(store, &run.key, &search.metric)? {
                Some(o) => trial.outcome = o,
                None => {
                    // submitted, or trained by a live process (a dead one's run reads stale)
                    let shown = store.run_by_key(&run.key)?.map(|r| r.shown_status());
                    let training = [RunStatus::Submitted, RunStatus::Running]
                        .iter()
                        .any(|s| shown.as_deref() == Some(s.as_str()));
                    if training {
                        busy += 1;
                    } else {
                        to_train.push(run);
                    }
                }
            }
        }
        if !to_train.is_empty() {
            return Ok(SearchStep::Train {
                start,
                runs: to_train,
            });
        }
        if busy > 0 {
            return Ok(SearchStep::Waiting { start, left: busy });
        }
        history.extend(proposed);
    }
    Ok(SearchStep::Finished)
}

/// The runs an epoch rule may compare a trial with: the earlier trials' runs that are done
/// (median), or that reached a rung (halving: done or pruned).
fn reference_runs(
    store: &Store,
    earlier: &[String],
    opts: &SweepOptions,
) -> Result<Vec<i64>, EngineError> {
    let halving = opts.prune.as_ref().is_some_and(|p| p.by_rungs());
    let mut ids = Vec::new();
    for key in earlier {
        if let Some(run) = store.run_by_key(key)? {
            let counts = match run.status() {
                Some(RunStatus::Done) => true,
                Some(RunStatus::Pruned) => halving,
                _ => false,
            };
            if counts && !ids.contains(&run.id) {
                ids.push(run.id);
            }
        }
    }
    Ok(ids)
}

/// A finished trial's outcome as the sampler sees it (None: not finished): a done run's value
/// of `metric` at the leaderboard's epoch; a pruned run's last epoch and its value there.
fn outcome_of(store: &Store, key: &str, metric: &str) -> Result<Option<Outcome>, EngineError> {
    let Some(run) = store.run_by_key(key)? else {
        return Ok(None);
    };
    Ok(match run.status() {
        Some(RunStatus::Done) => Some(
            match store
                .row_epoch(run.id, metric)?
                .and_then(|row| row.metrics.get(metric).copied())
                .filter(|v| !v.is_nan())
            {
                Some(v) => Outcome::Complete(v),
                None => Outcome::Failed,
            },
        ),
        Some(RunStatus::Pruned) => {
            let epochs = store.epochs(run.id)?;
            let last = epochs.last();
            Some(Outcome::Pruned {
                step: last.map_or(0, |e| e.epoch),
                value: last.and_then(|e| crate::engine::run::metrics_map(e).get(metric).copied()),
            })
        }
        Some(RunStatus::Failed | RunStatus::Diverged) => Some(Outcome::Failed),
        _ => None,
    })
}
