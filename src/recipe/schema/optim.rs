//! `[loss]`, `[optimizer]` and `[scheduler]`.

use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------- loss

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    #[default]
    CrossEntropy,
    Arcface,
    Cosface,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    #[serde(default)]
    pub kind: LossKind,
    #[serde(default)]
    pub label_smoothing: f64,
    /// ArcFace / CosFace scale s (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// ArcFace (default 0.5 rad) / CosFace (default 0.35) margin m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// ArcFace / CosFace: the first N epochs train the same head without the margin (plain
    /// normalised-softmax cross-entropy at scale s), then the margin applies.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub margin_warmup_epochs: u32,
}

impl LossConfig {
    pub fn scale(&self) -> f64 {
        self.scale.unwrap_or(64.0)
    }
    pub fn margin(&self) -> f64 {
        self.margin.unwrap_or(match self.kind {
            LossKind::Cosface => 0.35,
            _ => 0.5,
        })
    }
}

// ---------------------------------------------------------------- optimizer

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Sgd,
    Adamw,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    #[serde(default)]
    pub kind: OptimizerKind,
    /// Default 1e-3 (PyTorch's SGD and AdamW).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// SGD only (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// SGD only (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    /// SGD only (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// Default 0 for SGD, 0.01 for AdamW.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// AdamW only (default [0.9, 0.999]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// AdamW only (default 1e-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// No weight decay on norm weights and biases.
    #[serde(default)]
    pub no_decay_norm_bias: bool,
    /// A factor on the learning rate of every parameter outside the classifier (and a margin
    /// loss's class weights): below 1 fine-tunes a pretrained backbone gently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_lr_scale: Option<f64>,
}

impl OptimizerConfig {
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(1e-3)
    }
    pub fn momentum(&self) -> f64 {
        self.momentum.unwrap_or(0.0)
    }
    pub fn dampening(&self) -> f64 {
        self.dampening.unwrap_or(0.0)
    }
    pub fn nesterov(&self) -> bool {
        self.nesterov.unwrap_or(false)
    }
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay.unwrap_or(match self.kind {
            OptimizerKind::Sgd => 0.0,
            OptimizerKind::Adamw => 0.01,
        })
    }
    pub fn betas(&self) -> [f64; 2] {
        self.betas.unwrap_or([0.9, 0.999])
    }
    pub fn eps(&self) -> f64 {
        self.eps.unwrap_or(1e-8)
    }
}

// ---------------------------------------------------------------- scheduler

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    #[default]
    None,
    Step,
    Multistep,
    Cosine,
    Plateau,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PlateauMode {
    #[default]
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    #[default]
    Rel,
    Abs,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    #[serde(default)]
    pub kind: SchedulerKind,
    /// step: epochs between decays (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<u32>,
    /// step / multistep decay factor (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// multistep: increasing epochs (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestones: Option<Vec<u32>>,
    /// cosine: period in epochs (default: the epochs after warm-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_max: Option<u32>,
    /// cosine: floor (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_min: Option<f64>,
    /// Linear warm-up length in epochs before the main schedule (default 0).
    #[serde(default)]
    pub warmup_epochs: u32,
    /// LinearLR's start_factor (default 1/3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_start_factor: Option<f64>,
    /// Warm up per iteration rather than per epoch.
    #[serde(default)]
    pub warmup_per_iteration: bool,
    /// plateau: "min" | "max" (default min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PlateauMode>,
    /// plateau: factor (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// plateau: patience (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<u32>,
    /// plateau: threshold (default 1e-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// plateau: "rel" | "abs" (default rel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_mode: Option<ThresholdMode>,
    /// plateau: cooldown (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<u32>,
    /// plateau: min_lr (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    /// plateau: eps (default 1e-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// plateau: the logged metric to watch (default "val_loss").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
}

impl SchedulerConfig {
    /// Whether the lr sequence depends on `train.epochs` (cosine's default `t_max` does).
    pub fn depends_on_epochs(&self) -> bool {
        self.kind == SchedulerKind::Cosine && self.t_max.is_none()
    }
    pub fn gamma(&self) -> f64 {
        self.gamma.unwrap_or(0.1)
    }
    pub fn eta_min(&self) -> f64 {
        self.eta_min.unwrap_or(0.0)
    }
    pub fn warmup_start_factor(&self) -> f64 {
        self.warmup_start_factor.unwrap_or(1.0 / 3.0)
    }
    pub fn mode(&self) -> PlateauMode {
        self.mode.unwrap_or_default()
    }
    pub fn factor(&self) -> f64 {
        self.factor.unwrap_or(0.1)
    }
    pub fn patience(&self) -> u32 {
        self.patience.unwrap_or(10)
    }
    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(1e-4)
    }
    pub fn threshold_mode(&self) -> ThresholdMode {
        self.threshold_mode.unwrap_or_default()
    }
    pub fn cooldown(&self) -> u32 {
        self.cooldown.unwrap_or(0)
    }
    pub fn min_lr(&self) -> f64 {
        self.min_lr.unwrap_or(0.0)
    }
    pub fn plateau_eps(&self) -> f64 {
        self.eps.unwrap_or(1e-8)
    }
    pub fn monitor(&self) -> &str {
        self.monitor.as_deref().unwrap_or("val_loss")
    }
}
