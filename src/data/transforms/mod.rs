//! Image transforms configured from the recipe (torchvision semantics and names): one file per
//! transform, one `Transform` trait, one `build` factory and the per-sample RNG.

pub mod affine;
pub mod center_crop;
pub mod color_jitter;
pub mod enhance;
pub mod flip;
pub mod fused;
pub mod normalize;
pub mod perspective;
pub mod rand_augment;
pub mod random_crop;
pub mod random_erasing;
pub mod random_resized_crop;
pub mod resize;
pub mod rotation;
pub mod to_tensor;

use super::DataError;
use crate::recipe::{RangeSpec, SizeSpec, TransformSpec};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A float image, channels first (C, H, W).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTensor {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

/// What flows through a pipeline: an 8-bit RGB image until `to_tensor`, then a float tensor.
#[derive(Debug, Clone)]
pub enum Value {
    Image(RgbImage),
    Tensor(ImageTensor),
}

/// One transform. Random transforms draw only from `rng`.
pub trait Transform: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError>;
}

/// The RNG for one sample in one epoch: the same triple always gives the same stream, whatever
/// thread handles the sample.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..32].copy_from_slice(b"rn-xform");
    ChaCha8Rng::from_seed(key)
}

/// A composed list of transforms. `apply` always returns a tensor (an image left at the end is
/// converted as `to_tensor` would).
///
/// The usual training pipeline (RandomResizedCrop, flip, ColorJitter without hue, ToTensor,
/// Normalize) runs fused (`fused.rs`), with the same output and random draws as the steps.
#[derive(Debug, Default)]
pub struct Pipeline {
    steps: Vec<Box<dyn Transform>>,
    normalize: Option<([f32; 3], [f32; 3])>,
    fused: Option<fused::FusedPipeline>,
}

impl Pipeline {
    pub fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> Result<ImageTensor, DataError> {
        match &self.fused {
            Some(f) => Ok(f.apply(&img, rng)),
            None => self.apply_steps(img, rng),
        }
    }

    /// `apply` for a shared image (e.g. from the loader's cache): the fused pipeline reads it
    /// in place, the steps get a copy only when it is still shared.
    pub fn apply_shared(
        &self,
        img: std::sync::Arc<RgbImage>,
        rng: &mut ChaCha8Rng,
    ) -> Result<ImageTensor, DataError> {
        match &self.fused {
            Some(f) => Ok(f.apply(&img, rng)),
            None => {
                let img = std::sync::Arc::try_unwrap(img).unwrap_or_else(|a| (*a).clone());
                self.apply_steps(img, rng)
            }
        }
    }

    /// The fused path's output shape `(c, h, w)`, when `apply` takes it (every output then
    /// has that shape and `apply_into` can write it in place).
    pub fn fused_shape(&self) -> Option<(usize, usize, usize)> {
        self.fused.as_ref().map(|f| f.output_shape())
    }

    /// The fused path writing into `out` (`fused_shape`'s size); `false` (nothing written)
    /// when the pipeline is not fused.
    pub fn apply_into(&self, img: &RgbImage, rng: &mut ChaCha8Rng, out: &mut [f32]) -> bool {
        match &self.fused {
            Some(f) => {
                f.apply_into(img, rng, out);
                true
            }
            None => false,
        }
    }

    /// Whether `apply` takes the fused path.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// The transforms one after the other (what the fused path must reproduce).
    pub fn apply_steps(
        &self,
        img: RgbImage,
        rng: &mut ChaCha8Rng,
    ) -> Result<ImageTensor, DataError> {
        let mut v = Value::Image(img);
        for t in &self.steps {
            v = t.apply(v, rng)?;
        }
        Ok(match v {
            Value::Image(img) => to_tensor::image_to_tensor(&img),
            Value::Tensor(t) => t,
        })
    }

