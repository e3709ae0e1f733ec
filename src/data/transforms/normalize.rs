//! Normalize: `(x - mean) / std` per channel in f32, as torchvision.

use super::{expect_tensor, DataError, Transform, Value};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    pub fn new(mean: [f64; 3], std: [f64; 3]) -> Result<Self, DataError> {
        if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err(DataError::transform(
                "normalize",
                "std must be non-zero and finite",
            ));
        }
        Ok(Normalize {
            mean: mean.map(|m| m as f32),
            std: std.map(|s| s as f32),
        })
    }
}

impl Transform for Normalize {
    fn name(&self) -> &'static str {
        "normalize"
    }
    fn apply(&self, x: Value, _rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let mut t = expect_tensor("normalize", x)?;
        if t.c != 3 {
            return Err(DataError::transform(
                "normalize",
                format!("expects 3 channels, got {}", t.c),
            ));
        }
        let n = t.h * t.w;
        for (c, plane) in t.data.chunks_mut(n).enumerate() {
            let (m, s) = (self.mean[c], self.std[c]);
            for v in plane {
                *v = (*v - m) / s;
            }
        }
        Ok(Value::Tensor(t))
    }
}
