//! RandomErasing (torchvision, on tensors): with probability `p`, a rectangle of area fraction
//! in `scale` and aspect ratio in `ratio` (log-uniform) is set to `value`.

use super::{check_prob, expect_tensor, randint, uniform, DataError, Transform, Value};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct RandomErasing {
    pub p: f64,
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
    pub value: f32,
}

impl RandomErasing {
    pub fn new(p: f64, scale: [f64; 2], ratio: [f64; 2], value: f64) -> Result<Self, DataError> {
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
        Ok(RandomErasing {
            p,
            scale,
            ratio,
            value: value as f32,
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
            let i = randint(rng, 0, ih - h + 1);
            let j = randint(rng, 0, iw - w + 1);
            let plane = t.h * t.w;
            for c in 0..t.c {
                for y in i..i + h {
                    let row = c * plane + y as usize * t.w;
                    t.data[row + j as usize..row + (j + w) as usize].fill(self.value);
                }
            }
            break;
        }
        Ok(Value::Tensor(t))
    }
}