    /// `(mean, std)` of the pipeline's Normalize, to undo it for display.
    pub fn normalization(&self) -> Option<([f32; 3], [f32; 3])> {
        self.normalize
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|t| t.name()).collect()
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Builds a pipeline from the recipe's transform list, checking parameters and order
/// (image transforms before `to_tensor`, `normalize` / `random_erasing` after it).
pub fn build(specs: &[TransformSpec]) -> Result<Pipeline, DataError> {
    let mut steps: Vec<Box<dyn Transform>> = Vec::new();
    let mut tensor = false;
    let mut normalize = None;
    for spec in specs {
        let kind = spec.kind_name();
        let needs_image = !matches!(
            spec,
            TransformSpec::Normalize { .. }
                | TransformSpec::RandomErasing { .. }
                | TransformSpec::HorizontalFlip { .. }
        );
        if tensor && needs_image {
            return Err(DataError::transform(
                kind,
                "works on images and must come before `to_tensor`",
            ));
        }
        let needs_tensor = matches!(
            spec,
            TransformSpec::Normalize { .. } | TransformSpec::RandomErasing { .. }
        );
        if needs_tensor && !tensor {
            return Err(DataError::transform(kind, "must come after `to_tensor`"));
        }
        let step: Box<dyn Transform> = match spec {
            TransformSpec::Resize {
                size,
                interpolation,
                max_size,
                ..
            } => Box::new(resize::Resize::new(*size, *interpolation, *max_size)?),
            TransformSpec::CenterCrop { size } => {
                Box::new(center_crop::CenterCrop::new(hw(kind, *size)?))
            }
            TransformSpec::RandomCrop {
                size,
                padding,
                pad_if_needed,
                fill,
                padding_mode,
            } => Box::new(random_crop::RandomCrop {
                size: hw(kind, *size)?,
                padding: padding.sides(),
                pad_if_needed: *pad_if_needed,
                fill: *fill,
                padding_mode: *padding_mode,
            }),
            TransformSpec::RandomResizedCrop {
                size,
                scale,
                ratio,
                interpolation,
                ..
            } => Box::new(
                random_resized_crop::RandomResizedCrop::new(hw(kind, *size)?, *scale, *ratio)?
                    .with_interpolation(*interpolation),
            ),
            TransformSpec::HorizontalFlip { p } => Box::new(flip::HorizontalFlip::new(*p)?),
            TransformSpec::RandomRotation {
                degrees,
                fill,
                expand,
                center,
            } => {
                if center.is_some_and(|c| !c.iter().all(|v| v.is_finite())) {
                    return Err(DataError::transform(kind, "center must be finite"));
                }
                Box::new(rotation::RandomRotation {
                    degrees: symmetric(kind, "degrees", *degrees, None)?,
                    fill: *fill,
                    expand: *expand,
                    center: *center,
                })
            }
            TransformSpec::RandomPerspective {
                distortion_scale,
                p,
                fill,
            } => Box::new(perspective::RandomPerspective::new(
                *distortion_scale,
                *p,
                *fill,
            )?),
            TransformSpec::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
            } => Box::new(color_jitter::ColorJitter::new(
                *brightness,
                *contrast,
                *saturation,
                *hue,
            )?),
            TransformSpec::RandAugment {
                num_ops,
                magnitude,
                num_magnitude_bins,
                fill,
            } => Box::new(rand_augment::RandAugment::new(
                *num_ops,
                *magnitude,
                *num_magnitude_bins,
                *fill,
            )?),
            TransformSpec::ToTensor {} => {
                tensor = true;
                Box::new(to_tensor::ToTensor)
            }
            TransformSpec::Normalize { mean, std } => {
                let n = normalize::Normalize::new(*mean, *std)?;
                normalize = Some((n.mean, n.std));
                Box::new(n)
            }
            TransformSpec::RandomErasing {
                p,
                scale,
                ratio,
                value,
            } => Box::new(random_erasing::RandomErasing::new(
                *p, *scale, *ratio, *value,
            )?),
        };
        steps.push(step);
    }
    let fused = fusable(specs)?;
    Ok(Pipeline {
        steps,
        normalize,
        fused,
    })
}

