//! RandomCrop (torchvision): optional constant `padding` on every side, `pad_if_needed`, then a
//! uniformly placed `size` window.

use super::center_crop::crop_fill;
use super::{expect_image, randint, DataError, Transform, Value};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct RandomCrop {
    /// (height, width)
    pub size: (u32, u32),
    pub padding: u32,
    pub pad_if_needed: bool,
    pub fill: u8,
}

impl Transform for RandomCrop {
    fn name(&self) -> &'static str {
        "random_crop"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("random_crop", x)?;
        let p = self.padding as i64;
        // the padded image's extent, in original coordinates starting at (-pt, -pl)
        let (mut pl, mut pt) = (p, p);
        let mut w = img.width() as i64 + 2 * p;
        let mut h = img.height() as i64 + 2 * p;
        let (th, tw) = (self.size.0 as i64, self.size.1 as i64);
        if self.pad_if_needed && w < tw {
            let d = tw - w;
            pl += d;
            w += 2 * d;
        }
        if self.pad_if_needed && h < th {
            let d = th - h;
            pt += d;
            h += 2 * d;
        }
        if h < th || w < tw {
            return Err(DataError::transform(
                "random_crop",
                format!(
                    "crop {th}x{tw} is larger than the (padded) image {h}x{w}; set pad_if_needed"
                ),
            ));
        }
        let i = randint(rng, 0, h - th + 1);
        let j = randint(rng, 0, w - tw + 1);
        Ok(Value::Image(crop_fill(
            &img,
            i - pt,
            j - pl,
            th as u32,
            tw as u32,
            self.fill,
        )))
    }
}
