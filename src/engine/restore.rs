//! Loading a trained model back: from a checkpoint file, or from a run's best (or last) kept
//! checkpoint, with the resolved recipe stored inside the checkpoint.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;

use super::init::SeededVarMap;
pub use super::picks::*;
use super::EngineError;
use crate::model::FaceModel;
use crate::recipe::Recipe;
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
