//! CosineAnnealingLR in PyTorch's recursive form (so the lr keeps oscillating past `t_max`
//! with PyTorch's exact numbers).

use super::{parse_state, LrScheduler};
use crate::train::{Metrics, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::f64::consts::PI;

#[derive(Debug, Clone)]
pub struct CosineAnnealing {
    base_lr: f64,
    t_max: u32,
    eta_min: f64,
    epoch: u32,
    lr: f64,
}

#[derive(Serialize, Deserialize)]
struct State {
    epoch: u32,
    #[serde(with = "super::exact_f64")]
    lr: f64,
}

impl CosineAnnealing {
    /// `after_milestone`: started by SequentialLR at a milestone, where PyTorch computes the
    /// first lr with the closed form (`eta_min + (base - eta_min) * (1 + cos 0) / 2`).
    pub fn new(base_lr: f64, t_max: u32, eta_min: f64, after_milestone: bool) -> Self {
        let lr = if after_milestone {
            eta_min + (base_lr - eta_min) * (1.0 + 0f64.cos()) / 2.0
        } else {
            base_lr
        };
        CosineAnnealing {
            base_lr,
            t_max: t_max.max(1),
            eta_min,
            epoch: 0,
            lr,
        }
    }
}

impl LrScheduler for CosineAnnealing {
    fn kind(&self) -> &'static str {
        "cosine"
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn step_epoch(&mut self, _metrics: &Metrics) -> Result<(), TrainError> {
        self.epoch += 1;
        let e = self.epoch as i64;
        let t = self.t_max as i64;
        let tf = t as f64;
        self.lr = if (e - 1 - t).rem_euclid(2 * t) == 0 {
            self.lr + (self.base_lr - self.eta_min) * (1.0 - (PI / tf).cos()) / 2.0
        } else {
            (1.0 + (PI * e as f64 / tf).cos()) / (1.0 + (PI * (e - 1) as f64 / tf).cos())
                * (self.lr - self.eta_min)
                + self.eta_min
        };
        Ok(())
    }
    fn state(&self) -> Value {
        serde_json::to_value(State {
            epoch: self.epoch,
            lr: self.lr,
        })
        .unwrap_or(Value::Null)
    }
    fn load_state(&mut self, state: &Value) -> Result<(), TrainError> {
        let s: State = parse_state(self.kind(), state)?;
        self.epoch = s.epoch;
        self.lr = s.lr;
        Ok(())
    }
}
