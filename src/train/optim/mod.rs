//! Optimizers with PyTorch's exact update rules (SGD with momentum / dampening / Nesterov /
//! weight decay, AdamW), behind [`Optimizer`], built from the recipe by [`build`]; gradient
//! clipping by global norm and a finiteness check.

mod adamw;
mod clip;
pub mod fused;
pub mod grad_check;
mod sgd;

pub use adamw::{AdamW, AdamWParams};
pub use clip::{
    clip_grad_norm, clip_on_device, clip_with_norm, grad_norm, grad_probes, grad_summary,
    grads_finite, vars_finite,
};
pub use sgd::{Sgd, SgdParams};

use super::TrainError;
use crate::recipe::{OptimizerConfig, OptimizerKind};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// A parameter the optimizer updates, with its weight decay and the factor on its learning
/// rate (a PyTorch parameter group's lr relative to the schedule's; 1 but for the backbone
/// under `optimizer.backbone_lr_scale`).
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub weight_decay: f64,
    pub lr_scale: f64,
}

/// One optimizer over a fixed list of named parameters.
pub trait Optimizer: Send {
    /// One update with the gradients in `grads` at learning rate `lr`. Parameters without a
    /// gradient are skipped (their state does not advance), as in PyTorch.
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<(), TrainError>;
    /// The optimizer state, keyed `<param name>.<buffer>` (e.g. `conv.weight.momentum_buffer`,
    /// `fc.bias.exp_avg`, `fc.bias.step`); deep copies (later steps update the optimizer's
    /// own buffers in place), on the parameters' device.
    fn state_tensors(&self) -> Result<HashMap<String, Tensor>, TrainError>;
    /// Restores [`Optimizer::state_tensors`] (tensors may be on any device). An empty map
    /// resets to a fresh optimizer; an unknown key or a shape mismatch is an error.
    fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<(), TrainError>;
    /// The parameters this optimizer updates.
    fn params(&self) -> &[Param];
}

/// Names of buffers, not parameters (BatchNorm statistics): never optimized.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

/// Splits named variables into optimizer parameters: buffers are dropped; with
/// `no_decay_norm_bias`, parameters of rank <= 1 (biases, norm weights, layer-scale gammas)
/// get no weight decay. Parameters are sorted by name (a stable state layout).
pub fn param_groups(
    vars: Vec<(String, Var)>,
    weight_decay: f64,
    no_decay_norm_bias: bool,
) -> Vec<Param> {
    let mut params: Vec<Param> = vars
        .into_iter()
        .filter(|(name, _)| !is_buffer(name))
        .map(|(name, var)| {
            let wd = if no_decay_norm_bias && var.rank() <= 1 {
                0.0
            } else {
                weight_decay
            };
            Param {
                name,
                var,
                weight_decay: wd,
                lr_scale: 1.0,
            }
        })
        .collect();
    params.sort_by(|a, b| a.name.cmp(&b.name));
    params
}

/// Builds the optimizer a recipe asks for over `params` (e.g. `VarMap::data()` entries), with
/// every parameter at the schedule's learning rate.
pub fn build(
    cfg: &OptimizerConfig,
    params: Vec<(String, Var)>,
) -> Result<Box<dyn Optimizer>, TrainError> {
    build_with_classifier(cfg, params, &|_| true)
}

/// `build`, with `optimizer.backbone_lr_scale` applied to every parameter `is_classifier`
/// rejects.
pub fn build_with_classifier(
    cfg: &OptimizerConfig,
    params: Vec<(String, Var)>,
    is_classifier: &dyn Fn(&str) -> bool,
) -> Result<Box<dyn Optimizer>, TrainError> {
    let wd = cfg.weight_decay();
    if !(wd.is_finite() && wd >= 0.0) {
        return Err(TrainError::config(
            "optimizer.weight_decay",
            format!("must be >= 0, got {wd}"),
        ));
    }
    let mut groups = param_groups(params, wd, cfg.no_decay_norm_bias);
    if let Some(scale) = cfg.backbone_lr_scale {
        for p in groups.iter_mut().filter(|p| !is_classifier(&p.name)) {
            p.lr_scale = scale;
        }
    }
    Ok(match cfg.kind {
        OptimizerKind::Sgd => Box::new(Sgd::new(
            groups,
            SgdParams {
                momentum: cfg.momentum(),
                dampening: cfg.dampening(),
                nesterov: cfg.nesterov(),
            },
        )?),
        OptimizerKind::Adamw => {
            let [beta1, beta2] = cfg.betas();
            Box::new(AdamW::new(
                groups,
                AdamWParams {
                    beta1,
                    beta2,
                    eps: cfg.eps(),
                },
            )?)
        }
    })
}

/// The gradient of `var` in `grads`, in the parameter's dtype, or `None`.
pub(crate) fn grad_of(grads: &GradStore, var: &Var) -> Result<Option<Tensor>, TrainError> {
    match grads.get(var.as_tensor()) {
        None => Ok(None),
        Some(g) if g.dtype() == var.dtype() => Ok(Some(g.clone())),
        Some(g) => Ok(Some(g.to_dtype(var.dtype())?)),
    }
}

/// Whether the fused in-place CPU kernels can update this parameter with this gradient.
pub(crate) fn fusable(var: &Var, g: &Tensor) -> bool {
    var.device().is_cpu()
        && var.dtype() == candle_core::DType::F32
        && g.dtype() == candle_core::DType::F32
        && var.is_contiguous()
        && g.is_contiguous()
}

/// Whether the one-kernel CUDA updates (`fused::SgdStepCuda`, `fused::AdamWStepCuda`) can
/// update this parameter with this gradient.
pub(crate) fn cuda_fusable(var: &Var, g: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && var.device().is_cuda()
        && var.dtype() == candle_core::DType::F32
        && g.dtype() == candle_core::DType::F32
        && var.is_contiguous()
        && g.is_contiguous()
}

/// Checks a saved state tensor against its parameter and moves it to the parameter's device.
pub(crate) fn checked_state(key: &str, t: &Tensor, param: &Param) -> Result<Tensor, TrainError> {
    if t.dims() != param.var.dims() {
        return Err(TrainError::OptimizerState(format!(
            "`{key}` has shape {:?} but parameter `{}` has {:?}",
            t.dims(),
            param.name,
            param.var.dims()
        )));
    }
    // A deep copy: the optimizer updates its buffers in place.
    Ok(t.to_device(param.var.device())?
        .to_dtype(param.var.dtype())?
        .copy()?)
}

/// Splits a state key `<param>.<buffer>` where `<buffer>` is one of `buffers`.
pub(crate) fn split_key<'a>(key: &'a str, buffers: &[&str]) -> Option<(&'a str, &'a str)> {
    let (param, buf) = key.rsplit_once('.')?;
    buffers.contains(&buf).then_some((param, buf))
}