/// The fused form of `specs` when they are RandomResizedCrop (bilinear: the fused resize is
/// the bilinear port), then HorizontalFlip / ColorJitter (no hue) in any order, then ToTensor
/// (or nothing) and at most a Normalize.
fn fusable(specs: &[TransformSpec]) -> Result<Option<fused::FusedPipeline>, DataError> {
    let Some((
        TransformSpec::RandomResizedCrop {
            size,
            scale,
            ratio,
            interpolation: crate::recipe::Interpolation::Bilinear,
            ..
        },
        rest,
    )) = specs.split_first()
    else {
        return Ok(None);
    };
    let crop = random_resized_crop::RandomResizedCrop::new(
        hw("random_resized_crop", *size)?,
        *scale,
        *ratio,
    )?;
    let mut ops = Vec::new();
    let mut rest = rest.iter();
    loop {
        match rest.next() {
            Some(TransformSpec::HorizontalFlip { p }) => ops.push(fused::FusedOp::Flip(*p)),
            Some(TransformSpec::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
            }) => {
                let cj = color_jitter::ColorJitter::new(*brightness, *contrast, *saturation, *hue)?;
                if cj.hue.is_some() {
                    return Ok(None);
                }
                ops.push(fused::FusedOp::Jitter(cj));
            }
            // a pipeline without `to_tensor` ends with the same conversion
            Some(TransformSpec::ToTensor {}) | None => break,
            _ => return Ok(None),
        }
    }
    let normalize = match rest.next() {
        None => None,
        Some(TransformSpec::Normalize { mean, std }) => {
            let n = normalize::Normalize::new(*mean, *std)?;
            Some((n.mean, n.std))
        }
        Some(_) => return Ok(None),
    };
    if rest.next().is_some() {
        return Ok(None);
    }
    Ok(Some(fused::FusedPipeline {
        crop,
        ops,
        normalize,
    }))
}

/// `(height, width)` of a size spec.
pub(crate) fn hw(kind: &str, size: SizeSpec) -> Result<(u32, u32), DataError> {
    let (h, w) = match size {
        SizeSpec::Square(s) => (s, s),
        SizeSpec::HeightWidth([h, w]) => (h, w),
    };
    if h == 0 || w == 0 {
        return Err(DataError::transform(kind, "size must be positive"));
    }
    Ok((h, w))
}

/// torchvision's reading of a number-or-range: `x` -> `[centre - x, centre + x]` (clamped below
/// at `floor` when given), `[a, b]` as is.
pub(crate) fn symmetric(
    kind: &str,
    key: &str,
    spec: RangeSpec,
    centre_floor: Option<(f64, f64)>,
) -> Result<[f64; 2], DataError> {
    let (centre, floor) = centre_floor.unwrap_or((0.0, f64::NEG_INFINITY));
    let r = match spec {
        RangeSpec::Scalar(x) => {
            if x < 0.0 {
                return Err(DataError::transform(
                    kind,
                    format!("{key} must be non-negative, got {x}"),
                ));
            }
            [(centre - x).max(floor), centre + x]
        }
        RangeSpec::Range([a, b]) => {
            if a > b {
                return Err(DataError::transform(
                    kind,
                    format!("{key} range [{a}, {b}] has min > max"),
                ));
            }
            [a, b]
        }
    };
    Ok(r)
}

pub(crate) fn check_prob(kind: &str, p: f64) -> Result<(), DataError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(DataError::transform(
            kind,
            format!("p must be in [0, 1], got {p}"),
        ));
    }
    Ok(())
}

/// Python's `round` (half to even) for the non-negative offsets crops use.
pub(crate) fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        let f = x.floor();
        if (f as i64) % 2 == 0 {
            f as i64
        } else {
            f as i64 + 1
        }
    } else {
        r as i64
    }
}

/// torch.rand-like uniform draw in `[a, b)`.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, a: f64, b: f64) -> f64 {
    use rand::Rng;
    a + (b - a) * rng.random::<f64>()
}

/// `randint(lo, hi)`: an integer in `[lo, hi)` (`lo` when the range is empty).
pub(crate) fn randint(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> i64 {
    use rand::Rng;
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

/// The image a transform works on, or an error naming the transform.
pub(crate) fn expect_image(kind: &str, x: Value) -> Result<RgbImage, DataError> {
    match x {
        Value::Image(i) => Ok(i),
        Value::Tensor(_) => Err(DataError::transform(kind, "expects an image, got a tensor")),
    }
}

pub(crate) fn expect_tensor(kind: &str, x: Value) -> Result<ImageTensor, DataError> {
    match x {
        Value::Tensor(t) => Ok(t),
        Value::Image(_) => Err(DataError::transform(
            kind,
            "expects a tensor (add `to_tensor` first)",
        )),
    }
}
