//! A pruned sweep on this machine, rung by rung (synchronous successive halving): every run
//! trains to the first rung and pauses there with a kept checkpoint; the pruner (asked, never
//! second-guessed) picks who goes on; those continue from their checkpoints to the next rung;
//! the last survivors train to `train.epochs`. Each rung's decisions are recorded at once, so
//! the same command after an interruption (or a kill) makes the same decisions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::local::{parent_not_done, train_one, train_parents_into, SweepOptions};
use super::SummaryRow;
use crate::engine::progress::Reporter;
use crate::engine::EngineError;
use crate::plan::prune::{PrunePlan, RungEntry};
use crate::plan::PlannedRun;
use crate::store::{RunStatus, RungRecord, Store, PROMOTED, PRUNED};

/// Trains a sweep's runs under `plan` (the parents its runs start from first, each in full).
pub fn train_halving(
    store: &mut Store,
    sweep_id: i64,
    runs: &[PlannedRun],
    plan: &PrunePlan,
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<Vec<SummaryRow>, EngineError> {
    let pruner = plan.pruner();
    let epochs = runs
        .iter()
        .filter(|r| r.target)
        .map(|r| r.recipe.train.epochs)
        .max()
        .unwrap_or(0);
    let rungs = pruner.rungs(epochs);
    let mut rows: Vec<SummaryRow> = runs
        .iter()
        .map(|r| SummaryRow::planned(sweep_id, r))
        .collect();
    let targets: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].target).collect();
    let bar = reporter.sweep_bar(budget(targets.len(), &rungs, epochs, pruner.as_ref()));
    let mut done_epochs = 0u64;
    let mut stopped: Option<&'static str> = None;

    // the parents, in full
    if train_parents_into(store, runs, &mut rows, opts, reporter, &stop)? {
        return Ok(not_started(store, rows, "interrupted"));
    }

    let mut alive: Vec<usize> = targets.clone();
    for (k, &rung_epoch) in rungs.iter().chain(std::iter::once(&epochs)).enumerate() {
        let last = k == rungs.len();
        // 1. every run still in brought to this rung (or to the end)
        for &i in &alive {
            let run = &runs[i];
            if let Some(why) = parent_not_done(store, run)? {
                rows[i].action = format!("not started ({why})");
                continue;
            }
            let (id, reached) = progress(store, run)?;
            if let Some(id) = id {
                store.add_to_sweep(sweep_id, id)?;
                rows[i].run_id = Some(id);
            }
            let decided = match id {
                Some(id) => store.rungs(id)?.iter().any(|r| r.rung as usize == k),
                None => false,
            };
            if decided || reached >= rung_epoch {
                continue;
            }
            bar.set_message(format!(
                "rung {}/{} run {}",
                k + 1,
                rungs.len() + 1,
                run.key
            ));
            let started = Instant::now();
            let until = (!last).then_some(rung_epoch);
            let t = train_one(
                store,
                run,
                Some(sweep_id),
                opts,
                reporter,
                &stop,
                until,
                None,
            )?;
            rows[i].seconds += started.elapsed().as_secs_f64();
            rows[i].run_id = t.run_id;
            let (_, now) = progress(store, run)?;
            done_epochs += u64::from(now.saturating_sub(reached));
            bar.set_position(done_epochs);
            if t.stop.is_some() || stop.load(Ordering::SeqCst) {
                stopped = Some("interrupted");
                break;
            }
            if opts.fail_fast && (t.status == "failed" || t.status == "diverged") {
                stopped = Some("--fail-fast");
                break;
            }
        }
        if stopped.is_some() || last {
            break;
        }
        // a run of the rung still training elsewhere (another sweep of the same recipe): no
        // decision without it; the call that finishes it decides
        for &i in &alive {
            if let Some(r) = store.run_by_key(&runs[i].key)? {
                let behind = store.epochs(r.id)?.last().map_or(0, |e| e.epoch) < rung_epoch;
                let may_go_on = !matches!(
                    r.status(),
                    Some(RunStatus::Failed | RunStatus::Diverged | RunStatus::Done)
                );
                if behind && may_go_on && store.rungs(r.id)?.iter().all(|d| d.rung as usize != k) {
                    stopped = Some("a run of this rung is training elsewhere");
                }
            }
        }
        if stopped.is_some() {
            break;
        }
        // 2. the rung's decision, once every run in has reached it (recorded at once)
        let rung = Rung {
            index: k,
            epoch: rung_epoch,
        };
        alive = decide(store, sweep_id, runs, &alive, rung, plan, reporter)?;
    }
    reporter.finish_sweep_bar();
    for &i in &targets {
        if rows[i].action.starts_with("not started") {
            continue;
        }
        let Some(r) = store.run_by_key(&runs[i].key)? else {
            rows[i].action = format!("not started ({})", stopped.unwrap_or("pruned earlier"));
            continue;
        };
        rows[i].run_id = Some(r.id);
        rows[i].status = r.shown_status();
        let rungs = store.rungs(r.id)?;
        rows[i].action = match rungs.iter().find(|d| d.decision == PRUNED) {
            Some(d) => format!("pruned at rung {} (epoch {})", d.rung + 1, d.epoch),
            None if r.status() == Some(RunStatus::Done) => format!(
                "trained through {} rung(s)",
                rungs.iter().filter(|d| d.decision == PROMOTED).count()
            ),
            None => match stopped {
                Some(why) => format!("stopped ({why})"),
                None => format!("{} at epoch {}", r.status, progress(store, &runs[i])?.1),
            },
        };
    }
    Ok(rows)
}

