//! Mixed-precision helpers: the compute dtype of a recipe's `train.precision` and PyTorch's
//! dynamic loss scaling (`torch.amp.GradScaler`) for f16, whose narrow range overflows.
//!
//! Master weights stay f32 Vars; the forward casts them (`to_dtype` has a backward, so the
//! gradients arrive in f32). With f16: `scaler.scale_loss(&loss)` before `backward`, then
//! `scaler.unscale(&mut grads, &vars)` (false = overflow: skip the optimizer step, which is
//! not a divergence), then `scaler.update(found_inf)` every step. [`MixedPrecision`] bundles
//! the three for a training loop.

use crate::recipe::Precision;
use crate::train::optim::grads_finite;
use crate::train::TrainError;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

/// The dtype the forward and backward run in.
pub fn compute_dtype(p: Precision) -> DType {
    match p {
        Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
        Precision::F16 => DType::F16,
    }
}

/// PyTorch's GradScaler: scale 2^16, x2 after 2000 clean steps, x0.5 on overflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    pub enabled: bool,
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u32,
    /// Clean steps since the last change of scale.
    pub growth_tracker: u32,
}

impl GradScaler {
    pub fn new(enabled: bool) -> Self {
        GradScaler {
            enabled,
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            growth_tracker: 0,
        }
    }

    /// Enabled for f16 only (bf16 has f32's range).
    pub fn for_precision(p: Precision) -> Self {
        GradScaler::new(p == Precision::F16)
    }

    /// `loss * scale` (the loss itself when disabled).
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor, TrainError> {
        if !self.enabled {
            return Ok(loss.clone());
        }
        Ok((loss * self.scale)?)
    }

    /// Divides the gradients of `vars` by the scale; returns whether all are finite (when
    /// not, the step must be skipped). Disabled: only the finiteness check.
    pub fn unscale(&self, grads: &mut GradStore, vars: &[Var]) -> Result<bool, TrainError> {
        self.unscale_only(grads, vars)?;
        grads_finite(grads, vars)
    }

    /// Divides the gradients of `vars` by the scale (when enabled), on their device, reading
    /// nothing back: the step checks their finiteness with its other numbers
    /// ([`MixedPrecision::after_check`]).
    pub fn unscale_only(&self, grads: &mut GradStore, vars: &[Var]) -> Result<(), TrainError> {
        if self.enabled {
            let inv = 1.0 / self.scale;
            for v in vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    let g = (g * inv)?;
                    grads.insert(v.as_tensor(), g);
                }
            }
        }
        Ok(())
    }

    /// Adjusts the scale after a step: back off on overflow, grow after
    /// `growth_interval` clean steps.
    pub fn update(&mut self, found_inf: bool) {
        if !self.enabled {
            return;
        }
        if found_inf {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
        }
    }
}

/// What a training step does after the backward pass of [`MixedPrecision::backward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepVerdict {
    /// The gradients are unscaled (f16) and may be applied.
    Apply,
    /// f16 only: the scaled gradients overflowed; skip the optimizer step (the scale has
    /// been halved). Not a divergence.
    SkipOverflow,
}

/// A training loop's precision: the dtype images enter the network in, and (f16) the loss
/// scaler. In f32 every method is the identity.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedPrecision {
    pub dtype: DType,
    pub scaler: GradScaler,
}

impl MixedPrecision {
    pub fn new(p: Precision) -> Self {
        MixedPrecision {
            dtype: compute_dtype(p),
            scaler: GradScaler::for_precision(p),
        }
    }

    /// The network's input in the compute dtype.
    pub fn input(&self, images: &Tensor) -> Result<Tensor, TrainError> {
        Ok(images.to_dtype(self.dtype)?)
    }

    /// Logits or embeddings back in f32, for the loss (softmax in f32, as autocast does).
    pub fn output(&self, y: &Tensor) -> Result<Tensor, TrainError> {
        Ok(y.to_dtype(DType::F32)?)
    }

