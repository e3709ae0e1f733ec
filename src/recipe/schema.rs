//! The recipe schema: every key a recipe may hold, its type and its default (PyTorch's where
//! PyTorch has one). A key is defined here once; `validate.rs` checks ranges and applicability.

use serde::{Deserialize, Serialize};

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

// ---------------------------------------------------------------- transforms

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TransformsConfig {
    #[serde(default)]
    pub train: Vec<TransformSpec>,
    #[serde(default)]
    pub eval: Vec<TransformSpec>,
}

/// An int (square, or the shorter side for `resize`) or `[height, width]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeSpec {
    Square(u32),
    HeightWidth([u32; 2]),
}

/// A number `x` (meaning a range symmetric around a centre, as torchvision reads it) or `[min, max]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RangeSpec {
    Scalar(f64),
    Range([f64; 2]),
}

/// A resampling filter, named as torchvision's `InterpolationMode` (lower case). On PIL images
/// torchvision hands each to Pillow's `Image.resize`, which this project reproduces bit for bit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Pillow `NEAREST`: the source pixel under each output pixel's centre (no antialiasing).
    Nearest,
    /// Pillow `BILINEAR` (triangle filter, support 1, widened when downscaling).
    #[default]
    Bilinear,
    /// Pillow `BICUBIC` (cubic convolution, a = -0.5, support 2).
    Bicubic,
    /// Pillow `BOX` (support 0.5).
    Box,
    /// Pillow `HAMMING` (Hamming-windowed sinc, support 1).
    Hamming,
    /// Pillow `LANCZOS` (Lanczos-3, support 3).
    Lanczos,
}

impl Interpolation {
    /// Every mode, in declaration order (serde's order of variants).
    pub const ALL: [Interpolation; 6] = [
        Interpolation::Nearest,
        Interpolation::Bilinear,
        Interpolation::Bicubic,
        Interpolation::Box,
        Interpolation::Hamming,
        Interpolation::Lanczos,
    ];

    pub fn is_default(&self) -> bool {
        *self == Interpolation::Bilinear
    }

    /// The recipe name (`"bicubic"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
            Interpolation::Box => "box",
            Interpolation::Hamming => "hamming",
            Interpolation::Lanczos => "lanczos",
        }
    }
}

/// One transform, named and parameterised as torchvision names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformSpec {
    Resize {
        size: SizeSpec,
        /// The filter (torchvision's `InterpolationMode`, i.e. Pillow's resampling filter).
        /// Omitted from the canonical form at its default, so run keys predating it hold.
        #[serde(default, skip_serializing_if = "Interpolation::is_default")]
        interpolation: Interpolation,
        /// With an int `size` only: the longer side is capped at `max_size` (torchvision's
        /// rule); must be greater than `size`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_size: Option<u32>,
        /// Accepted and ignored, as torchvision ignores it for PIL images (Pillow always
        /// antialiases when downscaling).
        #[serde(default = "yes")]
        antialias: bool,
    },
    CenterCrop {
        size: SizeSpec,
    },
    RandomCrop {
        size: SizeSpec,
        #[serde(default)]
        padding: PaddingSpec,
        #[serde(default)]
        pad_if_needed: bool,
        #[serde(default)]
        fill: u8,
        /// Not serialised at its default, so recipes without it keep their run key.
        #[serde(default, skip_serializing_if = "PaddingMode::is_constant")]
        padding_mode: PaddingMode,
    },
    RandomResizedCrop {
        size: SizeSpec,
        #[serde(default = "default_rrc_scale")]
        scale: [f64; 2],
        #[serde(default = "default_rrc_ratio")]
        ratio: [f64; 2],
        #[serde(default, skip_serializing_if = "Interpolation::is_default")]
        interpolation: Interpolation,
        #[serde(default = "yes")]
        antialias: bool,
    },
    HorizontalFlip {
        #[serde(default = "half")]
        p: f64,
    },
    RandomRotation {
        degrees: RangeSpec,
        #[serde(default)]
        fill: u8,
        /// Grow the output to hold the whole rotated image (Pillow's `rotate(expand=True)`).
        #[serde(default, skip_serializing_if = "is_false")]
        expand: bool,
        /// `[x, y]` in pixels from the top-left corner; `None` = the image centre.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        center: Option<[f64; 2]>,
    },
    RandomPerspective {
        #[serde(default = "half")]
        distortion_scale: f64,
        #[serde(default = "half")]
        p: f64,
        #[serde(default)]
        fill: u8,
    },
    ColorJitter {
        #[serde(default)]
        brightness: Option<RangeSpec>,
        #[serde(default)]
        contrast: Option<RangeSpec>,
        #[serde(default)]
        saturation: Option<RangeSpec>,
        #[serde(default)]
        hue: Option<RangeSpec>,
    },
    RandAugment {
        #[serde(default = "default_num_ops")]
        num_ops: u32,
        #[serde(default = "default_magnitude")]
        magnitude: u32,
        #[serde(default = "default_magnitude_bins")]
        num_magnitude_bins: u32,
        #[serde(default)]
        fill: u8,
    },
    /// No parameters. A struct variant, not a unit one, so that `deny_unknown_fields`
    /// refuses stray keys (serde lets a unit variant of an internally tagged enum ignore
    /// them); it serialises the same (`{kind = "to_tensor"}`), so run keys are unchanged.
    ToTensor {},
    Normalize {
        mean: [f64; 3],
        std: [f64; 3],
    },
    RandomErasing {
        #[serde(default = "half")]
        p: f64,
        #[serde(default = "default_erase_scale")]
        scale: [f64; 2],
        #[serde(default = "default_erase_ratio")]
        ratio: [f64; 2],
        #[serde(default)]
        value: EraseValue,
    },
}

