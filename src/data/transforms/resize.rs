//! Resize: a port of Pillow's bilinear (antialiased) resampling, bit-exact with torchvision on
//! PIL images, and torchvision's rule for an int size (shorter side).

use super::{expect_image, DataError, Transform, Value};
use crate::recipe::SizeSpec;
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

pub(crate) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` for the bilinear filter: per output pixel, the first input
/// index, the tap count and the 22-bit fixed-point weights (`ksize` per pixel).
pub(crate) fn coeffs(in_size: usize, out_size: usize) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0
    let ksize = (support.ceil() as usize) * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let ss = 1.0 / filterscale;
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C cast truncates
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let arg = ((x + xmin) as f64 - center + 0.5) * ss;
            let a = arg.abs();
            let w = if a < 1.0 { 1.0 - a } else { 0.0 };
            *kx = w;
            ww += w;
        }
        for x in 0..n {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    (ksize, bounds, kk)
}

#[inline]
pub(crate) fn clip8(v: i32) -> u8 {
    if v >= (1 << (PRECISION_BITS + 8)) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow `Image.resize((w, h), BILINEAR)` on an RGB image.
pub fn resize_bilinear(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if ow == in_w && oh == in_h {
        return img.clone();
    }
    let (ksize_v, bounds_v, kk_v) = coeffs(in_h, oh);
    let src = img.as_raw();
    // horizontal pass over the rows the vertical pass uses
    let (tmp, tmp_w, row0, rows) = if ow != in_w {
        let (ksize_h, bounds_h, kk_h) = coeffs(in_w, ow);
        let first = bounds_v[0].0;
        let last = bounds_v[oh - 1].0 + bounds_v[oh - 1].1;
        let rows = last - first;
        let mut out = vec![0u8; rows * ow * 3];
        let half = 1i32 << (PRECISION_BITS - 1);
        for y in 0..rows {
            let srow = &src[(y + first) * in_w * 3..(y + first + 1) * in_w * 3];
            let drow = &mut out[y * ow * 3..(y + 1) * ow * 3];
            for xx in 0..ow {
                let (xmin, n) = bounds_h[xx];
                let k = &kk_h[xx * ksize_h..xx * ksize_h + n];
                let (mut s0, mut s1, mut s2) = (half, half, half);
                let px = &srow[xmin * 3..(xmin + n) * 3];
                for (p, &w) in px.chunks_exact(3).zip(k) {
                    s0 = s0.wrapping_add(p[0] as i32 * w);
                    s1 = s1.wrapping_add(p[1] as i32 * w);
                    s2 = s2.wrapping_add(p[2] as i32 * w);
                }
                drow[xx * 3] = clip8(s0);
                drow[xx * 3 + 1] = clip8(s1);
                drow[xx * 3 + 2] = clip8(s2);
            }
        }
        (out, ow, first, rows)
    } else {
        (src.to_vec(), in_w, 0, in_h)
    };
    let _ = rows;
    if oh == in_h {
        return RgbImage::from_raw(tmp_w as u32, oh as u32, tmp).unwrap_or_default();
    }
    let mut out = vec![0u8; oh * tmp_w * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    let stride = tmp_w * 3;
    let mut acc = vec![half; stride];
    for yy in 0..oh {
        let (ymin, n) = bounds_v[yy];
        let ymin = ymin - row0;
        let k = &kk_v[yy * ksize_v..yy * ksize_v + n];
        let drow = &mut out[yy * stride..(yy + 1) * stride];
        // accumulate row by row for cache-friendly access
        acc.fill(half);
        for (i, &w) in k.iter().enumerate() {
            let srow = &tmp[(ymin + i) * stride..(ymin + i + 1) * stride];
            for (a, &s) in acc.iter_mut().zip(srow) {
                *a = a.wrapping_add(s as i32 * w);
            }
        }
        for (d, &a) in drow.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    RgbImage::from_raw(tmp_w as u32, oh as u32, out).unwrap_or_default()
}

/// torchvision's output size: `(h, w)` as given, or for an int the shorter side becomes `s`
/// and the longer `int(s * long / short)`.
pub fn output_size(in_w: u32, in_h: u32, size: SizeSpec) -> (u32, u32) {
    match size {
        SizeSpec::HeightWidth([h, w]) => (w, h),
        SizeSpec::Square(s) => {
            let (short, long) = if in_w <= in_h {
                (in_w, in_h)
            } else {
                (in_h, in_w)
            };
            let new_long = ((s as f64) * (long as f64) / (short as f64)) as u32;
            if in_w <= in_h {
                (s, new_long)
            } else {
                (new_long, s)
            }
        }
    }
}

/// `resize`: `size = int` (shorter side) or `[h, w]`; bilinear with antialias.
#[derive(Debug, Clone)]
pub struct Resize {
    pub size: SizeSpec,
}

impl Resize {
    pub fn new(size: SizeSpec) -> Result<Self, DataError> {
        super::hw("resize", size)?;
        Ok(Resize { size })
    }
}

impl Transform for Resize {
    fn name(&self) -> &'static str {
        "resize"
    }
    fn apply(&self, x: Value, _rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("resize", x)?;
        let (w, h) = output_size(img.width(), img.height(), self.size);
        if (w, h) == img.dimensions() {
            return Ok(Value::Image(img));
        }
        Ok(Value::Image(resize_bilinear(&img, w.max(1), h.max(1))))
    }
}
