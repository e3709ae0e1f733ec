//! ReduceLROnPlateau: divide the lr when a monitored metric stops improving (PyTorch's rules
//! for mode, threshold / threshold_mode, patience, cooldown, min_lr and eps).

use super::{parse_state, LrScheduler};
use crate::recipe::{PlateauMode, SchedulerConfig, ThresholdMode};
use crate::train::{Metrics, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Plateau {
    monitor: String,
    mode: PlateauMode,
    factor: f64,
    patience: u32,
    threshold: f64,
    threshold_mode: ThresholdMode,
    cooldown: u32,
    min_lr: f64,
    eps: f64,
    // state
    epoch: u32,
    lr: f64,
    best: f64,
    num_bad_epochs: u32,
    cooldown_counter: u32,
}

#[derive(Serialize, Deserialize)]
struct State {
    epoch: u32,
    #[serde(with = "super::exact_f64")]
    lr: f64,
    /// PyTorch's +-inf while nothing has been seen.
    #[serde(with = "super::exact_f64")]
    best: f64,
    num_bad_epochs: u32,
    cooldown_counter: u32,
}

impl Plateau {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        base_lr: f64,
        monitor: &str,
        mode: PlateauMode,
        factor: f64,
        patience: u32,
        threshold: f64,
        threshold_mode: ThresholdMode,
        cooldown: u32,
        min_lr: f64,
        eps: f64,
    ) -> Result<Self, TrainError> {
        if !(0.0..1.0).contains(&factor) {
            return Err(TrainError::config(
                "scheduler.factor",
                format!("must be in [0, 1), got {factor}"),
            ));
        }
        let mut p = Plateau {
            monitor: monitor.to_string(),
            mode,
            factor,
            patience,
            threshold,
            threshold_mode,
            cooldown,
            min_lr,
            eps,
            epoch: 0,
            lr: base_lr,
            best: 0.0,
            num_bad_epochs: 0,
            cooldown_counter: 0,
        };
        p.best = p.worst();
        Ok(p)
    }

    pub fn from_config(cfg: &SchedulerConfig, base_lr: f64) -> Result<Self, TrainError> {
        Plateau::new(
            base_lr,
            cfg.monitor(),
            cfg.mode(),
            cfg.factor(),
            cfg.patience(),
            cfg.threshold(),
            cfg.threshold_mode(),
            cfg.cooldown(),
            cfg.min_lr(),
            cfg.plateau_eps(),
        )
    }

    /// The metric this scheduler watches.
    pub fn monitor(&self) -> &str {
        &self.monitor
    }

    fn worst(&self) -> f64 {
        match self.mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        }
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, t) = (self.best, self.threshold);
        match (self.mode, self.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - t),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - t,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (t + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + t,
        }
    }

    /// PyTorch's `step(metrics)` with the monitored value.
    pub fn observe(&mut self, current: f64) {
        self.epoch += 1;
        if self.is_better(current) {
            self.best = current;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.patience {
            let new_lr = (self.lr * self.factor).max(self.min_lr);
            if self.lr - new_lr > self.eps {
                self.lr = new_lr;
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad_epochs = 0;
        }
    }
}

impl LrScheduler for Plateau {
    fn kind(&self) -> &'static str {
        "plateau"
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn step_epoch(&mut self, metrics: &Metrics) -> Result<(), TrainError> {
        let current = *metrics.get(&self.monitor).ok_or_else(|| {
            let mut logged: Vec<&str> = metrics.keys().map(String::as_str).collect();
            logged.sort_unstable();
            TrainError::MissingMetric {
                name: self.monitor.clone(),
                by: "scheduler.monitor (plateau)".into(),
                logged: logged.join(", "),
            }
        })?;
        self.observe(current);
        Ok(())
    }
    fn state(&self) -> Value {
        serde_json::to_value(State {
            epoch: self.epoch,
            lr: self.lr,
            best: self.best,
            num_bad_epochs: self.num_bad_epochs,
            cooldown_counter: self.cooldown_counter,
        })
        .unwrap_or(Value::Null)
    }
    fn load_state(&mut self, state: &Value) -> Result<(), TrainError> {
        let s: State = parse_state(self.kind(), state)?;
        self.epoch = s.epoch;
        self.lr = s.lr;
        self.best = s.best;
        self.num_bad_epochs = s.num_bad_epochs;
        self.cooldown_counter = s.cooldown_counter;
        Ok(())
    }
}