/// One rung: its position (0 for the first) and its epoch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rung {
    pub index: usize,
    pub epoch: u32,
}

/// The decision at `rung` among the runs `alive` (indices into `runs`) that reached it: the
/// one recorded, or the pruner's, recorded at once (the pruned runs marked `pruned`). Returns
/// the indices that go on.
pub(super) fn decide(
    store: &mut Store,
    sweep_id: i64,
    runs: &[PlannedRun],
    alive: &[usize],
    rung: Rung,
    plan: &PrunePlan,
    reporter: &Reporter,
) -> Result<Vec<usize>, EngineError> {
    let (k, rung_epoch) = (rung.index, rung.epoch);
    let mut entries = Vec::new();
    let mut ids = Vec::new();
    let mut recorded = Vec::new();
    for &i in alive {
        let Some(id) = store.run_by_key(&runs[i].key)?.map(|r| r.id) else {
            continue;
        };
        let value = value_at(store, id, rung_epoch, &plan.metric)?;
        entries.push(RungEntry { index: i, value });
        ids.push(id);
        recorded.push(store.rungs(id)?.into_iter().find(|r| r.rung as usize == k));
    }
    let go_on: Vec<bool> = if recorded.iter().all(Option::is_some) {
        recorded
            .iter()
            .map(|r| r.as_ref().is_some_and(|r| r.decision == PROMOTED))
            .collect()
    } else {
        let decided = plan.pruner().promote(k, &entries);
        let records: Vec<RungRecord> = entries
            .iter()
            .zip(&ids)
            .zip(&decided)
            .map(|((e, &run_id), &on)| RungRecord {
                run_id,
                sweep_id: Some(sweep_id),
                rung: k as u32,
                epoch: rung_epoch,
                metric: plan.metric.clone(),
                value: e.value,
                decision: if on { PROMOTED } else { PRUNED }.to_string(),
            })
            .collect();
        store.record_rung_decisions(&records)?;
        reporter.info(&format!(
            "rung {} (epoch {rung_epoch}, by {}): {} of {} go on",
            k + 1,
            plan.metric,
            decided.iter().filter(|d| **d).count(),
            decided.len()
        ));
        decided
    };
    Ok(entries
        .iter()
        .zip(&go_on)
        .filter(|(_, on)| **on)
        .map(|(e, _)| e.index)
        .collect())
}

/// A planned run's id (when it has a row) and the last epoch it recorded.
pub(super) fn progress(store: &Store, run: &PlannedRun) -> Result<(Option<i64>, u32), EngineError> {
    Ok(match store.run_by_key(&run.key)? {
        Some(r) => (
            Some(r.id),
            store.epochs(r.id)?.last().map(|e| e.epoch).unwrap_or(0),
        ),
        None => (None, 0),
    })
}

/// A run's value of `metric` at `epoch`.
fn value_at(store: &Store, id: i64, epoch: u32, metric: &str) -> Result<Option<f64>, EngineError> {
    Ok(store
        .epochs(id)?
        .iter()
        .find(|e| e.epoch == epoch)
        .and_then(|e| crate::engine::run::metrics_map(e).get(metric).copied()))
}

/// The epochs the schedule trains when no run fails: n runs to the first rung, the survivors
/// of each rung on to the next, the last ones to `epochs`.
pub fn budget(
    n: usize,
    rungs: &[u32],
    epochs: u32,
    pruner: &dyn crate::plan::prune::Pruner,
) -> u64 {
    let mut total = 0u64;
    let mut alive = n;
    let mut from = 0u32;
    for (k, &r) in rungs.iter().enumerate() {
        total += alive as u64 * u64::from(r - from);
        let entries: Vec<RungEntry> = (0..alive)
            .map(|index| RungEntry { index, value: None })
            .collect();
        alive = pruner.promote(k, &entries).iter().filter(|p| **p).count();
        from = r;
    }
    total + alive as u64 * u64::from(epochs.saturating_sub(from))
}

/// The rows of a sweep stopped before its runs: those not done say why.
fn not_started(store: &Store, mut rows: Vec<SummaryRow>, why: &str) -> Vec<SummaryRow> {
    for row in rows.iter_mut().filter(|r| r.action.is_empty()) {
        row.action = format!("not started ({why})");
        if let Ok(Some(r)) = store.run_by_key(&row.key) {
            row.run_id = Some(r.id);
            row.status = r.shown_status();
        }
    }
    rows
}
