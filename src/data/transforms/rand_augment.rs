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

    /// The op's magnitude at the configured bin and whether it is signed.
    fn magnitude_of(&self, op: usize, w: u32, h: u32) -> (f64, bool) {
        let bins = self.num_magnitude_bins as f64;
        let m = self.magnitude as f64;
        let lin = |hi: f64| hi * m / (bins - 1.0);
        match op {
            1 | 2 => (lin(0.3), true),
            3 => (lin(150.0 / 331.0 * w as f64), true),
            4 => (lin(150.0 / 331.0 * h as f64), true),
            5 => (lin(30.0), true),
            6..=9 => (lin(0.9), true),
            10 => ((8.0 - (m / ((bins - 1.0) / 4.0)).round()), false),
            11 => (255.0 - lin(255.0), false),
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
