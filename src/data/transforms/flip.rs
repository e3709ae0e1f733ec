//! RandomHorizontalFlip (`horizontal_flip`, probability `p`), on images or tensors.

use super::{check_prob, DataError, ImageTensor, Transform, Value};
use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub fn hflip_image(img: &RgbImage) -> RgbImage {
    image::imageops::flip_horizontal(img)
}

pub fn hflip_tensor(t: &ImageTensor) -> ImageTensor {
    let mut data = t.data.clone();
    for row in data.chunks_mut(t.w) {
        row.reverse();
    }
    ImageTensor { data, ..*t }
}

#[derive(Debug, Clone)]
pub struct HorizontalFlip {
    pub p: f64,
}

impl HorizontalFlip {
    pub fn new(p: f64) -> Result<Self, DataError> {
        check_prob("horizontal_flip", p)?;
        Ok(HorizontalFlip { p })
    }
}

impl Transform for HorizontalFlip {
    fn name(&self) -> &'static str {
        "horizontal_flip"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        if rng.random::<f64>() >= self.p {
            return Ok(x);
        }
        Ok(match x {
            Value::Image(i) => Value::Image(hflip_image(&i)),
            Value::Tensor(t) => Value::Tensor(hflip_tensor(&t)),
        })
    }
}
