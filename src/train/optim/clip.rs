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

/// What a training step needs to know of its gradients, as f64 scalar tensors left on the
/// gradients' device, so that the step reads them with its other numbers in one go: for each
/// gradient of `vars` that exists, in order, its sum of squares in f32 (when `norm`), then
/// `sum(g - g)` (0 when every value is finite, NaN otherwise; the sum cannot overflow).
pub fn grad_probes(grads: &GradStore, vars: &[Var], norm: bool) -> Result<Vec<Tensor>, TrainError> {
    let present: Vec<&Tensor> = vars
        .iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .collect();
    let mut out = Vec::with_capacity(present.len() * (1 + norm as usize));
    if norm {
        for g in &present {
            out.push(
                g.to_dtype(DType::F32)?
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?,
            );
        }
    }
    for g in &present {
        out.push(
            g.sub(g)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_dtype(DType::F64)?,
        );
    }
    Ok(out)
}

/// The values of [`grad_probes`] read back: whether every gradient is finite, and (when `norm`)
/// the global L2 norm, its squares added in f64 in the order [`grad_norm`] adds them (the same
/// bits).
pub fn grad_summary(values: &[f64], norm: bool) -> (bool, Option<f64>) {
    if norm {
        let (sq, fin) = values.split_at(values.len() / 2);
        let total = sq.iter().fold(0f64, |t, v| t + v).sqrt();
        (fin.iter().all(|v| v.is_finite()), Some(total))
    } else {
        (values.iter().all(|v| v.is_finite()), None)
    }
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
