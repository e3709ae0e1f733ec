//! PyTorch's AdamW (`torch.optim.AdamW`, single-tensor path): decoupled weight decay
//! `p *= 1 - lr * wd`, moments with bias correction,
//! `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.

use super::fused::{AdamExpAvg, AdamExpAvgSq, AdamParam, AdamWStepCuda};
use super::{checked_state, cuda_fusable, fusable, grad_of, split_key, Optimizer, Param};
use crate::train::TrainError;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

#[derive(Clone)]
struct Moments {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

pub struct AdamW {
    params: Vec<Param>,
    hp: AdamWParams,
    state: Vec<Option<Moments>>,
    fused: bool,
}

const BUFFERS: &[&str] = &["step", "exp_avg", "exp_avg_sq"];

impl AdamW {
    pub fn new(params: Vec<Param>, hp: AdamWParams) -> Result<Self, TrainError> {
        for (b, key) in [
            (hp.beta1, "optimizer.betas[0]"),
            (hp.beta2, "optimizer.betas[1]"),
        ] {
            if !(0.0..1.0).contains(&b) {
                return Err(TrainError::config(
                    key,
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        if !(hp.eps >= 0.0 && hp.eps.is_finite()) {
            return Err(TrainError::config(
                "optimizer.eps",
                format!("must be >= 0, got {}", hp.eps),
            ));
        }
        let n = params.len();
        Ok(AdamW {
            params,
            hp,
            state: vec![None; n],
            fused: true,
        })
    }

    /// Turns the fused in-place CPU kernels off (tensor ops only; same results). On by default.
    pub fn with_fused(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<(), TrainError> {
        let AdamWParams { beta1, beta2, eps } = self.hp;
        for (param, st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grad_of(grads, &param.var)? else {
                continue;
            };
            let lr = lr * param.lr_scale;
            let m = match st.take() {
                Some(m) => m,
                None => Moments {
                    step: 0,
                    exp_avg: g.zeros_like()?,
                    exp_avg_sq: g.zeros_like()?,
                },
            };
            let step = m.step + 1;
            if self.fused && cuda_fusable(&param.var, &g) {
                let (bc1, bc2_sqrt) = (
                    1.0 - beta1.powi(step as i32),
                    (1.0 - beta2.powi(step as i32)).sqrt(),
                );
                let decay = if param.weight_decay != 0.0 {
                    1.0 - lr * param.weight_decay
                } else {
                    1.0
                };
                param.var.as_tensor().inplace_op3(
                    &m.exp_avg,
                    &m.exp_avg_sq,
                    &AdamWStepCuda {
                        g: g.clone(),
                        one_minus_beta1: (1.0 - beta1) as f32,
                        beta2: beta2 as f32,
                        one_minus_beta2: (1.0 - beta2) as f32,
                        decay: decay as f32,
                        inv_bc2_sqrt: (1.0 / bc2_sqrt) as f32,
                        eps: eps as f32,
                        step_size: (lr / bc1) as f32,
                    },
                )?;
                *st = Some(Moments { step, ..m });
                continue;
            }
            if self.fused && fusable(&param.var, &g) {
                let (bc1, bc2_sqrt) = (
                    1.0 - beta1.powi(step as i32),
                    (1.0 - beta2.powi(step as i32)).sqrt(),
                );
                let decay = if param.weight_decay != 0.0 {
                    1.0 - lr * param.weight_decay
                } else {
                    1.0
                };
                m.exp_avg.inplace_op2(
                    &g,
                    &AdamExpAvg {
                        one_minus_beta1: (1.0 - beta1) as f32,
                    },
                )?;
                m.exp_avg_sq.inplace_op2(
                    &g,
                    &AdamExpAvgSq {
                        beta2: beta2 as f32,
                        one_minus_beta2: (1.0 - beta2) as f32,
                    },
                )?;
                param.var.as_tensor().inplace_op3(
                    &m.exp_avg,
                    &m.exp_avg_sq,
                    &AdamParam {
                        decay: decay as f32,
                        inv_bc2_sqrt: (1.0 / bc2_sqrt) as f32,
                        eps: eps as f32,
                        step_size: (lr / bc1) as f32,
                    },
                )?;
                *st = Some(Moments { step, ..m });
                continue;
            }
            let mut p = param.var.as_tensor().clone();
            if param.weight_decay != 0.0 {
                p = (p * (1.0 - lr * param.weight_decay))?;
            }
            // lerp: m + (1 - b1) * (g - m)
            let exp_avg = (&m.exp_avg + ((&g - &m.exp_avg)? * (1.0 - beta1))?)?;
            let exp_avg_sq = ((m.exp_avg_sq * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let bc1 = 1.0 - beta1.powi(step as i32);
            let bc2_sqrt = (1.0 - beta2.powi(step as i32)).sqrt();
            let step_size = lr / bc1;
            let denom = ((exp_avg_sq.sqrt()? / bc2_sqrt)? + eps)?;
            let p = (p - (exp_avg.div(&denom)? * step_size)?)?;
            param.var.set(&p)?;
            *st = Some(Moments {
                step,
                exp_avg,
                exp_avg_sq,
            });
        }
        Ok(())
    }

    fn state_tensors(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let mut out = HashMap::new();
        for (p, st) in self.params.iter().zip(&self.state) {
            let Some(m) = st else { continue };
            let step = Tensor::new(&[m.step as i64], &Device::Cpu)?.to_device(p.var.device())?;
            out.insert(format!("{}.step", p.name), step);
            out.insert(format!("{}.exp_avg", p.name), m.exp_avg.copy()?);
            out.insert(format!("{}.exp_avg_sq", p.name), m.exp_avg_sq.copy()?);
        }
        Ok(out)
    }

    fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        let n = self.params.len();
        let (mut steps, mut avgs, mut sqs) = (vec![None; n], vec![None; n], vec![None; n]);
        for (key, t) in state {
            let (name, buf) = split_key(key, BUFFERS).ok_or_else(|| {
                TrainError::OptimizerState(format!("unknown AdamW state entry `{key}`"))
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
            match buf {
                "step" => {
                    let v = t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
                    match v.as_slice() {
                        [s] if *s >= 0 => steps[i] = Some(*s as u64),
                        _ => {
                            return Err(TrainError::OptimizerState(format!(
                                "`{key}` must hold one non-negative step count"
                            )))
                        }
                    }
                }
                "exp_avg" => avgs[i] = Some(checked_state(key, t, &self.params[i])?),
                _ => sqs[i] = Some(checked_state(key, t, &self.params[i])?),
            }
        }
        let mut new_state = Vec::with_capacity(n);
        for (i, ((s, a), q)) in steps.into_iter().zip(avgs).zip(sqs).enumerate() {
            new_state.push(match (s, a, q) {
                (None, None, None) => None,
                (Some(step), Some(exp_avg), Some(exp_avg_sq)) => Some(Moments {
                    step,
                    exp_avg,
                    exp_avg_sq,
                }),
                _ => {
                    return Err(TrainError::OptimizerState(format!(
                        "parameter `{}` needs all of step, exp_avg and exp_avg_sq",
                        self.params[i].name
                    )))
                }
            });
        }
        self.state = new_state;
        Ok(())
    }

    fn params(&self) -> &[Param] {
        &self.params
    }
}
