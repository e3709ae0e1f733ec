//! RandomRotation (torchvision on PIL): angle uniform in `degrees`, nearest, `fill` outside;
//! about `center` (default the image centre), same size unless `expand`.

use super::affine::rotate_with;
use super::{expect_image, uniform, DataError, Transform, Value};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct RandomRotation {
    pub degrees: [f64; 2],
    pub fill: u8,
    pub expand: bool,
    /// `[x, y]` in pixels from the top-left corner; `None` = the image centre.
    pub center: Option<[f64; 2]>,
}

impl Transform for RandomRotation {
    fn name(&self) -> &'static str {
        "random_rotation"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("random_rotation", x)?;
        let angle = uniform(rng, self.degrees[0], self.degrees[1]);
        Ok(Value::Image(rotate_with(
            &img,
            angle,
            self.center,
            self.expand,
            self.fill,
        )))
    }
}
