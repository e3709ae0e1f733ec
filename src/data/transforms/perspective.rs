//! RandomPerspective (torchvision): with probability `p`, corners moved inwards by up to
//! `distortion_scale` of the half size; bilinear sampling, `fill` outside.

use super::{check_prob, expect_image, randint, DataError, Transform, Value};
use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct RandomPerspective {
    pub distortion_scale: f64,
    pub p: f64,
    pub fill: u8,
}

impl RandomPerspective {
    pub fn new(distortion_scale: f64, p: f64, fill: u8) -> Result<Self, DataError> {
        check_prob("random_perspective", p)?;
        if !(0.0..=1.0).contains(&distortion_scale) {
            return Err(DataError::transform(
                "random_perspective",
                format!("distortion_scale must be in [0, 1], got {distortion_scale}"),
            ));
        }
        Ok(RandomPerspective {
            distortion_scale,
            p,
            fill,
        })
    }
}

/// Solves the 8 perspective coefficients mapping `end` points (output) to `start` (input),
/// as torchvision `_get_perspective_coeffs`: solved in f64, then rounded to f32 as torchvision
/// does before handing them to Pillow.
pub fn perspective_coeffs(start: [[f64; 2]; 4], end: [[f64; 2]; 4]) -> Option<[f64; 8]> {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let (ex, ey) = (end[i][0], end[i][1]);
        let (sx, sy) = (start[i][0], start[i][1]);
        a[2 * i] = [ex, ey, 1.0, 0.0, 0.0, 0.0, -sx * ex, -sx * ey, sx];
        a[2 * i + 1] = [0.0, 0.0, 0.0, ex, ey, 1.0, -sy * ex, -sy * ey, sy];
    }
    // Gaussian elimination with partial pivoting
    for col in 0..8 {
        let piv = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(pivot_row.iter()).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut out = [0f64; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (a[i][8] / a[i][i]) as f32 as f64;
    }
    Some(out)
}

/// Pillow `Image.transform(PERSPECTIVE, BILINEAR)` with its arithmetic
/// (`ImagingGenericTransform` with `bilinear_filter32RGB`): output pixel centre (x + 0.5,
/// y + 0.5) maps to input (xi, yi); outside `[0, w) x [0, h)` -> `fill`; else the four pixels
/// around (xi - 0.5, yi - 0.5), clamped to the image's edge, are blended in f64 and truncated.
pub fn warp_perspective(img: &RgbImage, c: [f64; 8], fill: u8) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let mut out = vec![fill; (w * h * 3) as usize];
    let px = |x: i64, y: i64, ch: usize| -> f64 {
        src[((y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) * 3) as usize + ch] as f64
    };
    for y in 0..h {
        for x in 0..w {
            let (xc, yc) = (x as f64 + 0.5, y as f64 + 0.5);
            let den = c[6] * xc + c[7] * yc + 1.0;
            let xi = (c[0] * xc + c[1] * yc + c[2]) / den;
            let yi = (c[3] * xc + c[4] * yc + c[5]) / den;
            // also false for NaN (a zero denominator)
            if !(xi >= 0.0 && xi < w as f64 && yi >= 0.0 && yi < h as f64) {
                continue;
            }
            let (xi, yi) = (xi - 0.5, yi - 0.5);
            let (x0, y0) = (xi.floor() as i64, yi.floor() as i64);
            let (dx, dy) = (xi - x0 as f64, yi - y0 as f64);
            let d = ((y * w + x) * 3) as usize;
            for ch in 0..3 {
                let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
                let top = lerp(px(x0, y0, ch), px(x0 + 1, y0, ch), dx);
                let bottom = if y0 + 1 < h {
                    lerp(px(x0, y0 + 1, ch), px(x0 + 1, y0 + 1, ch), dx)
                } else {
                    top
                };
                out[d + ch] = lerp(top, bottom, dy) as u8;
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_default()
}

impl Transform for RandomPerspective {
    fn name(&self) -> &'static str {
        "random_perspective"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("random_perspective", x)?;
        if rng.random::<f64>() >= self.p {
            return Ok(Value::Image(img));
        }
        let (w, h) = (img.width() as i64, img.height() as i64);
        let dw = (self.distortion_scale * (w / 2) as f64) as i64;
        let dh = (self.distortion_scale * (h / 2) as f64) as i64;
        let tl = [randint(rng, 0, dw + 1), randint(rng, 0, dh + 1)];
        let tr = [randint(rng, w - dw - 1, w), randint(rng, 0, dh + 1)];
        let br = [randint(rng, w - dw - 1, w), randint(rng, h - dh - 1, h)];
        let bl = [randint(rng, 0, dw + 1), randint(rng, h - dh - 1, h)];
        let f = |p: [i64; 2]| [p[0] as f64, p[1] as f64];
        let start = [
            [0.0, 0.0],
            [(w - 1) as f64, 0.0],
            [(w - 1) as f64, (h - 1) as f64],
            [0.0, (h - 1) as f64],
        ];
        let end = [f(tl), f(tr), f(br), f(bl)];
        match perspective_coeffs(start, end) {
            Some(c) => Ok(Value::Image(warp_perspective(&img, c, self.fill))),
            None => Ok(Value::Image(img)),
        }
    }
}
