//! Training-step throughput of a model: forward + backward + plain SGD step on random input,
//! images per second and the split between the three phases (medians).

use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use super::face::ForwardCtx;
use super::weights::is_buffer;
use super::{build, ModelError};
use crate::recipe::ModelConfig;

/// Median timings of one training step.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub images_per_sec: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub step_ms: f64,
    pub batch: usize,
    pub input_hw: (usize, usize),
    pub steps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `steps` timed training steps (after one warm-up) of the model `cfg` describes on
/// `device`: forward in train mode, mean cross-entropy on random labels, backward, and an SGD
/// update of every non-buffer variable.
pub fn bench_model(
    cfg: &ModelConfig,
    num_classes: usize,
    input_hw: (usize, usize),
    batch: usize,
    steps: usize,
    device: &Device,
) -> Result<TrainBench, ModelError> {
    let s = Stepper::new(cfg, num_classes, input_hw, batch, device)?;
    s.step()?;
    let mut v = Vec::new();
    for _ in 0..steps.max(1) {
        v.push(s.step()?);
    }
    Ok(summarise(v, batch, input_hw))
}

/// Like `bench_model` on the CPU, alternating steps with the project kernels and with plain
/// Candle ops (`kernels::set_reference_mode`), so that machine load hits both alike. Returns
/// (project kernels, plain Candle).
pub fn bench_model_vs_candle(
    cfg: &ModelConfig,
    num_classes: usize,
    input_hw: (usize, usize),
    batch: usize,
    steps: usize,
) -> Result<(TrainBench, TrainBench), ModelError> {
    let s = Stepper::new(cfg, num_classes, input_hw, batch, &Device::Cpu)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let run = |reference: bool| {
        crate::kernels::set_reference_mode(reference);
        let r = s.step();
        crate::kernels::set_reference_mode(false);
        r
    };
    run(false)?;
    run(true)?;
    for _ in 0..steps.max(1) {
        ours.push(run(false)?);
        theirs.push(run(true)?);
    }
    Ok((
        summarise(ours, batch, input_hw),
        summarise(theirs, batch, input_hw),
    ))
}

fn summarise(v: Vec<(f64, f64, f64)>, batch: usize, input_hw: (usize, usize)) -> TrainBench {
    let steps = v.len();
    let f = median(v.iter().map(|t| t.0).collect());
    let b = median(v.iter().map(|t| t.1).collect());
    let s = median(v.iter().map(|t| t.2).collect());
    TrainBench {
        images_per_sec: batch as f64 / (f + b + s),
        forward_ms: f * 1e3,
        backward_ms: b * 1e3,
        step_ms: s * 1e3,
        batch,
        input_hw,
        steps,
    }
}

/// A model, its trainable variables and a fixed random batch.
struct Stepper {
    model: Box<dyn super::FaceModel>,
    params: Vec<candle_core::Var>,
    x: Tensor,
    onehot: Tensor,
    batch: usize,
    _varmap: VarMap,
}

impl Stepper {
    fn new(
        cfg: &ModelConfig,
        num_classes: usize,
        input_hw: (usize, usize),
        batch: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let model = build(
            cfg,
            num_classes,
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        let params: Vec<_> = {
            let data = varmap.data().lock().map_err(|_| ModelError::Poisoned)?;
            data.iter()
                .filter(|(n, _)| !is_buffer(n))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let x = Tensor::randn(0f32, 1.0, (batch, 3, input_hw.0, input_hw.1), device)?;
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % num_classes as u32).collect();
        let labels = Tensor::from_vec(labels, batch, device)?;
        let onehot = candle_nn::encoding::one_hot(labels, num_classes, 1f32, 0f32)?;
        Ok(Self {
            model,
            params,
            x,
            onehot,
            batch,
            _varmap: varmap,
        })
    }

    /// One training step: seconds of (forward + loss, backward, SGD update).
    fn step(&self) -> Result<(f64, f64, f64), ModelError> {
        let mut ctx = ForwardCtx::train(0);
        let t = Instant::now();
        let logits = self.model.forward(&self.x, &mut ctx)?;
        let m = logits.max_keepdim(D::Minus1)?.detach();
        let lse = (logits
            .broadcast_sub(&m)?
            .exp()?
            .sum_keepdim(D::Minus1)?
            .log()?
            + m)?;
        let logp = logits.broadcast_sub(&lse)?;
        let loss = ((logp * &self.onehot)?.sum_all()? * (-1.0 / self.batch as f64))?;
        loss.to_scalar::<f32>()?;
        let tf = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward()?;
        let tb = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for v in &self.params {
            if let Some(g) = grads.get(v) {
                v.set(&(v.as_tensor() - (g * 1e-3)?)?)?;
            }
        }
        Ok((tf, tb, t.elapsed().as_secs_f64()))
    }
}
