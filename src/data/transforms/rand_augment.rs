//! RandAugment (torchvision): `num_ops` operations drawn uniformly from the 14 of its
//! augmentation space, each at bin `magnitude` of `num_magnitude_bins`, signed at random.

use super::affine::{affine_nearest, inverse_affine_matrix, rotate};
use super::enhance;
use super::{expect_image, randint, DataError, Transform, Value};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct RandAugment {
    pub num_ops: u32,
    pub magnitude: u32,
    pub num_magnitude_bins: u32,
    pub fill: u8,
}

const OPS: [&str; 14] = [
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
];

impl RandAugment {
    pub fn new(num_ops: u32, magnitude: u32, bins: u32, fill: u8) -> Result<Self, DataError> {
        if bins < 2 {
            return Err(DataError::transform(
                "rand_augment",
                "num_magnitude_bins must be >= 2",
            ));
        }
        if magnitude >= bins {
            return Err(DataError::transform(
                "rand_augment",
                format!("magnitude {magnitude} must be below num_magnitude_bins {bins}"),
            ));
        }
        Ok(RandAugment {
            num_ops,
            magnitude,
            num_magnitude_bins: bins,
            fill,
        })
    }

    /// The magnitude of op `op` (an index into the augmentation space) at the configured bin
    /// for an image of `w` x `h`, and whether it is signed: torchvision's values exactly, from
    /// float32 `torch.linspace` bins (and Posterize's float32 quotient rounded half to even).
    pub fn magnitude_of(&self, op: usize, w: u32, h: u32) -> (f64, bool) {
        let (bins, m) = (self.num_magnitude_bins, self.magnitude);
        let lin = |end: f64| torch_linspace_at(0.0, end, bins, m);
        match op {
            1 | 2 => (lin(0.3), true),
            3 => (lin(150.0 / 331.0 * w as f64), true),
            4 => (lin(150.0 / 331.0 * h as f64), true),
            5 => (lin(30.0), true),
            6..=9 => (lin(0.9), true),
            10 => {
                let q = m as f32 / ((bins - 1) as f64 / 4.0) as f32;
                (8.0 - q.round_ties_even() as f64, false)
            }
            11 => (torch_linspace_at(255.0, 0.0, bins, m), false),
            _ => (0.0, false),
        }
    }

    fn apply_op(&self, img: &RgbImage, op: usize, mag: f64) -> RgbImage {
        let (w, h) = (img.width() as f64, img.height() as f64);
        let fill = self.fill;
        match op {
            1 => affine_nearest(
                img,
                inverse_affine_matrix(
                    [0.0, 0.0],
                    0.0,
                    [0.0, 0.0],
                    1.0,
                    [mag.atan().to_degrees(), 0.0],
                ),
                fill,
            ),
            2 => affine_nearest(
                img,
                inverse_affine_matrix(
                    [0.0, 0.0],
                    0.0,
                    [0.0, 0.0],
                    1.0,
                    [0.0, mag.atan().to_degrees()],
                ),
                fill,
            ),
            3 => affine_nearest(
                img,
                inverse_affine_matrix([w * 0.5, h * 0.5], 0.0, [mag.trunc(), 0.0], 1.0, [0.0, 0.0]),
                fill,
            ),
            4 => affine_nearest(
                img,
                inverse_affine_matrix([w * 0.5, h * 0.5], 0.0, [0.0, mag.trunc()], 1.0, [0.0, 0.0]),
                fill,
            ),
            5 => rotate(img, mag, fill),
            6 => enhance::brightness(img, 1.0 + mag),
            7 => enhance::saturation(img, 1.0 + mag),
            8 => enhance::contrast(img, 1.0 + mag),
            9 => enhance::sharpness(img, 1.0 + mag),
            10 => enhance::posterize(img, mag as u32),
            11 => enhance::solarize(img, mag),
            12 => enhance::autocontrast(img),
            13 => enhance::equalize(img),
            _ => img.clone(),
        }
    }

    /// The name of op `i` of the augmentation space.
    pub fn op_name(i: usize) -> &'static str {
        OPS.get(i).copied().unwrap_or("Identity")
    }
}

impl Transform for RandAugment {
    fn name(&self) -> &'static str {
        "rand_augment"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let mut img = expect_image("rand_augment", x)?;
        for _ in 0..self.num_ops {
            let op = randint(rng, 0, OPS.len() as i64) as usize;
            let (mut mag, signed) = self.magnitude_of(op, img.width(), img.height());
            if signed && randint(rng, 0, 2) == 1 {
                mag = -mag;
            }
            img = self.apply_op(&img, op, mag);
        }
        Ok(Value::Image(img))
    }
}

/// Element `i` of `torch.linspace(start, end, steps)` in float32, as PyTorch's CPU kernel
/// computes it: a float32 step, then `start + step * i` for the first half and
/// `end - step * (steps - 1 - i)` for the rest, each a fused multiply-add.
fn torch_linspace_at(start: f64, end: f64, steps: u32, i: u32) -> f64 {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return start as f64;
    }
    let step = (end - start) / (steps - 1) as f32;
    let v = if i < steps / 2 {
        step.mul_add(i as f32, start)
    } else {
        (-step).mul_add((steps - 1 - i) as f32, end)
    };
    v as f64
}
