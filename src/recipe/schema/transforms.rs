//! `[transforms]`: the torchvision transforms a recipe lists, with their parameters.

use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use super::*;

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

pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

pub(super) fn yes() -> bool {
    true
}
pub(super) fn half() -> f64 {
    0.5
}
pub(super) fn default_rrc_scale() -> [f64; 2] {
    [0.08, 1.0]
}
pub(super) fn default_rrc_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
pub(super) fn default_num_ops() -> u32 {
    2
}
pub(super) fn default_magnitude() -> u32 {
    9
}
pub(super) fn default_magnitude_bins() -> u32 {
    31
}
pub(super) fn default_erase_scale() -> [f64; 2] {
    [0.02, 0.33]
}
pub(super) fn default_erase_ratio() -> [f64; 2] {
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
