//! Pillow's colour operations on 8-bit RGB, as torchvision calls them on PIL images:
//! ImageEnhance (brightness, contrast, colour, sharpness), hue shift through HSV, and
//! ImageOps (posterize, solarize, autocontrast, equalize).

use image::RgbImage;

/// Pillow's RGB -> L: `(r*19595 + g*38470 + b*7471 + 0x8000) >> 16`.
#[inline]
pub fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Pillow `ImagingBlend` for one byte: `in1 + alpha * (in2 - in1)` in float, truncated, clipped
/// only when extrapolating.
#[inline]
pub(crate) fn blend_px(d: u8, v: u8, a: f32, interp: bool) -> u8 {
    let t = d as f32 + a * (v as i32 - d as i32) as f32;
    if interp {
        t as u8
    } else if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
}

/// The 256-entry table of blending every value with a constant degenerate value.
pub(crate) fn blend_table(d: u8, alpha: f64) -> [u8; 256] {
    let a = alpha as f32;
    let interp = (0.0..=1.0).contains(&a);
    let mut t = [0u8; 256];
    for (v, o) in t.iter_mut().enumerate() {
        *o = blend_px(d, v as u8, a, interp);
    }
    t
}

fn apply_table(img: &RgbImage, t: &[u8; 256]) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = t[*v as usize];
    }
    out
}

/// `Image.blend(degenerate, img, alpha)` with a per-byte degenerate image.
fn blend_images(img: &RgbImage, alpha: f64, degenerate: &[u8]) -> RgbImage {
    let a = alpha as f32;
    let interp = (0.0..=1.0).contains(&a);
    let mut out = img.clone();
    for (v, &d) in out.iter_mut().zip(degenerate) {
        *v = blend_px(d, *v, a, interp);
    }
    out
}

pub fn brightness(img: &RgbImage, f: f64) -> RgbImage {
    apply_table(img, &blend_table(0, f))
}

pub fn contrast(img: &RgbImage, f: f64) -> RgbImage {
    let n = (img.width() * img.height()).max(1) as f64;
    let sum: u64 = img.as_raw().chunks_exact(3).map(|p| luma(p) as u64).sum();
    let mean = (sum as f64 / n + 0.5) as u8;
    apply_table(img, &blend_table(mean, f))
}

pub fn saturation(img: &RgbImage, f: f64) -> RgbImage {
    let a = f as f32;
    let interp = (0.0..=1.0).contains(&a);
    let mut out = img.clone();
    for p in out.chunks_exact_mut(3) {
        let g = luma(p);
        for v in p.iter_mut() {
            *v = blend_px(g, *v, a, interp);
        }
    }
    out
}

/// Pillow's SMOOTH filter (3x3, centre 5, /13), border pixels kept.
fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = src.clone();
    if w >= 3 && h >= 3 {
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                for c in 0..3 {
                    let mut s = 0u32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let v = src[((y + dy - 1) * w + x + dx - 1) * 3 + c] as u32;
                            s += if dx == 1 && dy == 1 { 5 * v } else { v };
                        }
                    }
                    out[(y * w + x) * 3 + c] = ((s as f32 / 13.0) + 0.5) as u8;
                }
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_default()
}

pub fn sharpness(img: &RgbImage, f: f64) -> RgbImage {
    let d = smooth(img);
    blend_images(img, f, d.as_raw())
}

/// Pillow's `rgb2hsv_row` (RGB -> HSV `convert`), with its mix of f32 variables and f64
/// expressions (C promotes `float op double` to double), so the same bytes.
fn rgb2hsv(p: &[u8]) -> [u8; 3] {
    let (r, g, b) = (p[0], p[1], p[2]);
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let rc = (maxc - r) as f32 / cr;
    let gc = (maxc - g) as f32 / cr;
    let bc = (maxc - b) as f32 / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + rc as f64 - bc as f64) as f32
    } else {
        (4.0 + gc as f64 - rc as f64) as f32
    };
    // C's fmod; the argument is positive (h >= -1)
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    let clip = |v: i32| v.clamp(0, 255) as u8;
    [
        clip((h as f64 * 255.0) as i32),
        clip((s as f64 * 255.0) as i32),
        maxc,
    ]
}

