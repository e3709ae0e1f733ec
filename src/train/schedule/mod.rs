//! Learning-rate schedulers (PyTorch's StepLR, MultiStepLR, CosineAnnealingLR, LinearLR warm-up
//! via SequentialLR, ReduceLROnPlateau), one file each behind [`LrScheduler`], built by [`build`].
//!
//! Convention (the fixtures'): [`Schedule::lr`] is the lr used during the current epoch; the loop
//! calls [`Schedule::step_epoch`] once after each epoch with that epoch's metrics. Each
//! scheduler follows PyTorch's recursive ("chainable") form so the numbers match bit for bit.

mod constant;
mod cosine;
mod multistep;
mod plateau;
mod step;
mod warmup;

pub use constant::Constant;
pub use cosine::CosineAnnealing;
pub use multistep::MultiStep;
pub use plateau::Plateau;
pub use step::Step;
pub use warmup::Warmup;

use super::{Metrics, TrainError};
use crate::recipe::{SchedulerConfig, SchedulerKind};
use serde_json::{json, Value};

/// One learning-rate schedule, stepped once per epoch.
pub trait LrScheduler: Send + std::fmt::Debug {
    /// A short name (`step`, `cosine`, ...), also stored in the state.
    fn kind(&self) -> &'static str;
    /// The lr to use during the current epoch.
    fn lr(&self) -> f64;
    /// The lr at iteration `iter_in_epoch` of `iters_per_epoch` of the current epoch
    /// (differs from [`LrScheduler::lr`] only during per-iteration warm-up).
    fn lr_at(&self, _iter_in_epoch: usize, _iters_per_epoch: usize) -> f64 {
        self.lr()
    }
    /// Ends the current epoch; `metrics` are that epoch's logged metrics.
    fn step_epoch(&mut self, metrics: &Metrics) -> Result<(), TrainError>;
    /// Everything needed to continue exactly where this schedule stands.
    fn state(&self) -> Value;
    /// Restores a [`LrScheduler::state`].
    fn load_state(&mut self, state: &Value) -> Result<(), TrainError>;
}

/// A schedule plus an lr scale factor (for divergence rollback); what the loop holds. The
/// scale multiplies whatever the schedule says (ReduceLROnPlateau's `min_lr` bounds the
/// unscaled lr).
#[derive(Debug)]
pub struct Schedule {
    inner: Box<dyn LrScheduler>,
    scale: f64,
}

impl Schedule {
    pub fn new(inner: Box<dyn LrScheduler>) -> Self {
        Schedule { inner, scale: 1.0 }
    }
    /// The lr for the current epoch (scaled).
    pub fn lr(&self) -> f64 {
        self.inner.lr() * self.scale
    }
    /// The lr for one iteration of the current epoch (scaled; per-iteration warm-up aware).
    pub fn lr_at(&self, iter_in_epoch: usize, iters_per_epoch: usize) -> f64 {
        self.inner.lr_at(iter_in_epoch, iters_per_epoch) * self.scale
    }
    /// Ends the current epoch with its metrics (ReduceLROnPlateau reads its monitored one).
    pub fn step_epoch(&mut self, metrics: &Metrics) -> Result<(), TrainError> {
        self.inner.step_epoch(metrics)
    }
    pub fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    pub fn lr_scale(&self) -> f64 {
        self.scale
    }
    pub fn set_lr_scale(&mut self, scale: f64) {
        self.scale = scale;
    }
    /// Multiplies the lr scale by `factor` (a rollback's `rollback_factor`).
    pub fn scale_lr(&mut self, factor: f64) {
        self.scale *= factor;
    }
    /// JSON state: `{"kind", "lr_scale", "inner"}`.
    pub fn state(&self) -> Value {
        json!({
            "kind": self.inner.kind(),
            "lr_scale": exact_f64::to_value(self.scale),
            "inner": self.inner.state(),
        })
    }
    /// Restores a [`Schedule::state`]; the kind must match the recipe's scheduler.
    pub fn load_state(&mut self, state: &Value) -> Result<(), TrainError> {
        let kind = state.get("kind").and_then(Value::as_str).ok_or_else(|| {
            TrainError::SchedulerState("missing `kind` in scheduler state".into())
        })?;
        if kind != self.inner.kind() {
            return Err(TrainError::SchedulerState(format!(
                "saved scheduler is `{kind}` but the recipe builds `{}`",
                self.inner.kind()
            )));
        }
        let scale = state
            .get("lr_scale")
            .and_then(exact_f64::from_value)
            .ok_or_else(|| TrainError::SchedulerState("missing `lr_scale`".into()))?;
        let inner = state
            .get("inner")
            .ok_or_else(|| TrainError::SchedulerState("missing `inner`".into()))?;
        self.inner.load_state(inner)?;
        self.scale = scale;
        Ok(())
    }
}

