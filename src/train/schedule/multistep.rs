//! MultiStepLR: multiply the lr by `gamma` at each milestone epoch (PyTorch's recursive form;
//! a milestone listed twice decays twice).

use super::{parse_state, LrScheduler};
use crate::train::{Metrics, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct MultiStep {
    milestones: Vec<u32>,
    gamma: f64,
    epoch: u32,
    lr: f64,
}

#[derive(Serialize, Deserialize)]
struct State {
    epoch: u32,
    #[serde(with = "super::exact_f64")]
    lr: f64,
}

impl MultiStep {
    pub fn new(base_lr: f64, milestones: Vec<u32>, gamma: f64) -> Result<Self, TrainError> {
        if milestones.is_empty() {
            return Err(TrainError::config(
                "scheduler.milestones",
                "must list at least one epoch",
            ));
        }
        if milestones.windows(2).any(|w| w[0] > w[1]) {
            return Err(TrainError::config(
                "scheduler.milestones",
                format!("must be increasing, got {milestones:?}"),
            ));
        }
        Ok(MultiStep {
            milestones,
            gamma,
            epoch: 0,
            lr: base_lr,
        })
    }
}

impl LrScheduler for MultiStep {
    fn kind(&self) -> &'static str {
        "multistep"
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn step_epoch(&mut self, _metrics: &Metrics) -> Result<(), TrainError> {
        self.epoch += 1;
        let count = self.milestones.iter().filter(|&&m| m == self.epoch).count();
        if count > 0 {
            self.lr *= self.gamma.powi(count as i32);
        }
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
