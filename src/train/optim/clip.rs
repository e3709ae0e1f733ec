//! Gradient clipping by global norm (PyTorch's `clip_grad_norm_`) and finiteness checks of
//! gradients and weights, each from one fused pass over the tensors (`grad_check`).

use super::grad_check::grad_check;
use crate::train::TrainError;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// The global L2 norm of the gradients of `vars` (missing gradients count as zero), from one
/// fused pass over them ([`grad_check`]) and one read.
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64, TrainError> {
    let Some(check) = grad_probes(grads, vars)? else {
        return Ok(0.0);
    };
    Ok(
        grad_summary(&check.to_dtype(DType::F64)?.to_vec1::<f64>()?, true)
            .1
            .unwrap_or(0.0),
    )
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

/// What a training step needs to know of its gradients, left on their device so that the step
/// reads it with its other numbers in one go: [`grad_check`] of every gradient of `vars` that
/// exists, in order (each one's sum of squares, then each one's non-finite count); `None` when
/// none exists.
pub fn grad_probes(grads: &GradStore, vars: &[Var]) -> Result<Option<Tensor>, TrainError> {
    let present: Vec<&Tensor> = vars
        .iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    Ok(Some(grad_check(&present)?))
}

/// The values of [`grad_probes`] read back: whether every gradient is finite, and (when `norm`)
/// the global L2 norm, the f32 sums of squares added in f64 in the gradients' order.
pub fn grad_summary(values: &[f64], norm: bool) -> (bool, Option<f64>) {
    let (sq, bad) = values.split_at(values.len() / 2);
    let finite = bad.iter().all(|&b| b == 0.0);
    (
        finite,
        norm.then(|| sq.iter().fold(0f64, |t, v| t + v).sqrt()),
    )
}

/// [`clip_grad_norm`] with the norm already known (from [`grad_summary`]): scales every
/// gradient by `max_norm / (norm + 1e-6)` when that is below 1 and the norm is finite.
pub fn clip_with_norm(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
    norm: f64,
) -> Result<(), TrainError> {
    if !norm.is_finite() {
        return Ok(());
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(())
}

/// [`clip_with_norm`] without reading the norm: computed on the gradients' device from
/// `check` ([`grad_probes`]; the f32 sums of squares added in f64), the coefficient
/// `min(1, max_norm / (norm + 1e-6))` (1 when the norm is not finite) multiplies every
/// gradient there.
pub fn clip_on_device(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
    check: &Tensor,
) -> Result<(), TrainError> {
    let n = check.dim(0)? / 2;
    let norm = check
        .narrow(0, 0, n)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .sqrt()?;
    let coef = Tensor::new(max_norm, check.device())?
        .div(&(&norm + 1e-6)?)?
        .minimum(1.0)?;
    // |norm| < inf is false for an infinite norm and for NaN
    let finite = norm.abs()?.lt(f64::INFINITY)?;
    let coef = finite
        .where_cond(&coef, &Tensor::ones((), DType::F64, check.device())?)?
        .to_dtype(DType::F32)?;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let scaled = g.broadcast_mul(&coef.to_dtype(g.dtype())?)?;
            grads.insert(v.as_tensor(), scaled);
        }
    }
    Ok(())
}

/// Whether every gradient of `vars` is finite (no NaN, no infinity).
pub fn grads_finite(grads: &GradStore, vars: &[Var]) -> Result<bool, TrainError> {
    let Some(check) = grad_probes(grads, vars)? else {
        return Ok(true);
    };
    Ok(grad_summary(&check.to_dtype(DType::F64)?.to_vec1::<f64>()?, false).0)
}

/// Whether every value of `vars` is finite (the weights after an update).
pub fn vars_finite(vars: &[Var]) -> Result<bool, TrainError> {
    let ts: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    if ts.is_empty() {
        return Ok(true);
    }
    let check = grad_check(&ts)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok(grad_summary(&check, false).0)
}
