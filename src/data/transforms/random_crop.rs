//! RandomCrop (torchvision on PIL): optional `padding` (`[left, top, right, bottom]`) in one of
//! torchvision's padding modes, `pad_if_needed`, then a uniformly placed `size` window.

use super::center_crop::crop_fill;
use super::{expect_image, randint, DataError, Transform, Value};
use crate::recipe::PaddingMode;
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct RandomCrop {
    /// (height, width)
    pub size: (u32, u32),
    /// `[left, top, right, bottom]`
    pub padding: [u32; 4],
    pub pad_if_needed: bool,
    pub fill: u8,
    pub padding_mode: PaddingMode,
}

/// The source index of padded position `i` (which may lie outside `0..n`) on an axis of
/// length `n`, as `numpy.pad` maps it (`n >= 1`). Padding wider than the image keeps
/// reflecting (`reflect` has period `2(n-1)`, `symmetric` `2n`).
pub fn pad_index(i: i64, n: i64, mode: PaddingMode) -> i64 {
    match mode {
        PaddingMode::Constant | PaddingMode::Edge => i.clamp(0, n - 1),
        PaddingMode::Reflect => {
            if n == 1 {
                return 0;
            }
            let period = 2 * (n - 1);
            let m = i.rem_euclid(period);
            if m < n {
                m
            } else {
                period - m
            }
        }
        PaddingMode::Symmetric => {
            let period = 2 * n;
            let m = i.rem_euclid(period);
            if m < n {
                m
            } else {
                period - 1 - m
            }
        }
    }
}

/// torchvision `F.pad` on a PIL image: `[left, top, right, bottom]` pixels in `mode`
/// (`fill` for `constant`).
pub fn pad(img: &RgbImage, padding: [u32; 4], mode: PaddingMode, fill: u8) -> RgbImage {
    let [l, t, r, b] = padding.map(|v| v as i64);
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let (w, h) = (iw + l + r, ih + t + b);
    if mode == PaddingMode::Constant || iw == 0 || ih == 0 {
        return crop_fill(img, -t, -l, h as u32, w as u32, fill);
    }
    let src = img.as_raw();
    let cols: Vec<usize> = (0..w)
        .map(|x| pad_index(x - l, iw, mode) as usize)
        .collect();
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        let sy = pad_index(y - t, ih, mode) as usize;
        let row = &src[sy * iw as usize * 3..(sy + 1) * iw as usize * 3];
        for &sx in &cols {
            out.extend_from_slice(&row[sx * 3..sx * 3 + 3]);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_default()
}

impl Transform for RandomCrop {
    fn name(&self) -> &'static str {
        "random_crop"
    }
    fn apply(&self, x: Value, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("random_crop", x)?;
        if self.padding_mode != PaddingMode::Constant {
            return self.apply_padded(img, rng);
        }
        // Constant padding without building the padded image: the padded image's extent, in
        // original coordinates, starts at (-pt, -pl).
        let [l, t, r, b] = self.padding.map(|v| v as i64);
        let (mut pl, mut pt) = (l, t);
        let mut w = img.width() as i64 + l + r;
        let mut h = img.height() as i64 + t + b;
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
        let (i, j) = self.window(h, w, rng)?;
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

impl RandomCrop {
    /// The window's top-left corner in an `h x w` (padded) image.
    fn window(&self, h: i64, w: i64, rng: &mut ChaCha8Rng) -> Result<(i64, i64), DataError> {
        let (th, tw) = (self.size.0 as i64, self.size.1 as i64);
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
        Ok((i, j))
    }

    /// torchvision's order: `padding`, then the width, then the height padded as needed (each
    /// step pads the previous step's output, which matters for `reflect` and `symmetric`).
    fn apply_padded(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let (th, tw) = self.size;
        let mut img = if self.padding.iter().any(|p| *p > 0) {
            pad(&img, self.padding, self.padding_mode, self.fill)
        } else {
            img
        };
        if self.pad_if_needed && img.width() < tw {
            let d = tw - img.width();
            img = pad(&img, [d, 0, d, 0], self.padding_mode, self.fill);
        }
        if self.pad_if_needed && img.height() < th {
            let d = th - img.height();
            img = pad(&img, [0, d, 0, d], self.padding_mode, self.fill);
        }
        let (i, j) = self.window(img.height() as i64, img.width() as i64, rng)?;
        Ok(Value::Image(crop_fill(&img, i, j, th, tw, self.fill)))
    }
}
