//! PyTorch's SGD (`torch.optim.SGD`, single-tensor path):
//! `g += wd * p; buf = g (first step) or momentum * buf + (1 - dampening) * g;
//! g = nesterov ? g + momentum * buf : buf; p -= lr * g`.

use super::fused::{SgdBuffer, SgdParam, SgdStepCuda};
use super::{checked_state, cuda_fusable, fusable, grad_of, split_key, Optimizer, Param};
use crate::train::TrainError;
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
}

pub struct Sgd {
    params: Vec<Param>,
    hp: SgdParams,
    /// One momentum buffer per parameter, `None` until its first step.
    buffers: Vec<Option<Tensor>>,
    fused: bool,
}

const BUFFERS: &[&str] = &["momentum_buffer"];

impl Sgd {
    pub fn new(params: Vec<Param>, hp: SgdParams) -> Result<Self, TrainError> {
        if !(hp.momentum >= 0.0 && hp.momentum.is_finite()) {
            return Err(TrainError::config(
                "optimizer.momentum",
                format!("must be >= 0, got {}", hp.momentum),
            ));
        }
        if hp.nesterov && (hp.momentum <= 0.0 || hp.dampening != 0.0) {
            return Err(TrainError::config(
                "optimizer.nesterov",
                "Nesterov momentum requires a momentum and zero dampening",
            ));
        }
        let n = params.len();
        Ok(Sgd {
            params,
            hp,
            buffers: vec![None; n],
            fused: true,
        })
    }

    /// Turns the fused in-place CPU kernels off (tensor ops only; same results). On by default.
    pub fn with_fused(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
    }

    /// One kernel on CUDA: the buffer (fresh zeros on its first step) and the parameter.
    fn step_cuda(&mut self, i: usize, g: &Tensor, lr: f64) -> Result<(), TrainError> {
        let param = &self.params[i];
        let has_momentum = self.hp.momentum != 0.0;
        let first = self.buffers[i].is_none();
        // without momentum the kernel reads no buffer: a one-element stand-in (not `g`
        // itself, which would be locked twice by the in-place op)
        let buf = match self.buffers[i].take() {
            Some(b) => b,
            None if has_momentum => g.zeros_like()?,
            None => Tensor::zeros(1, candle_core::DType::F32, g.device())?,
        };
        param.var.as_tensor().inplace_op3(
            g,
            &buf,
            &SgdStepCuda {
                lr: lr as f32,
                momentum: self.hp.momentum as f32,
                one_minus_dampening: (1.0 - self.hp.dampening) as f32,
                weight_decay: param.weight_decay as f32,
                has_momentum,
                nesterov: self.hp.nesterov,
                first,
            },
        )?;
        if has_momentum {
            self.buffers[i] = Some(buf);
        }
        Ok(())
    }

    fn step_fused(&mut self, i: usize, g: &Tensor, lr: f64) -> Result<(), TrainError> {
        let param = &self.params[i];
        let p = param.var.as_tensor();
        let wd = param.weight_decay as f32;
        let has_momentum = self.hp.momentum != 0.0;
        if has_momentum {
            let first = self.buffers[i].is_none();
            let buf = match self.buffers[i].take() {
                Some(b) => b,
                None => g.copy()?,
            };
            buf.inplace_op3(
                g,
                p,
                &SgdBuffer {
                    momentum: self.hp.momentum as f32,
                    one_minus_dampening: (1.0 - self.hp.dampening) as f32,
                    weight_decay: wd,
                    first,
                },
            )?;
            self.buffers[i] = Some(buf);
        }
        let b = self.buffers[i].as_ref().unwrap_or(g);
        p.inplace_op3(
            g,
            b,
            &SgdParam {
                lr: lr as f32,
                momentum: self.hp.momentum as f32,
                weight_decay: wd,
                has_momentum,
                nesterov: self.hp.nesterov,
            },
        )?;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<(), TrainError> {
        for i in 0..self.params.len() {
            let Some(mut g) = grad_of(grads, &self.params[i].var)? else {
                continue;
            };
            let lr = lr * self.params[i].lr_scale;
            if self.fused && fusable(&self.params[i].var, &g) {
                self.step_fused(i, &g, lr)?;
                continue;
            }
            if self.fused && cuda_fusable(&self.params[i].var, &g) {
                self.step_cuda(i, &g, lr)?;
                continue;
            }
            let (param, buf) = (&self.params[i], &mut self.buffers[i]);
            let p = param.var.as_tensor();
            if param.weight_decay != 0.0 {
                g = (g + (p * param.weight_decay)?)?;
            }
            if self.hp.momentum != 0.0 {
                let b = match buf.take() {
                    None => g.copy()?,
                    Some(b) => ((b * self.hp.momentum)? + (&g * (1.0 - self.hp.dampening))?)?,
                };
                g = if self.hp.nesterov {
                    (g + (&b * self.hp.momentum)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
            }
            param.var.set(&(p - (g * lr)?)?)?;
        }
        Ok(())
    }

    fn state_tensors(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let mut out = HashMap::new();
        for (p, b) in self.params.iter().zip(&self.buffers) {
            if let Some(b) = b {
                out.insert(format!("{}.momentum_buffer", p.name), b.copy()?);
            }
        }
        Ok(out)
    }

    fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        let mut buffers = vec![None; self.params.len()];
        for (key, t) in state {
            let (name, _) = split_key(key, BUFFERS).ok_or_else(|| {
                TrainError::OptimizerState(format!("unknown SGD state entry `{key}`"))
            })?;
            let i = self
                .params
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| {
                    TrainError::OptimizerState(format!(
                        "`{key}` belongs to no parameter of this model"
                    ))
                })?;
            buffers[i] = Some(checked_state(key, t, &self.params[i])?);
        }
        self.buffers = buffers;
        Ok(())
    }

    fn params(&self) -> &[Param] {
        &self.params
    }
}
