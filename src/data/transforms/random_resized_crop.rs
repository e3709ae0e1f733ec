//! RandomResizedCrop (torchvision `get_params`: 10 tries of scale/log-ratio, then the central
//! fallback), cropped then resized with the Pillow-exact resize (torchvision's
//! `F.resized_crop`: crop, then `resize` with the interpolation mode).

use super::center_crop::crop_fill;
use super::resize::resize_with;
use super::{expect_image, randint, uniform, DataError, Transform, Value};
use crate::recipe::Interpolation;
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct RandomResizedCrop {
    /// (height, width)
    pub size: (u32, u32),
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
    pub interpolation: Interpolation,
}

impl RandomResizedCrop {
    pub fn new(size: (u32, u32), scale: [f64; 2], ratio: [f64; 2]) -> Result<Self, DataError> {
        if !(scale[0] > 0.0 && scale[0] <= scale[1]) {
            return Err(DataError::transform(
                "random_resized_crop",
                format!("scale must satisfy 0 < min <= max, got {scale:?}"),
            ));
        }
        if !(ratio[0] > 0.0 && ratio[0] <= ratio[1]) {
            return Err(DataError::transform(
                "random_resized_crop",
                format!("ratio must satisfy 0 < min <= max, got {ratio:?}"),
            ));
        }
        Ok(RandomResizedCrop {
            size,
            scale,
            ratio,
            interpolation: Interpolation::Bilinear,
        })
    }

    /// The same with another interpolation mode.
    pub fn with_interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// `(top, left, h, w)` of the crop, as torchvision draws it.
    pub fn params(&self, width: u32, height: u32, rng: &mut ChaCha8Rng) -> (i64, i64, i64, i64) {
        let (width, height) = (width as i64, height as i64);
        let area = (width * height) as f64;
        let lr = [self.ratio[0].ln(), self.ratio[1].ln()];
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale[0], self.scale[1]);
            let ar = uniform(rng, lr[0], lr[1]).exp();
            let w = (target * ar).sqrt().round() as i64;
            let h = (target / ar).sqrt().round() as i64;
            if 0 < w && w <= width && 0 < h && h <= height {
                let i = randint(rng, 0, height - h + 1);
                let j = randint(rng, 0, width - w + 1);
                return (i, j, h, w);
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio[0] {
            (width, ((width as f64) / self.ratio[0]).round() as i64)
        } else if in_ratio > self.ratio[1] {
            (((height as f64) * self.ratio[1]).round() as i64, height)
        } else {
            (width, height)
        };
        ((height - h) / 2, (width - w) / 2, h, w)
    }
}

impl Transform for RandomResizedCrop {
    fn name(&self) -> &'static str {
        "random_resized_crop"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("random_resized_crop", x)?;
        let (i, j, h, w) = self.params(img.width(), img.height(), rng);
        Ok(Value::Image(resized_crop(
            &img,
            (i, j, h, w),
            self.size,
            self.interpolation,
        )))
    }
}

/// torchvision's `F.resized_crop` on a PIL image: crop `(top, left, height, width)` (zeros
/// outside the image), then resize to `size = (height, width)` with `interpolation`.
pub fn resized_crop(
    img: &RgbImage,
    (top, left, h, w): (i64, i64, i64, i64),
    size: (u32, u32),
    interpolation: Interpolation,
) -> RgbImage {
    let crop = crop_fill(img, top, left, h.max(1) as u32, w.max(1) as u32, 0);
    resize_with(&crop, size.1, size.0, interpolation)
}
