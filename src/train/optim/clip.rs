//! Gradient clipping by global norm (PyTorch's `clip_grad_norm_`) and finiteness checks of
//! gradients and weights.

use crate::train::TrainError;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// The global L2 norm of the gradients of `vars` (missing gradients count as zero).
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64, TrainError> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let n = g
                .to_dtype(DType::F32)?
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            total += n;
        }
    }
    Ok(total.sqrt())
}

/// PyTorch's `clip_grad_norm_(max_norm, norm_type=2)`: when the global norm exceeds
/// `max_norm`, every gradient is multiplied by `max_norm / (total + 1e-6)`. Returns the norm
/// before clipping (non-finite when some gradient is; then nothing is scaled).
pub fn clip_grad_norm(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
) -> Result<f64, TrainError> {
    let total = grad_norm(grads, vars)?;
    if !total.is_finite() {
        return Ok(total);
    }
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(total)
}

/// Whether every gradient of `vars` is finite (no NaN, no infinity).
pub fn grads_finite(grads: &GradStore, vars: &[Var]) -> Result<bool, TrainError> {
    all_finite(vars.iter().filter_map(|v| grads.get(v.as_tensor())))
}

/// Whether every value of `vars` is finite (the weights after an update).
pub fn vars_finite(vars: &[Var]) -> Result<bool, TrainError> {
    all_finite(vars.iter().map(|v| v.as_tensor()))
}

fn all_finite<'a>(tensors: impl Iterator<Item = &'a Tensor>) -> Result<bool, TrainError> {
    for t in tensors {
        // x - x is 0 for finite x and NaN for NaN or +-inf; the sum cannot overflow.
        let s = t
            .sub(t)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        if !s.is_finite() {
            return Ok(false);
        }
    }
    Ok(true)
}
