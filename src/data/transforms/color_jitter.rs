//! ColorJitter (torchvision): factors drawn for brightness, contrast, saturation (around 1) and
//! hue (around 0), applied in a random order, with Pillow's colour operations.

use super::enhance;
use super::{expect_image, symmetric, uniform, DataError, Transform, Value};
use crate::recipe::RangeSpec;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct ColorJitter {
    pub brightness: Option<[f64; 2]>,
    pub contrast: Option<[f64; 2]>,
    pub saturation: Option<[f64; 2]>,
    pub hue: Option<[f64; 2]>,
}

fn factor_range(key: &str, r: Option<RangeSpec>) -> Result<Option<[f64; 2]>, DataError> {
    let Some(r) = r else { return Ok(None) };
    let v = symmetric("color_jitter", key, r, Some((1.0, 0.0)))?;
    if v[0] < 0.0 {
        return Err(DataError::transform(
            "color_jitter",
            format!("{key} values must be >= 0"),
        ));
    }
    // torchvision drops a range that is exactly [1, 1]
    Ok(if v == [1.0, 1.0] { None } else { Some(v) })
}

impl ColorJitter {
    pub fn new(
        brightness: Option<RangeSpec>,
        contrast: Option<RangeSpec>,
        saturation: Option<RangeSpec>,
        hue: Option<RangeSpec>,
    ) -> Result<Self, DataError> {
        let hue = match hue {
            None => None,
            Some(h) => {
                let v = symmetric("color_jitter", "hue", h, None)?;
                if v[0] < -0.5 || v[1] > 0.5 {
                    return Err(DataError::transform(
                        "color_jitter",
                        "hue must be within [-0.5, 0.5]",
                    ));
                }
                if v == [0.0, 0.0] {
                    None
                } else {
                    Some(v)
                }
            }
        };
        Ok(ColorJitter {
            brightness: factor_range("brightness", brightness)?,
            contrast: factor_range("contrast", contrast)?,
            saturation: factor_range("saturation", saturation)?,
            hue,
        })
    }
}

impl ColorJitter {
    /// The random order of the operations (0 brightness, 1 contrast, 2 saturation, 3 hue) and
    /// the factor of each one in use, drawn as torchvision's `get_params` does.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> ([usize; 4], [Option<f64>; 4]) {
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let mut draw = |r: Option<[f64; 2]>| r.map(|[a, b]| uniform(rng, a, b));
        let b = draw(self.brightness);
        let c = draw(self.contrast);
        let s = draw(self.saturation);
        let h = draw(self.hue);
        (order, [b, c, s, h])
    }
}

impl Transform for ColorJitter {
    fn name(&self) -> &'static str {
        "color_jitter"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let mut img = expect_image("color_jitter", x)?;
        let (order, [b, c, s, h]) = self.draw(rng);
        for op in order {
            img = match (op, b, c, s, h) {
                (0, Some(f), _, _, _) => enhance::brightness(&img, f),
                (1, _, Some(f), _, _) => enhance::contrast(&img, f),
                (2, _, _, Some(f), _) => enhance::saturation(&img, f),
                (3, _, _, _, Some(f)) => enhance::hue(&img, f),
                _ => img,
            };
        }
        Ok(Value::Image(img))
    }
}
