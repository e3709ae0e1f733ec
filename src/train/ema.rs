//! The weights' exponential moving average (`train.ema`), with timm's `ModelEmaV3` semantics:
//! after optimizer update `step` (1-based), every floating-point tensor of the model (parameters
//! and BatchNorm running statistics) moves as `ema += (1 - decay_t) * (model - ema)` and
//! integer buffers (`num_batches_tracked`) are copied, where `decay_t` warms up as
//! `1 - (1 + (step - 1) / gamma)^-power` (gamma 1, power 2/3, timm's defaults), clamped to
//! at most `decay`; the first update copies the model (`decay_t = 0`).

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::VarMap;

use super::TrainError;

/// timm's `warmup_gamma` default.
pub const WARMUP_GAMMA: f64 = 1.0;
/// timm's `warmup_power` default.
pub const WARMUP_POWER: f64 = 2.0 / 3.0;

/// `ModelEmaV3.get_decay(step)` with `use_warmup = True`, `update_after_step = 0`,
/// `min_decay = 0`.
pub fn decay_at(decay: f64, step: u64) -> f64 {
    let s = step.saturating_sub(1);
    if s == 0 {
        return 0.0;
    }
    let warm = 1.0 - (1.0 + s as f64 / WARMUP_GAMMA).powf(-WARMUP_POWER);
    warm.min(decay).max(0.0)
}

/// A moving average over the variables of one model, held as the variables of another
/// `VarMap` (so that a model built on it evaluates the average).
pub struct ModelEma {
    pub decay: f64,
    /// The averaged variables, by the model's names.
    pub varmap: VarMap,
}

impl ModelEma {
    /// An average over a model whose average lives in `varmap` (a model of the same shape
    /// built on it), set to `model`'s current values.
    pub fn new(decay: f64, varmap: VarMap, model: &VarMap) -> Result<Self, TrainError> {
        let ema = ModelEma { decay, varmap };
        ema.set(model)?;
        Ok(ema)
    }

    /// Copies `model`'s values into the average.
    pub fn set(&self, model: &VarMap) -> Result<(), TrainError> {
        self.update_with(model, 0.0)
    }

    /// The update after optimizer step `step` (1-based, counted through the run's lineage).
    pub fn update(&self, model: &VarMap, step: u64) -> Result<(), TrainError> {
        self.update_with(model, decay_at(self.decay, step))
    }

    fn update_with(&self, model: &VarMap, decay: f64) -> Result<(), TrainError> {
        let src = model.data().lock().map_err(|_| poisoned())?;
        let dst = self.varmap.data().lock().map_err(|_| poisoned())?;
        for (name, avg) in dst.iter() {
            let Some(cur) = src.get(name) else {
                return Err(TrainError::OptimizerState(format!(
                    "train.ema: the model has no `{name}`"
                )));
            };
            let cur = cur.as_tensor();
            let next = if decay == 0.0 || !cur.dtype().is_float() {
                cur.copy()?
            } else {
                let a = avg.as_tensor();
                // ema + (1 - decay) * (model - ema), as torch's lerp_ with weight 1 - decay
                let w = 1.0 - decay;
                (a + ((cur - a)? * w)?)?
            };
            avg.set(&next.to_dtype(avg.dtype())?)?;
        }
        Ok(())
    }

    /// The averaged tensors by name (deep copies), for a checkpoint.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let data = self.varmap.data().lock().map_err(|_| poisoned())?;
        data.iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
            .collect()
    }

    /// Restores `tensors` (a checkpoint's `ema` section) into the average.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        let data = self.varmap.data().lock().map_err(|_| poisoned())?;
        for (name, var) in data.iter() {
            let t = tensors.get(name).ok_or_else(|| {
                TrainError::OptimizerState(format!("train.ema: the checkpoint has no `{name}`"))
            })?;
            if t.dims() != var.dims() {
                return Err(TrainError::OptimizerState(format!(
                    "train.ema: `{name}` has shape {:?} in the checkpoint, {:?} in the model",
                    t.dims(),
                    var.dims()
                )));
            }
            let t = t.to_device(var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }
}

fn poisoned() -> TrainError {
    TrainError::OptimizerState("variable map lock poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_warms_up_as_timm_does() {
        // ModelEmaV3(decay=0.999, use_warmup=True).get_decay(step)
        assert_eq!(decay_at(0.999, 1), 0.0);
        let d2 = decay_at(0.999, 2);
        assert!((d2 - (1.0 - 2f64.powf(-2.0 / 3.0))).abs() < 1e-15, "{d2}");
        assert_eq!(decay_at(0.5, 1000), 0.5);
    }
}
