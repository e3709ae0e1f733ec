//! ToTensor: u8 HWC RGB -> f32 CHW in [0, 1] (`v as f32 / 255`, as torchvision).

use super::{expect_image, DataError, ImageTensor, Transform, Value};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

pub fn image_to_tensor(img: &RgbImage) -> ImageTensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let mut data = vec![0f32; 3 * n];
    let (r, rest) = data.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = px[0] as f32 / 255.0;
        g[i] = px[1] as f32 / 255.0;
        b[i] = px[2] as f32 / 255.0;
    }
    ImageTensor { c: 3, h, w, data }
}

#[derive(Debug, Clone)]
pub struct ToTensor;

impl Transform for ToTensor {
    fn name(&self) -> &'static str {
        "to_tensor"
    }
    fn apply(&self, x: Value, _rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        Ok(Value::Tensor(image_to_tensor(&expect_image(
            "to_tensor",
            x,
        )?)))
    }
}