/// f64 in scheduler state as its shortest exact decimal string (`"0.1"`, `"inf"`): JSON
/// numbers do not round-trip bit for bit through serde_json's default parser, and resume must.
pub(crate) mod exact_f64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Number(f64),
        }
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Text(t) => t
                .parse::<f64>()
                .map_err(|e| D::Error::custom(format!("bad number {t:?}: {e}"))),
        }
    }

    /// As a JSON value.
    pub fn to_value(v: f64) -> serde_json::Value {
        serde_json::Value::String(format!("{v:?}"))
    }

    /// From a JSON string or number.
    pub fn from_value(v: &serde_json::Value) -> Option<f64> {
        match v {
            serde_json::Value::String(s) => s.parse().ok(),
            other => other.as_f64(),
        }
    }
}

/// Deserializes one scheduler's state struct, with a clear error.
pub(crate) fn parse_state<T: serde::de::DeserializeOwned>(
    kind: &str,
    state: &Value,
) -> Result<T, TrainError> {
    serde_json::from_value(state.clone())
        .map_err(|e| TrainError::SchedulerState(format!("bad `{kind}` state: {e}")))
}

/// Builds the schedule a recipe asks for. `epochs` is the run's total number of epochs
/// (cosine's default `t_max` is the epochs after warm-up). The main schedule's epochs count
/// from the end of warm-up, as with PyTorch's `SequentialLR(milestones=[warmup_epochs])`.
pub fn build(cfg: &SchedulerConfig, base_lr: f64, epochs: u32) -> Result<Schedule, TrainError> {
    if !(base_lr.is_finite() && base_lr >= 0.0) {
        return Err(TrainError::config(
            "optimizer.lr",
            format!("must be a non-negative number, got {base_lr}"),
        ));
    }
    let main: Box<dyn LrScheduler> = match cfg.kind {
        SchedulerKind::None => Box::new(Constant::new(base_lr)),
        SchedulerKind::Step => {
            let step_size = cfg.step_size.ok_or_else(|| {
                TrainError::config("scheduler.step_size", "required by kind = \"step\"")
            })?;
            Box::new(Step::new(base_lr, step_size, cfg.gamma())?)
        }
        SchedulerKind::Multistep => {
            let milestones = cfg.milestones.clone().ok_or_else(|| {
                TrainError::config("scheduler.milestones", "required by kind = \"multistep\"")
            })?;
            Box::new(MultiStep::new(base_lr, milestones, cfg.gamma())?)
        }
        SchedulerKind::Cosine => {
            let t_max = match cfg.t_max {
                Some(t) => t,
                None => epochs.saturating_sub(cfg.warmup_epochs),
            };
            if t_max == 0 {
                return Err(TrainError::config(
                    "scheduler.t_max",
                    format!(
                        "must be at least 1 (default: epochs {epochs} - warmup_epochs {})",
                        cfg.warmup_epochs
                    ),
                ));
            }
            Box::new(CosineAnnealing::new(
                base_lr,
                t_max,
                cfg.eta_min(),
                cfg.warmup_epochs > 0,
            ))
        }
        SchedulerKind::Plateau => Box::new(Plateau::from_config(cfg, base_lr)?),
    };
    let sched: Box<dyn LrScheduler> = if cfg.warmup_epochs > 0 {
        Box::new(Warmup::new(
            base_lr,
            cfg.warmup_start_factor(),
            cfg.warmup_epochs,
            cfg.warmup_per_iteration,
            main,
        )?)
    } else {
        main
    };
    Ok(Schedule::new(sched))
}
