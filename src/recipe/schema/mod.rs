//! The recipe schema: every key a recipe may hold, its type and its default (PyTorch's where
//! PyTorch has one). A key is defined here once; `validate.rs` checks ranges and applicability.

use serde::{Deserialize, Serialize};

mod model;
mod optim;
mod sweep;
mod transforms;

pub use model::*;
pub use optim::*;
pub use sweep::*;
pub use transforms::*;
// the sections' serde helpers (defaults, skip tests), shared among them
#[allow(unused_imports)]
use {model::*, optim::*, sweep::*, transforms::*};

/// A fully composed recipe (fragments merged, `use` removed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Cosmetic: not part of the run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Cosmetic: not part of the run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub data: DataConfig,
    #[serde(default)]
    pub transforms: TransformsConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub verification: VerificationConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepConfig>,
    /// How `runner sweep --executor slurm` asks Slurm for each run. Not part of the run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmConfig>,
}

// ---------------------------------------------------------------- data

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A folder in the course layout, or "synth" for the built-in synthetic set.
    pub root: String,
    /// Side of the square images the model sees (`inspect` and `bench` use it). Unwritten, it
    /// is the side the eval transforms output where that is known (else 64).
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    /// Whether `image_size` was taken from the eval transforms, not written: the run key then
    /// sees the default it had before, so keys computed before the rule hold.
    #[serde(skip)]
    pub image_size_from_eval: bool,
    /// Decoding / augmentation threads; `None` = all cores. Not part of the run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_workers: Option<usize>,
    /// Keep decoded images in memory.
    #[serde(default)]
    pub cache: bool,
    #[serde(default)]
    pub on_bad_image: BadImagePolicy,
    /// Where `root = "synth"` data is generated (default `data/`). Not part of the run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// Generator parameters for `root = "synth"`.
    #[serde(default)]
    pub synth: SynthConfig,
}

pub(crate) fn default_image_size() -> u32 {
    64
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BadImagePolicy {
    Skip,
    #[default]
    Fail,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Difficulty {
    Easy,
    #[default]
    Medium,
    Hard,
}

/// Parameters of the synthetic face generator (`runner data synth` takes the same).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    #[serde(default = "SynthConfig::default_identities")]
    pub identities: usize,
    #[serde(default = "SynthConfig::default_images_per_identity")]
    pub images_per_identity: usize,
    #[serde(default = "SynthConfig::default_verify_identities")]
    pub verify_identities: usize,
    #[serde(default = "SynthConfig::default_impostors")]
    pub impostors: usize,
    #[serde(default = "default_image_size")]
    pub size: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub difficulty: Difficulty,
}

impl SynthConfig {
    fn default_identities() -> usize {
        100
    }
    fn default_images_per_identity() -> usize {
        20
    }
    fn default_verify_identities() -> usize {
        50
    }
    fn default_impostors() -> usize {
        25
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            identities: Self::default_identities(),
            images_per_identity: Self::default_images_per_identity(),
            verify_identities: Self::default_verify_identities(),
            impostors: Self::default_impostors(),
            size: default_image_size(),
            seed: 0,
            difficulty: Difficulty::Medium,
        }
    }
}

// ---------------------------------------------------------------- train

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DivergencePolicy {
    #[default]
    Fail,
    Rollback,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "TrainConfig::default_epochs")]
    pub epochs: u32,
    #[serde(default = "TrainConfig::default_batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub precision: Precision,
    /// "auto", "cpu", "cuda" or "cuda:N" ("auto": the GPU when the build and the machine have
    /// one, else the CPU). Not part of the run key.
    #[serde(default = "TrainConfig::default_device")]
    pub device: String,
    /// Clip the global gradient norm to this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    #[serde(default)]
    pub on_divergence: DivergencePolicy,
    /// rollback: multiply the lr by this after each rollback (default 0.5).
    #[serde(default = "half")]
    pub rollback_factor: f64,
    /// rollback: at most this many rollbacks (default 3).
    #[serde(default = "TrainConfig::default_max_rollbacks")]
    pub max_rollbacks: u32,
    /// Train only the classifier for the first N epochs (the backbone frozen, its BatchNorm
    /// layers in eval mode), then everything.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub freeze_backbone_epochs: u32,
    /// A moving average of the weights with this decay (timm's ModelEmaV3 with warm-up), or
    /// false. With it, dev metrics, verification, `pick = "best"` and export use the average.
    #[serde(default, skip_serializing_if = "Ema::is_off")]
    pub ema: Ema,
}