    /// Backward of the (scaled, for f16) loss.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore, TrainError> {
        Ok(self.scaler.scale_loss(loss)?.backward()?)
    }

    /// f16: unscales the gradients, updates the scale, and says whether to apply them.
    /// Otherwise `Apply` (non-finite gradients are then the divergence guard's business).
    /// Unscales the gradients on their device (f16), reading nothing back; then
    /// [`MixedPrecision::after_check`] with their finiteness.
    pub fn unscale(&self, grads: &mut GradStore, vars: &[Var]) -> Result<(), TrainError> {
        self.scaler.unscale_only(grads, vars)
    }

    /// [`MixedPrecision::after_backward`] with the unscaled gradients' finiteness known
    /// (read back with the step's other numbers): updates the loss scale and says whether to
    /// apply the step.
    pub fn after_check(&mut self, grads_finite: bool, loss: f64) -> StepVerdict {
        if !self.scaler.enabled {
            return StepVerdict::Apply;
        }
        self.scaler.update(!grads_finite);
        if !grads_finite && loss.is_finite() {
            StepVerdict::SkipOverflow
        } else {
            StepVerdict::Apply
        }
    }

    pub fn after_backward(
        &mut self,
        grads: &mut GradStore,
        vars: &[Var],
        loss: f64,
    ) -> Result<StepVerdict, TrainError> {
        if !self.scaler.enabled {
            return Ok(StepVerdict::Apply);
        }
        let finite = self.scaler.unscale(grads, vars)?;
        self.scaler.update(!finite);
        // A non-finite loss is a divergence, not an overflow of the scaled gradients.
        Ok(if !finite && loss.is_finite() {
            StepVerdict::SkipOverflow
        } else {
            StepVerdict::Apply
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn scale_follows_pytorch_rules() {
        let mut s = GradScaler::for_precision(Precision::F16);
        assert!(s.enabled);
        s.update(true);
        assert_eq!(s.scale, 32768.0);
        s.growth_interval = 3;
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 32768.0);
        s.update(false);
        assert_eq!(s.scale, 65536.0);
        assert_eq!(s.growth_tracker, 0);
        let mut off = GradScaler::for_precision(Precision::Bf16);
        off.update(true);
        assert_eq!(off.scale, 65536.0);
    }

    #[test]
    fn f16_overflow_is_caught_and_unscaled_grads_are_right() -> Result<(), TrainError> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev)?)?;
        let s = GradScaler::new(true);
        // loss = 1e-3 * sum(w16 * c), reduced in f32 (as autocast does); grad w.r.t. w is
        // 1e-3 * c, reaching w in f32 through to_dtype's backward.
        let run = |c: f32| -> Result<(GradStore, bool), TrainError> {
            let c = Tensor::new(&[c, 1.0], &dev)?.to_dtype(DType::F16)?;
            let prod = w.as_tensor().to_dtype(DType::F16)?.mul(&c)?;
            let loss = (prod.to_dtype(DType::F32)?.sum_all()? * 1e-3)?;
            let mut grads = s.scale_loss(&loss)?.backward()?;
            let ok = s.unscale(&mut grads, std::slice::from_ref(&w))?;
            Ok((grads, ok))
        };
        let (grads, ok) = run(3.0)?;
        assert!(ok);
        let g = grads.get(w.as_tensor()).expect("grad");
        assert_eq!(g.dtype(), DType::F32);
        let g = g.to_vec1::<f32>()?;
        assert!(
            (g[0] - 3e-3).abs() < 1e-5 && (g[1] - 1e-3).abs() < 1e-5,
            "{g:?}"
        );
        // 65.536 * 1000 overflows f16 in the backward: caught.
        let (_, ok) = run(1000.0)?;
        assert!(!ok);
        Ok(())
    }

    #[test]
    fn overflow_skips_the_step_but_a_nan_loss_is_left_to_the_divergence_guard(
    ) -> Result<(), TrainError> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev)?)?;
        let vars = [w.clone()];
        let grads_for = |mp: &MixedPrecision, c: f32| -> Result<GradStore, TrainError> {
            let c = Tensor::new(&[c, 1.0], &dev)?;
            let y = mp.input(w.as_tensor())?.mul(&mp.input(&c)?)?;
            let loss = (mp.output(&y)?.sum_all()? * 1e-3)?;
            mp.backward(&loss)
        };
        let mut mp = MixedPrecision::new(Precision::F16);
        assert_eq!(mp.dtype, DType::F16);
        let mut g = grads_for(&mp, 1000.0)?;
        assert_eq!(
            mp.after_backward(&mut g, &vars, 0.5)?,
            StepVerdict::SkipOverflow
        );
        assert_eq!(mp.scaler.scale, 32768.0);
        // the same overflow with a NaN loss: applied, so that the guard sees it
        let mut g = grads_for(&mp, 1000.0)?;
        assert_eq!(
            mp.after_backward(&mut g, &vars, f64::NAN)?,
            StepVerdict::Apply
        );
        // clean step: unscaled f32 gradients
        let mut g = grads_for(&mp, 3.0)?;
        assert_eq!(mp.after_backward(&mut g, &vars, 0.5)?, StepVerdict::Apply);
        let gv = g.get(w.as_tensor()).expect("grad").to_vec1::<f32>()?;
        assert!((gv[0] - 3e-3).abs() < 1e-5, "{gv:?}");
        // bf16 / f32: no scaler, always Apply
        let mut bf = MixedPrecision::new(Precision::Bf16);
        assert_eq!(bf.dtype, DType::BF16);
        let mut g = grads_for(&bf, 1000.0)?;
        assert_eq!(bf.after_backward(&mut g, &vars, 0.5)?, StepVerdict::Apply);
        Ok(())
    }
}
