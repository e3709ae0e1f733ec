//! CenterCrop (torchvision): Python-round offsets; a crop larger than the image pads with zeros.

use super::{expect_image, round_half_even, DataError, Transform, Value};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

/// Copies the `h x w` window at (`top`, `left`) (which may reach outside) filling with `fill`.
pub fn crop_fill(img: &RgbImage, top: i64, left: i64, h: u32, w: u32, fill: u8) -> RgbImage {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let mut out = vec![fill; (h as usize) * (w as usize) * 3];
    let src = img.as_raw();
    for y in 0..h as i64 {
        let sy = y + top;
        if sy < 0 || sy >= ih {
            continue;
        }
        let x0 = (-left).clamp(0, w as i64);
        let x1 = (iw - left).clamp(0, w as i64);
        if x1 <= x0 {
            continue;
        }
        let s = ((sy * iw + x0 + left) * 3) as usize;
        let d = ((y * w as i64 + x0) * 3) as usize;
        let n = ((x1 - x0) * 3) as usize;
        out[d..d + n].copy_from_slice(&src[s..s + n]);
    }
    RgbImage::from_raw(w, h, out).unwrap_or_default()
}

/// torchvision `F.center_crop` on a PIL image.
pub fn center_crop(img: &RgbImage, ch: u32, cw: u32) -> RgbImage {
    let (mut iw, mut ih) = (img.width() as i64, img.height() as i64);
    let (cw_, ch_) = (cw as i64, ch as i64);
    // padding first (left/top get the floor half)
    let pad_l = if cw_ > iw { (cw_ - iw) / 2 } else { 0 };
    let pad_t = if ch_ > ih { (ch_ - ih) / 2 } else { 0 };
    let pad_r = if cw_ > iw { (cw_ - iw + 1) / 2 } else { 0 };
    let pad_b = if ch_ > ih { (ch_ - ih + 1) / 2 } else { 0 };
    let mut base_top = 0;
    let mut base_left = 0;
    if pad_l + pad_t + pad_r + pad_b > 0 {
        base_top = -pad_t;
        base_left = -pad_l;
        iw += pad_l + pad_r;
        ih += pad_t + pad_b;
    }
    if iw == cw_ && ih == ch_ && base_top == 0 && base_left == 0 {
        return img.clone();
    }
    let top = round_half_even((ih - ch_) as f64 / 2.0) + base_top;
    let left = round_half_even((iw - cw_) as f64 / 2.0) + base_left;
    crop_fill(img, top, left, ch, cw, 0)
}

#[derive(Debug, Clone)]
pub struct CenterCrop {
    pub size: (u32, u32),
}

impl CenterCrop {
    pub fn new(size: (u32, u32)) -> Self {
        CenterCrop { size }
    }
}

impl Transform for CenterCrop {
    fn name(&self) -> &'static str {
        "center_crop"
    }
    fn apply(&self, x: Value, _rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("center_crop", x)?;
        Ok(Value::Image(center_crop(&img, self.size.0, self.size.1)))
    }
}
