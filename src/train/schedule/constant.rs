//! A constant learning rate (`kind = "none"`).

use super::{parse_state, LrScheduler};
use crate::train::{Metrics, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Constant {
    lr: f64,
    epoch: u32,
}

#[derive(Serialize, Deserialize)]
struct State {
    epoch: u32,
}

impl Constant {
    pub fn new(lr: f64) -> Self {
        Constant { lr, epoch: 0 }
    }
}

impl LrScheduler for Constant {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn step_epoch(&mut self, _metrics: &Metrics) -> Result<(), TrainError> {
        self.epoch += 1;
        Ok(())
    }
    fn state(&self) -> Value {
        serde_json::to_value(State { epoch: self.epoch }).unwrap_or(Value::Null)
    }
    fn load_state(&mut self, state: &Value) -> Result<(), TrainError> {
        let s: State = parse_state(self.kind(), state)?;
        self.epoch = s.epoch;
        Ok(())
    }
}