/// Pillow's `hsv2rgb` (HSV -> RGB `convert`), same arithmetic as the C.
fn hsv2rgb(p: [u8; 3]) -> [u8; 3] {
    let (hh, ss, v) = (p[0], p[1], p[2]);
    if ss == 0 {
        return [v, v, v];
    }
    let h6 = hh as f64 * 6.0 / 255.0;
    let i = h6.floor() as i32;
    let f = (h6 - i as f64) as f32;
    let fs = (ss as f64 / 255.0) as f32;
    let vf = v as f64;
    // C's round(): half away from zero, as f64::round
    let clip = |x: f64| x.round().clamp(0.0, 255.0) as u8;
    let pp = clip(vf * (1.0 - fs as f64));
    let q = clip(vf * (1.0 - (fs * f) as f64));
    let t = clip(vf * (1.0 - fs as f64 * (1.0 - f as f64)));
    match i % 6 {
        0 => [v, t, pp],
        1 => [q, v, pp],
        2 => [pp, v, t],
        3 => [pp, q, v],
        4 => [t, pp, v],
        _ => [v, pp, q],
    }
}

/// torchvision `adjust_hue` on PIL: shift H by `uint8(hue * 255)` with wrap-around.
pub fn hue(img: &RgbImage, factor: f64) -> RgbImage {
    let shift = ((factor * 255.0) as i64).rem_euclid(256) as u8;
    let mut out = img.clone();
    for p in out.chunks_exact_mut(3) {
        let mut hsv = rgb2hsv(p);
        hsv[0] = hsv[0].wrapping_add(shift);
        p.copy_from_slice(&hsv2rgb(hsv));
    }
    out
}

fn lut(img: &RgbImage, table: impl Fn(usize, u8) -> u8) -> RgbImage {
    let mut out = img.clone();
    for (i, v) in out.iter_mut().enumerate() {
        *v = table(i % 3, *v);
    }
    out
}

pub fn posterize(img: &RgbImage, bits: u32) -> RgbImage {
    let bits = bits.min(8);
    let mask: u8 = if bits == 0 {
        0
    } else {
        !((1u16 << (8 - bits)) - 1) as u8
    };
    lut(img, |_, v| v & mask)
}

pub fn solarize(img: &RgbImage, threshold: f64) -> RgbImage {
    lut(img, |_, v| if (v as f64) < threshold { v } else { 255 - v })
}

fn histograms(img: &RgbImage) -> [[u32; 256]; 3] {
    let mut h = [[0u32; 256]; 3];
    for p in img.as_raw().chunks_exact(3) {
        for c in 0..3 {
            h[c][p[c] as usize] += 1;
        }
    }
    h
}

pub fn autocontrast(img: &RgbImage) -> RgbImage {
    let h = histograms(img);
    let mut tables = [[0u8; 256]; 3];
    for c in 0..3 {
        let lo = (0..256).find(|&i| h[c][i] > 0).unwrap_or(0);
        let hi = (0..256).rev().find(|&i| h[c][i] > 0).unwrap_or(255);
        for (i, t) in tables[c].iter_mut().enumerate() {
            *t = if hi <= lo {
                i as u8
            } else {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8
            };
        }
    }
    lut(img, |c, v| tables[c][v as usize])
}

pub fn equalize(img: &RgbImage) -> RgbImage {
    let h = histograms(img);
    let mut tables = [[0u8; 256]; 3];
    for c in 0..3 {
        let nz: Vec<u32> = h[c].iter().copied().filter(|&v| v > 0).collect();
        let ident = |t: &mut [u8; 256]| {
            for (i, v) in t.iter_mut().enumerate() {
                *v = i as u8;
            }
        };
        if nz.len() <= 1 {
            ident(&mut tables[c]);
            continue;
        }
        let total: u32 = nz.iter().sum();
        let step = (total - nz[nz.len() - 1]) / 255;
        if step == 0 {
            ident(&mut tables[c]);
            continue;
        }
        let mut n = step / 2;
        for i in 0..256 {
            tables[c][i] = (n / step).min(255) as u8;
            n += h[c][i];
        }
    }
    lut(img, |c, v| tables[c][v as usize])
}