/// `train.ema`: false, or the decay of the weights' moving average.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Ema {
    /// `false` (validation refuses `true`: the decay must be given).
    Enabled(bool),
    Decay(f64),
}

impl Default for Ema {
    fn default() -> Self {
        Ema::Enabled(false)
    }
}

impl Ema {
    pub fn is_off(&self) -> bool {
        matches!(self, Ema::Enabled(false))
    }
    /// The decay, when the average is on.
    pub fn decay(&self) -> Option<f64> {
        match self {
            Ema::Decay(d) => Some(*d),
            Ema::Enabled(_) => None,
        }
    }
}

impl TrainConfig {
    fn default_epochs() -> u32 {
        10
    }
    fn default_batch_size() -> usize {
        64
    }
    fn default_device() -> String {
        "cpu".to_string()
    }
    fn default_max_rollbacks() -> u32 {
        3
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: Self::default_epochs(),
            batch_size: Self::default_batch_size(),
            seed: 0,
            precision: Precision::F32,
            device: Self::default_device(),
            grad_clip: None,
            on_divergence: DivergencePolicy::Fail,
            rollback_factor: 0.5,
            max_rollbacks: Self::default_max_rollbacks(),
            freeze_backbone_epochs: 0,
            ema: Ema::default(),
        }
    }
}

// ---------------------------------------------------------------- checkpoint

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricMode {
    #[default]
    Max,
    Min,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoints go to `<dir>/<run key>/`. Not part of the run key.
    #[serde(default = "CheckpointConfig::default_dir")]
    pub dir: String,
    #[serde(default = "CheckpointConfig::default_monitor")]
    pub monitor: String,
    #[serde(default)]
    pub mode: MetricMode,
    #[serde(default = "one_u32")]
    pub keep_best: u32,
    #[serde(default = "one_u32")]
    pub keep_last: u32,
    /// Save every n epochs (the last epoch is always saved).
    #[serde(default = "one_u32")]
    pub every: u32,
}

fn one_u32() -> u32 {
    1
}

impl CheckpointConfig {
    fn default_dir() -> String {
        "runs".to_string()
    }
    fn default_monitor() -> String {
        "val_acc".to_string()
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: Self::default_dir(),
            monitor: Self::default_monitor(),
            mode: MetricMode::Max,
            keep_best: 1,
            keep_last: 1,
            every: 1,
        }
    }
}

// ---------------------------------------------------------------- verification

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityMetric {
    #[default]
    Cosine,
    Euclidean,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GalleryMode {
    #[default]
    Mean,
    Max,
}

/// `threshold = "tune"` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ThresholdSpec {
    #[default]
    Tune,
    Fixed(f64),
}

impl Serialize for ThresholdSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ThresholdSpec::Tune => s.serialize_str("tune"),
            ThresholdSpec::Fixed(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for ThresholdSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ThresholdSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"tune\" or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ThresholdSpec, E> {
                if v == "tune" {
                    Ok(ThresholdSpec::Tune)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ThresholdSpec, E> {
                Ok(ThresholdSpec::Fixed(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ThresholdSpec, E> {
                Ok(ThresholdSpec::Fixed(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ThresholdSpec, E> {
                Ok(ThresholdSpec::Fixed(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VerificationConfig {
    #[serde(default)]
    pub metric: SimilarityMetric,
    #[serde(default)]
    pub threshold: ThresholdSpec,
    #[serde(default)]
    pub gallery: GalleryMode,
    /// Score verification every n epochs (0: only at the end of training).
    #[serde(default)]
    pub every: u32,
    /// Test-time augmentation: average with the horizontally flipped image.
    #[serde(default)]
    pub tta: bool,
    /// Score verification at all (needs `verification/` in the data).
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        VerificationConfig {
            metric: SimilarityMetric::Cosine,
            threshold: ThresholdSpec::Tune,
            gallery: GalleryMode::Mean,
            every: 0,
            tta: false,
            enabled: true,
        }
    }
}
