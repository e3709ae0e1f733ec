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

/// The best kept checkpoint of a run by its recipe's monitored metric (the last when none
/// has the metric).
pub fn best_checkpoint(
    store: &Store,
    run_id: i64,
    mode: MetricMode,
) -> Result<Option<PathBuf>, EngineError> {
    Ok(pick_checkpoint(
        store.checkpoints(run_id)?,
        Pick::Best,
        mode,
    ))
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

/// Loads from a checkpoint path, or from a run reference (id or key prefix) in the store.
pub fn load_model(store: Option<&Store>, reference: &str) -> Result<LoadedModel, EngineError> {
    load_checkpoint(&resolve_checkpoint(store, reference)?, None)
}

/// The checkpoint file a reference names: the file itself, or a run's (id or key prefix)
/// best kept checkpoint by its recipe's `checkpoint.monitor` / `mode`.
pub fn resolve_checkpoint(store: Option<&Store>, reference: &str) -> Result<PathBuf, EngineError> {
    let p = Path::new(reference);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let Some(store) = store else {
        return Err(EngineError::Other(format!(
            "`{reference}` is neither a checkpoint file nor a run in a store"
        )));
    };
    let id = store.resolve_run(reference)?;
    let run = store.run(id)?;
    best_checkpoint(store, id, run_mode(&run))?
        .ok_or_else(|| EngineError::Other(format!("run {id} has no checkpoint on disk")))
}