/// RandomCrop's `padding`, as torchvision reads it: an int for every side, `[left/right,
/// top/bottom]` or `[left, top, right, bottom]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PaddingSpec {
    All(u32),
    LeftRightTopBottom([u32; 2]),
    Sides([u32; 4]),
}

impl Default for PaddingSpec {
    fn default() -> Self {
        PaddingSpec::All(0)
    }
}

impl PaddingSpec {
    /// `[left, top, right, bottom]`.
    pub fn sides(&self) -> [u32; 4] {
        match *self {
            PaddingSpec::All(p) => [p; 4],
            PaddingSpec::LeftRightTopBottom([lr, tb]) => [lr, tb, lr, tb],
            PaddingSpec::Sides(s) => s,
        }
    }

    /// The shortest spelling of the same padding (an int when every side is equal).
    pub fn simplest(&self) -> PaddingSpec {
        let [l, t, r, b] = self.sides();
        if l == t && t == r && r == b {
            PaddingSpec::All(l)
        } else if l == r && t == b {
            PaddingSpec::LeftRightTopBottom([l, t])
        } else {
            PaddingSpec::Sides([l, t, r, b])
        }
    }
}

/// How RandomCrop pads (torchvision / `numpy.pad` semantics): `constant` uses `fill`, `edge`
/// repeats the last pixel, `reflect` mirrors without repeating it (`dcb|abcd`), `symmetric`
/// mirrors repeating it (`cba|abcd`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PaddingMode {
    #[default]
    Constant,
    Edge,
    Reflect,
    Symmetric,
}

impl PaddingMode {
    /// The recipe's names, in declaration order (serde's `expected one of` list).
    pub const NAMES: [&'static str; 4] = ["constant", "edge", "reflect", "symmetric"];

    pub fn is_constant(&self) -> bool {
        *self == PaddingMode::Constant
    }
}

/// RandomErasing's `value`: one number for every channel, one per channel, or `"random"`
/// (per-pixel standard normal values, as torchvision's `value="random"`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum EraseValue {
    Number(f64),
    PerChannel([f64; 3]),
    Random(RandomWord),
}

impl Default for EraseValue {
    fn default() -> Self {
        EraseValue::Number(0.0)
    }
}

/// The word `"random"`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RandomWord {
    Random,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}
fn half() -> f64 {
    0.5
}
fn default_rrc_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn default_rrc_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn default_num_ops() -> u32 {
    2
}
fn default_magnitude() -> u32 {
    9
}
fn default_magnitude_bins() -> u32 {
    31
}
fn default_erase_scale() -> [f64; 2] {
    [0.02, 0.33]
}
fn default_erase_ratio() -> [f64; 2] {
    [0.3, 3.3]
}

