//! RandomErasing (torchvision, on tensors): with probability `p`, a rectangle of area fraction
//! in `scale` and aspect ratio in `ratio` (log-uniform) is set to `value`: one number, one per
//! channel, or (`"random"`) per-pixel standard normal values drawn from the sample's RNG.

use super::{check_prob, expect_tensor, randint, uniform, DataError, Transform, Value};
use crate::recipe::EraseValue;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// What the erased rectangle is set to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// One value per channel (a single number is repeated).
    PerChannel([f32; 3]),
    /// torchvision's `value="random"`: `torch.empty(c, h, w).normal_()`.
    Normal,
}

#[derive(Debug, Clone)]
pub struct RandomErasing {
    pub p: f64,
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
    pub value: Fill,
}

impl RandomErasing {
    pub fn new(
        p: f64,
        scale: [f64; 2],
        ratio: [f64; 2],
        value: EraseValue,
    ) -> Result<Self, DataError> {
        check_prob("random_erasing", p)?;
        if !(0.0..=1.0).contains(&scale[0]) || scale[0] > scale[1] || scale[1] > 1.0 {
            return Err(DataError::transform(
                "random_erasing",
                format!("scale must be within [0, 1] with min <= max, got {scale:?}"),
            ));
        }
        if !(ratio[0] > 0.0 && ratio[0] <= ratio[1]) {
            return Err(DataError::transform(
                "random_erasing",
                format!("ratio must satisfy 0 < min <= max, got {ratio:?}"),
            ));
        }
        let value = match value {
            EraseValue::Number(v) => Fill::PerChannel([v as f32; 3]),
            EraseValue::PerChannel(v) => Fill::PerChannel(v.map(|x| x as f32)),
            EraseValue::Random(_) => Fill::Normal,
        };
        let finite = match value {
            Fill::PerChannel(v) => v.iter().all(|x| x.is_finite()),
            Fill::Normal => true,
        };
        if !finite {
            return Err(DataError::transform(
                "random_erasing",
                "value must be finite",
            ));
        }
        Ok(RandomErasing {
            p,
            scale,
            ratio,
            value,
        })
    }
}

impl Transform for RandomErasing {
    fn name(&self) -> &'static str {
        "random_erasing"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let mut t = expect_tensor("random_erasing", x)?;
        if rng.random::<f64>() >= self.p {
            return Ok(Value::Tensor(t));
        }
        let (ih, iw) = (t.h as i64, t.w as i64);
        let area = (ih * iw) as f64;
        let lr = [self.ratio[0].ln(), self.ratio[1].ln()];
        for _ in 0..10 {
            let erase = area * uniform(rng, self.scale[0], self.scale[1]);
            let ar = uniform(rng, lr[0], lr[1]).exp();
            let h = (erase * ar).sqrt().round() as i64;
            let w = (erase / ar).sqrt().round() as i64;
            if !(h < ih && w < iw) {
                continue;
            }
            // as torchvision: the random values (c, h, w) are drawn before the position
            let noise: Vec<f32> = match self.value {
                Fill::Normal => (0..t.c * (h * w) as usize)
                    .map(|_| rng.sample::<f32, _>(StandardNormal))
                    .collect(),
                Fill::PerChannel(_) => Vec::new(),
            };
            let i = randint(rng, 0, ih - h + 1);
            let j = randint(rng, 0, iw - w + 1);
            let plane = t.h * t.w;
            let (h, w, i, j) = (h as usize, w as usize, i as usize, j as usize);
            for c in 0..t.c {
                for y in 0..h {
                    let row = c * plane + (i + y) * t.w + j;
                    let dst = &mut t.data[row..row + w];
                    match self.value {
                        Fill::PerChannel(v) => dst.fill(v[c.min(2)]),
                        Fill::Normal => {
                            let k = (c * h + y) * w;
                            dst.copy_from_slice(&noise[k..k + w]);
                        }
                    }
                }
            }
            break;
        }
        Ok(Value::Tensor(t))
    }
}
