//! Loading a trained model back: from a checkpoint file, or from a run's best (or last) kept
//! checkpoint, with the resolved recipe stored inside the checkpoint.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;

use super::init::SeededVarMap;
use super::EngineError;
use crate::model::FaceModel;
use crate::recipe::{MetricMode, Recipe};
use crate::store::Store;
use crate::train::checkpoint::{assign_vars, read_checkpoint, Checkpoint};

/// A model ready for inference, with the recipe it was trained with.
pub struct LoadedModel {
    pub model: Box<dyn FaceModel>,
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
    let kept: Vec<_> = store
        .checkpoints(run_id)?
        .into_iter()
        .filter(|c| {
            c.kept
                && Path::new(&c.path).is_file()
                && c.metric_name.as_deref() != Some(super::run::INTERRUPT_METRIC)
        })
        .collect();
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
    Ok(best.map(|c| PathBuf::from(&c.path)))
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
    let model = crate::model::build(&recipe.model, num_classes, seeded.var_builder(&device))?;
    assign_vars(&seeded.varmap, &ck.model)?;
    Ok(LoadedModel {
        model,
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
    let mode = run
        .config
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
        .unwrap_or_default();
    best_checkpoint(store, id, mode)?
        .ok_or_else(|| EngineError::Other(format!("run {id} has no checkpoint on disk")))
}
