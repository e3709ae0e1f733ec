//! PyTorch's SGD (`torch.optim.SGD`, single-tensor path):
//! `g += wd * p; buf = g (first step) or momentum * buf + (1 - dampening) * g;
//! g = nesterov ? g + momentum * buf : buf; p -= lr * g`.

use super::{checked_state, grad_of, split_key, Optimizer, Param};
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
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<(), TrainError> {
        for (param, buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            let Some(mut g) = grad_of(grads, &param.var)? else {
                continue;
            };
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

    fn state_tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|(p, b)| {
                b.as_ref()
                    .map(|b| (format!("{}.momentum_buffer", p.name), b.clone()))
            })
            .collect()
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
