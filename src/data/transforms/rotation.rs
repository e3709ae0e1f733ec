//! RandomRotation (torchvision on PIL): angle uniform in `degrees`, nearest, same size, `fill`.

use super::affine::rotate;
use super::{expect_image, uniform, DataError, Transform, Value};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct RandomRotation {
    pub degrees: [f64; 2],
    pub fill: u8,
}

impl Transform for RandomRotation {
    fn name(&self) -> &'static str {
        "random_rotation"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("random_rotation", x)?;
        let angle = uniform(rng, self.degrees[0], self.degrees[1]);
        Ok(Value::Image(rotate(&img, angle, self.fill)))
    }
}
