//! Loading a trained model back: from a checkpoint file, or from a run's best (or last) kept
//! checkpoint, with the resolved recipe stored inside the checkpoint.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;

use super::init::SeededVarMap;
use super::EngineError;
use crate::model::FaceModel;
use crate::recipe::{InitFromRun, MetricMode, Pick, Recipe};
use crate::store::Store;
use crate::train::checkpoint::{assign_vars, read_checkpoint, Checkpoint};

/// A model ready for inference, with the recipe it was trained with.
pub struct LoadedModel {
    pub model: Box<dyn FaceModel>,
    /// ArcFace / CosFace runs: the class weights, which classify (the model's own classifier
    /// was not trained).
    pub head: Option<crate::train::margin::MarginHead>,
    pub recipe: Recipe,
    pub checkpoint: PathBuf,
    pub epoch: u32,
    pub device: Device,
}

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
                && c.metric_name.as_deref() != Some(super::run::INTERRUPT_METRIC)
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

/// The resolved recipe a checkpoint was written with (stored inside it).
pub fn checkpoint_recipe(ck: &Checkpoint, path: &Path) -> Result<Recipe, EngineError> {
    serde_json::from_value(ck.meta.recipe.clone()).map_err(|e| {
        EngineError::Other(format!(
            "{}: the checkpoint's recipe is unreadable: {e}",
            path.display()
        ))
    })
}

impl LoadedModel {
    /// Eval-mode class logits: the classifier's, or a margin head's `s * cos`.
    pub fn logits(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor, EngineError> {
        let mut ctx = crate::model::ForwardCtx::eval();
        candle_core::no_grad(|| {
            Ok(match &self.head {
                None => self.model.forward(x, &mut ctx)?,
                Some(h) => h.forward(&self.model.embed(x, &mut ctx)?, None)?,
            })
        })
    }
}

/// Loads the model stored in a checkpoint file.
pub fn load_checkpoint(
    path: &Path,
    device_override: Option<&str>,
) -> Result<LoadedModel, EngineError> {
    let ck = read_checkpoint(path)?;
    let recipe = checkpoint_recipe(&ck, path)?;
    let device = super::device(device_override.unwrap_or("cpu"))?;
    let num_classes = ck
        .meta
        .extra
        .get("num_classes")
        .and_then(|n| n.as_u64())
        .map(|n| n as usize)
        .or(recipe.model.num_classes)
        .ok_or_else(|| {
            EngineError::Other(format!(
                "{}: cannot tell the number of classes",
                path.display()
            ))
        })?;
    let seeded = SeededVarMap::new(VarMap::new(), recipe.train.seed);
    let (model, head) = super::run::build_net(&recipe, num_classes, seeded.var_builder(&device))?;
    // the moving average when the run kept one (`train.ema`)
    assign_vars(&seeded.varmap, ck.weights())?;
    Ok(LoadedModel {
        model,
        head,
        recipe,
        checkpoint: path.to_path_buf(),
        epoch: ck.meta.epoch,
        device,
    })
}

/// Loads from a checkpoint path, or from a run reference (id or key prefix) in the store,
/// by its leaderboard row for `metric` (`row_checkpoint`).
pub fn load_model(
    store: Option<&Store>,
    reference: &str,
    metric: Option<&str>,
) -> Result<LoadedModel, EngineError> {
    load_checkpoint(&resolve_checkpoint(store, reference, metric)?, None)
}

/// The checkpoint file a reference names: the file itself, or the checkpoint of a run's (id
/// or key prefix) leaderboard row for `metric` (default: its `checkpoint.monitor`).
pub fn resolve_checkpoint(
    store: Option<&Store>,
    reference: &str,
    metric: Option<&str>,
) -> Result<PathBuf, EngineError> {
    let p = Path::new(reference);
    if p.is_file() {
        if metric.is_some() {
            return Err(EngineError::Other(format!(
                "--metric picks a run's checkpoint; `{reference}` is a checkpoint file, used as given"
            )));
        }
        return Ok(p.to_path_buf());
    }
    let Some(store) = store else {
        return Err(EngineError::Other(format!(
            "`{reference}` is neither a checkpoint file nor a run in a store"
        )));
    };
    let id = store.resolve_run(reference)?;
    Ok(row_checkpoint(store, id, metric)?.path)
}
