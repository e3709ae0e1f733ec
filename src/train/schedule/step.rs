//! StepLR: multiply the lr by `gamma` every `step_size` epochs (PyTorch's recursive form).

use super::{parse_state, LrScheduler};
use crate::train::{Metrics, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Step {
    step_size: u32,
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

impl Step {
    pub fn new(base_lr: f64, step_size: u32, gamma: f64) -> Result<Self, TrainError> {
        if step_size == 0 {
            return Err(TrainError::config(
                "scheduler.step_size",
                "must be at least 1",
            ));
        }
        Ok(Step {
            step_size,
            gamma,
            epoch: 0,
            lr: base_lr,
        })
    }
}

impl LrScheduler for Step {
    fn kind(&self) -> &'static str {
        "step"
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn step_epoch(&mut self, _metrics: &Metrics) -> Result<(), TrainError> {
        self.epoch += 1;
        if self.epoch.is_multiple_of(self.step_size) {
            self.lr *= self.gamma;
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
