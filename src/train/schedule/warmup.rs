//! Linear warm-up then a main schedule: PyTorch's
//! `SequentialLR([LinearLR(start_factor, total_iters=warmup_epochs), main], milestones=[warmup_epochs])`.
//! With `per_iteration`, the lr also rises linearly inside each warm-up epoch.

use super::{parse_state, LrScheduler};
use crate::train::{Metrics, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct Warmup {
    base_lr: f64,
    start_factor: f64,
    warmup_epochs: u32,
    per_iteration: bool,
    epoch: u32,
    lr: f64,
    main: Box<dyn LrScheduler>,
}

#[derive(Serialize, Deserialize)]
struct State {
    epoch: u32,
    #[serde(with = "super::exact_f64")]
    lr: f64,
    main: Value,
}

impl Warmup {
    pub fn new(
        base_lr: f64,
        start_factor: f64,
        warmup_epochs: u32,
        per_iteration: bool,
        main: Box<dyn LrScheduler>,
    ) -> Result<Self, TrainError> {
        if !(start_factor > 0.0 && start_factor <= 1.0) {
            return Err(TrainError::config(
                "scheduler.warmup_start_factor",
                format!("must be in (0, 1], got {start_factor}"),
            ));
        }
        if warmup_epochs == 0 {
            return Err(TrainError::config(
                "scheduler.warmup_epochs",
                "must be at least 1 for a warm-up",
            ));
        }
        Ok(Warmup {
            base_lr,
            start_factor,
            warmup_epochs,
            per_iteration,
            epoch: 0,
            lr: base_lr * start_factor,
            main,
        })
    }

    fn warming(&self) -> bool {
        self.epoch < self.warmup_epochs
    }
}

impl LrScheduler for Warmup {
    fn kind(&self) -> &'static str {
        // The main schedule's name: the recipe's `scheduler.kind`.
        self.main.kind()
    }
    fn lr(&self) -> f64 {
        if self.warming() {
            self.lr
        } else {
            self.main.lr()
        }
    }
    fn lr_at(&self, iter_in_epoch: usize, iters_per_epoch: usize) -> f64 {
        if !self.warming() {
            return self.main.lr_at(iter_in_epoch, iters_per_epoch);
        }
        if !self.per_iteration || iters_per_epoch == 0 || iter_in_epoch == 0 {
            return self.lr;
        }
        let progress = (self.epoch as f64 + iter_in_epoch as f64 / iters_per_epoch as f64)
            / self.warmup_epochs as f64;
        self.base_lr * (self.start_factor + (1.0 - self.start_factor) * progress.min(1.0))
    }
    fn step_epoch(&mut self, metrics: &Metrics) -> Result<(), TrainError> {
        if self.epoch >= self.warmup_epochs {
            // The main schedule runs from the milestone on (its epoch 0 is the milestone).
            self.main.step_epoch(metrics)?;
        }
        self.epoch += 1;
        if self.warming() {
            // LinearLR's recursive form with end_factor = 1.
            let s = self.start_factor;
            let w = self.warmup_epochs as f64;
            let e = self.epoch as f64;
            self.lr *= 1.0 + (1.0 - s) / (w * s + (e - 1.0) * (1.0 - s));
        }
        Ok(())
    }
    fn state(&self) -> Value {
        json!({
            "epoch": self.epoch,
            "lr": super::exact_f64::to_value(self.lr),
            "main": self.main.state(),
        })
    }
    fn load_state(&mut self, state: &Value) -> Result<(), TrainError> {
        let s: State = parse_state("warmup", state)?;
        self.main.load_state(&s.main)?;
        self.epoch = s.epoch;
        self.lr = s.lr;
        Ok(())
    }
}