impl TransformSpec {
    /// The recipe name of this transform (`kind`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            TransformSpec::Resize { .. } => "resize",
            TransformSpec::CenterCrop { .. } => "center_crop",
            TransformSpec::RandomCrop { .. } => "random_crop",
            TransformSpec::RandomResizedCrop { .. } => "random_resized_crop",
            TransformSpec::HorizontalFlip { .. } => "horizontal_flip",
            TransformSpec::RandomRotation { .. } => "random_rotation",
            TransformSpec::RandomPerspective { .. } => "random_perspective",
            TransformSpec::ColorJitter { .. } => "color_jitter",
            TransformSpec::RandAugment { .. } => "rand_augment",
            TransformSpec::ToTensor {} => "to_tensor",
            TransformSpec::Normalize { .. } => "normalize",
            TransformSpec::RandomErasing { .. } => "random_erasing",
        }
    }
}

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

fn is_zero(n: &u32) -> bool {
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

fn one() -> f64 {
    1.0
}

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

// ---------------------------------------------------------------- sweep

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SweepMode {
    #[default]
    Grid,
    Random,
    Zip,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    #[serde(default)]
    pub mode: SweepMode,
    /// random: number of configurations to draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<u32>,
    /// random: seed of the draw (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Dotted recipe key -> values (a list) or a distribution (random mode).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, SweepValues>,
    /// `[sweep.prune]`: stop losing runs early. Not part of any run's key: a promoted run is
    /// the same run as the point trained straight through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneConfig>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PruneKind {
    #[default]
    None,
    /// Synchronous successive halving, rung by rung.
    Halving,
    /// Optuna's MedianPruner: each run against the median of the runs done before it.
    Median,
}

/// `[sweep.prune]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    #[serde(default)]
    pub kind: PruneKind,
    /// The metric runs are compared by (default `checkpoint.monitor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Whether higher is better (default: `checkpoint.mode` when `metric` is the monitor,
    /// else the metric's own direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MetricMode>,
    /// The first rung's epoch.
    #[serde(default = "PruneConfig::default_grace")]
    pub grace_epochs: u32,
    /// Each rung keeps max(1, floor(n / factor)) runs; rungs at grace * factor^k.
    #[serde(default = "PruneConfig::default_factor")]
    pub reduction_factor: u32,
    /// median: no run stops before this many runs of the sweep are done.
    #[serde(default = "PruneConfig::default_startup")]
    pub startup_runs: u32,
}

impl PruneConfig {
    fn default_grace() -> u32 {
        1
    }
    fn default_factor() -> u32 {
        3
    }
    fn default_startup() -> u32 {
        5
    }

    /// The metric and whether higher is better, given the recipe's checkpoint section.
    pub fn objective(&self, checkpoint: &CheckpointConfig) -> (String, bool) {
        let metric = self
            .metric
            .clone()
            .unwrap_or_else(|| checkpoint.monitor.clone());
        let mode = self.mode.unwrap_or(if metric == checkpoint.monitor {
            checkpoint.mode
        } else if crate::store::maximize(&metric) {
            MetricMode::Max
        } else {
            MetricMode::Min
        });
        (metric, mode == MetricMode::Max)
    }
}

/// The values a swept key takes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SweepValues {
    List(Vec<toml::Value>),
    Distribution(Distribution),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    Uniform([f64; 2]),
    Loguniform([f64; 2]),
    Int([i64; 2]),
    Choice(Vec<toml::Value>),
}

// ---------------------------------------------------------------- slurm

/// `[slurm]`: what `runner sweep --executor slurm` asks Slurm for, per run (one array task
/// each); the command line's options override it. Not part of the run key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// `--partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// GPUs per run (`--gres=gpu:N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_run: Option<u32>,
    /// CPUs per run (`--cpus-per-task`), also the task's thread count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_run: Option<u32>,
    /// Memory per run (`--mem`, e.g. "16G").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// Time limit per run (`--time`, e.g. "12:00:00" or "2-00:00:00").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Runs of the array at once (`--array=0-(n-1)%K`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Further `sbatch` options, one per item (`"--account=lab"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch_args: Vec<String>,
    /// Shell lines run before runner in each task (`module load ...`, environment activation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<String>,
}
