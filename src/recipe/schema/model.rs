//! `[model]`: the network families, their presets and options.

use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------- model

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Convnext,
    Resnet,
    MobilenetV2,
    MobilenetV3,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BlockNorm {
    #[default]
    Layer,
    Batch,
}

/// `layer_scale = 1e-6` (timm's default) or `layer_scale = false`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum LayerScale {
    Init(f64),
    Enabled(bool),
}

impl Default for LayerScale {
    fn default() -> Self {
        LayerScale::Init(1e-6)
    }
}

impl LayerScale {
    /// The initial gamma, or `None` when layer scale is off.
    pub fn init_value(&self) -> Option<f64> {
        match *self {
            LayerScale::Init(v) if v > 0.0 => Some(v),
            LayerScale::Init(_) => None,
            LayerScale::Enabled(true) => Some(1e-6),
            LayerScale::Enabled(false) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// "atto" .. "base" (ConvNeXt), "18" | "34" | "50" (ResNet), "large" | "small" (MobileNetV3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depths: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dims: Option<Vec<usize>>,
    /// ConvNeXt block norm.
    #[serde(default)]
    pub block_norm: BlockNorm,
    /// ConvNeXt layer scale.
    #[serde(default)]
    pub layer_scale: LayerScale,
    /// Stochastic depth rate of the last block (linearly increasing from 0).
    #[serde(default)]
    pub drop_path: f64,
    /// Dropout before the classifier.
    #[serde(default)]
    pub dropout: f64,
    /// ResNet: 3x3/1 stem without max-pool, for 32-64 px inputs.
    #[serde(default)]
    pub small_stem: bool,
    /// MobileNet width multiplier.
    #[serde(default = "one")]
    pub width_mult: f64,
    /// Projection of pooled features to this size before the classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dim: Option<usize>,
    /// BatchNorm on the embedding (after the projection, if any), as face models do.
    #[serde(default, skip_serializing_if = "is_false")]
    pub embedding_norm: bool,
    /// Default: the number of training identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// Starting weights: a safetensors file with timm / torchvision parameter names, or the
    /// run of another recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
}

pub(super) fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `model.init_from`: where a run's starting weights come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum InitFrom {
    /// A safetensors file (relative to the working directory).
    Weights(String),
    /// `{ recipe = "PATH", pick = "best" | "last" }`: the run of that recipe, planned and
    /// trained first when it is not done.
    Run(InitFromRun),
}

impl InitFrom {
    /// The weights file, when `init_from` names one.
    pub fn weights(&self) -> Option<&str> {
        match self {
            InitFrom::Weights(p) => Some(p),
            InitFrom::Run(_) => None,
        }
    }

    /// The parent recipe, when `init_from` names one.
    pub fn run(&self) -> Option<&InitFromRun> {
        match self {
            InitFrom::Run(r) => Some(r),
            InitFrom::Weights(_) => None,
        }
    }
}

/// `model.init_from = { recipe = ..., pick = ... }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitFromRun {
    /// The parent recipe: relative to the recipe file that names it as written; the planner
    /// rewrites it to a path from the working directory.
    pub recipe: String,
    /// Which of the parent run's checkpoints: the best by its `checkpoint.monitor`, or the last.
    #[serde(default)]
    pub pick: Pick,
    /// The parent run's key, filled in by the planner (part of this run's key); never written
    /// in a recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_key: Option<String>,
}

/// Which checkpoint of a run another run starts from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// The best by the run's own `checkpoint.monitor` and `mode` (the earliest of equals).
    #[default]
    Best,
    /// The newest end-of-epoch checkpoint.
    Last,
}

impl Pick {
    pub fn name(self) -> &'static str {
        match self {
            Pick::Best => "best",
            Pick::Last => "last",
        }
    }
}

pub(super) fn one() -> f64 {
    1.0
}
