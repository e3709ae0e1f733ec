//! Which checkpoint of a run a command means, from the store's records alone: the leaderboard
//! row's for a metric, the last kept end-of-epoch one, or the one a `model.init_from` pick
//! names; and the labels of the checkpoints a checkpoint policy does not own.

use std::path::{Path, PathBuf};

use super::EngineError;
use crate::recipe::{InitFromRun, MetricMode, Pick};
use crate::store::Store;

/// The label the checkpoint table gives a mid-epoch checkpoint written on interrupt.
pub const INTERRUPT_METRIC: &str = "interrupt";

/// The label of a rung checkpoint: an end-of-epoch checkpoint a pruned sweep keeps whatever
/// the checkpoint policy says (its own file, or a pin on the policy's file of that epoch).
pub const RUNG_METRIC: &str = "rung";

/// A run's checkpoint as the leaderboard picks it for a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct RowCheckpoint {
    pub run_id: i64,
    pub metric: String,
    pub epoch: u32,
    pub path: PathBuf,
}

/// The metric a run's checkpoints are picked by when none is named: its recipe's
/// `checkpoint.monitor`.
pub fn run_monitor(run: &crate::store::RunRow) -> String {
    run.config
        .get("checkpoint")
        .and_then(|c| c.get("monitor"))
        .and_then(|m| m.as_str())
        .unwrap_or("val_acc")
        .to_string()
}

/// The checkpoint of a run's leaderboard row for `metric` (default: the run's
/// `checkpoint.monitor`): the kept end-of-epoch checkpoint of the epoch that is best by the
/// metric (`Store::row_epoch`, the leaderboard's own rule). `eval`, `export`, `match` and
/// `resume --from best` all come here, so they use the checkpoint whose numbers the
/// leaderboard shows. A row
/// without a kept checkpoint, or whose file is gone, is an error that says so (never a silent
/// fallback to another epoch).
pub fn row_checkpoint(
    store: &Store,
    run_id: i64,
    metric: Option<&str>,
) -> Result<RowCheckpoint, EngineError> {
    let run = store.run(run_id)?;
    let metric = metric.map_or_else(|| run_monitor(&run), str::to_string);
    if !crate::recipe::validate::METRICS.contains(&metric.as_str()) {
        return Err(EngineError::Other(format!(
            "--metric: unknown metric `{metric}` (expected one of: {})",
            crate::recipe::validate::METRICS.join(", ")
        )));
    }
    let row = store.row_epoch(run_id, &metric)?.ok_or_else(|| {
        EngineError::Other(format!(
            "run {run_id} recorded no `{metric}`: no leaderboard row picks a checkpoint for it"
        ))
    })?;
    let epoch = row.epoch.unwrap_or(0);
    let path = row.checkpoint.map(PathBuf::from).ok_or_else(|| {
        EngineError::Other(format!(
            "run {run_id} kept no checkpoint at an epoch with a recorded `{metric}`: its \
             leaderboard row is epoch {epoch}, without one (try another --metric, or \
             `--from last` to resume)"
        ))
    })?;
    if !path.is_file() {
        return Err(EngineError::Other(format!(
            "run {run_id}: the checkpoint of its leaderboard row by `{metric}` (epoch {epoch}) \
             is missing on disk: {}",
            path.display()
        )));
    }
    Ok(RowCheckpoint {
        run_id,
        metric,
        epoch,
        path,
    })
}

/// Of a run's checkpoints (in epoch order), the kept end-of-epoch one whose file exists that
/// `pick` names: the best by the monitored metric in `mode` (the earliest of equals; the last
/// when none has the metric), or the last.
pub fn pick_checkpoint(
    checkpoints: Vec<crate::store::CheckpointRecord>,
    pick: Pick,
    mode: MetricMode,
) -> Option<PathBuf> {
    let mut kept = end_of_epoch(checkpoints);
    if pick == Pick::Last {
        return kept.pop().map(|c| PathBuf::from(c.path));
    }
    let best = kept
        .iter()
        .filter(|c| c.metric.is_some_and(f64::is_finite))
        .max_by(|a, b| {
            let o = a
                .metric
                .unwrap_or(f64::NAN)
                .total_cmp(&b.metric.unwrap_or(f64::NAN));
            let o = if mode == MetricMode::Min {
                o.reverse()
            } else {
                o
            };
            o.then(b.epoch.cmp(&a.epoch))
        })
        .or(kept.last());
    best.map(|c| PathBuf::from(&c.path))
}

/// The kept end-of-epoch checkpoints whose files exist, in their order.
fn end_of_epoch(
    checkpoints: Vec<crate::store::CheckpointRecord>,
) -> Vec<crate::store::CheckpointRecord> {
    checkpoints
        .into_iter()
        .filter(|c| {
            c.kept
                && Path::new(&c.path).is_file()
                && c.metric_name.as_deref() != Some(INTERRUPT_METRIC)
        })
        .collect()
}

/// The newest kept end-of-epoch checkpoint of a run whose file exists.
pub fn last_checkpoint(store: &Store, run_id: i64) -> Result<Option<PathBuf>, EngineError> {
    Ok(pick_checkpoint(
        store.checkpoints(run_id)?,
        Pick::Last,
        MetricMode::Max,
    ))
}

/// The run (by the key the planner put in `model.init_from.parent_key`) and checkpoint a run
/// starts from under `model.init_from = { recipe = ..., pick = ... }`: the parent must be
/// done; `best` is by the parent's own `checkpoint.monitor` and `mode`, `last` its newest
/// end-of-epoch checkpoint.
pub fn init_checkpoint(store: &Store, link: &InitFromRun) -> Result<(i64, PathBuf), EngineError> {
    let key = link.parent_key.as_deref().ok_or_else(|| {
        EngineError::Other(format!(
            "model.init_from: the parent recipe {} was not planned (no parent key)",
            link.recipe
        ))
    })?;
    let parent = store.run_by_key(key)?.ok_or_else(|| {
        EngineError::Other(format!(
            "model.init_from: no run of {} (key {key}) in the store",
            link.recipe
        ))
    })?;
    if parent.status() != Some(crate::store::RunStatus::Done) {
        return Err(EngineError::Other(format!(
            "model.init_from: run {} of {} is {}, not done",
            parent.id, link.recipe, parent.status
        )));
    }
    let path = pick_checkpoint(store.checkpoints(parent.id)?, link.pick, run_mode(&parent));
    let path = path.ok_or_else(|| {
        EngineError::Other(format!(
            "model.init_from: run {} of {} has no checkpoint on disk",
            parent.id, link.recipe
        ))
    })?;
    Ok((parent.id, path))
}

/// A stored run's `checkpoint.mode`.
pub fn run_mode(run: &crate::store::RunRow) -> MetricMode {
    run.config
        .get("checkpoint")
        .and_then(|c| c.get("mode"))
        .and_then(|m| m.as_str())
        .map(|m| {
            if m == "min" {
                MetricMode::Min
            } else {
                MetricMode::Max
            }
        })
        .unwrap_or_default()
}
