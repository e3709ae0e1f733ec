//! Geometric warps as Pillow does them: an inverse affine map sampled at pixel centres with
//! nearest neighbour, and torchvision's inverse affine matrix (rotate, translate, scale, shear).

use image::RgbImage;

/// Pillow `Image.transform(AFFINE, NEAREST)`: output pixel (x, y) reads input
/// `m * (x + 0.5, y + 0.5)` rounded down; outside the image -> `fill`.
pub fn affine_nearest(img: &RgbImage, m: [f64; 6], fill: u8) -> RgbImage {
    affine_nearest_sized(img, m, img.width(), img.height(), fill)
}

/// `affine_nearest` into an `out_w x out_h` output (Pillow's `transform(size, AFFINE, ...)`),
/// with Pillow's own arithmetic (`ImagingTransformAffine`), so the same pixels: a pure scale
/// steps in f64 from the first pixel centre; any other map, when its corners are within
/// +-32768, steps in 16.16 fixed point (weights rounded to 1/65536); else it steps in f64.
pub fn affine_nearest_sized(
    img: &RgbImage,
    m: [f64; 6],
    out_w: u32,
    out_h: u32,
    fill: u8,
) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let src = img.as_raw();
    let mut out = vec![fill; ow * oh * 3];
    let mut put = |x: usize, y: usize, sx: i64, sy: i64| {
        if (0..w).contains(&sx) && (0..h).contains(&sy) {
            let s = ((sy * w + sx) * 3) as usize;
            let d = (y * ow + x) * 3;
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    };
    let fits = |x: f64, y: f64| {
        (x * m[0] + y * m[1] + m[2]).abs() < 32768.0 && (x * m[3] + y * m[4] + m[5]).abs() < 32768.0
    };
    let (fw, fh) = (ow as f64, oh as f64);
    if m[1] == 0.0 && m[3] == 0.0 {
        // ImagingScaleAffine
        let mut xs = Vec::with_capacity(ow);
        let mut xo = m[2] + m[0] * 0.5;
        for _ in 0..ow {
            xs.push(coord(xo));
            xo += m[0];
        }
        let mut yo = m[5] + m[4] * 0.5;
        for y in 0..oh {
            let sy = coord(yo);
            for (x, &sx) in xs.iter().enumerate() {
                put(x, y, sx, sy);
            }
            yo += m[4];
        }
    } else if fits(0.0, 0.0) && fits(fw, fh) && fits(0.0, fh) && fits(fw, 0.0) {
        // affine_fixed: 16.16 fixed point; `>> 16` rounds down, negatives included
        let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i64;
        let (a0, a1, a3, a4) = (fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4]));
        let mut a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
        let mut a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
        for y in 0..oh {
            let (mut xx, mut yy) = (a2, a5);
            for x in 0..ow {
                put(x, y, xx >> 16, yy >> 16);
                xx += a0;
                yy += a3;
            }
            a2 += a1;
            a5 += a4;
        }
    } else {
        let mut xo = m[2] + m[1] * 0.5 + m[0] * 0.5;
        let mut yo = m[5] + m[4] * 0.5 + m[3] * 0.5;
        for y in 0..oh {
            let (mut xx, mut yy) = (xo, yo);
            for x in 0..ow {
                put(x, y, coord(xx), coord(yy));
                xx += m[0];
                yy += m[3];
            }
            xo += m[1];
            yo += m[4];
        }
    }
    RgbImage::from_raw(out_w, out_h, out).unwrap_or_default()
}

/// Pillow's `COORD`: -1 for any negative coordinate, else truncated.
#[inline]
fn coord(v: f64) -> i64 {
    if v < 0.0 {
        -1
    } else {
        v as i64
    }
}

/// torchvision `_get_inverse_affine_matrix` (angle and shear in degrees).
pub fn inverse_affine_matrix(
    center: [f64; 2],
    angle: f64,
    translate: [f64; 2],
    scale: f64,
    shear: [f64; 2],
) -> [f64; 6] {
    let rot = angle.to_radians();
    let sx = shear[0].to_radians();
    let sy = shear[1].to_radians();
    let [cx, cy] = center;
    let [tx, ty] = translate;
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0].map(|v| v / scale);
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    m
}

/// Pillow `Image.rotate(angle)` (counter-clockwise degrees, about the centre, same size).
pub fn rotate(img: &RgbImage, angle: f64, fill: u8) -> RgbImage {
    rotate_with(img, angle, None, false, fill)
}

/// Pillow `Image.rotate(angle, expand=expand, center=center)`, what torchvision's `rotate`
/// calls for a PIL image: counter-clockwise degrees about `center` (`[x, y]` in pixels from
/// the top-left corner; the image centre when `None`). With `expand` the output is
/// `ceil(max) - floor(min)` of the rotated corners on each axis, re-centred as if the rotation
/// were about the centre (as Pillow and torchvision document, `expand` assumes it is).
pub fn rotate_with(
    img: &RgbImage,
    angle: f64,
    center: Option<[f64; 2]>,
    expand: bool,
    fill: u8,
) -> RgbImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let a = -(angle % 360.0).to_radians();
    let r15 = |v: f64| (v * 1e15).round() / 1e15;
    let mut m = [
        r15(a.cos()),
        r15(a.sin()),
        0.0,
        r15(-a.sin()),
        r15(a.cos()),
        0.0,
    ];
    let [cx, cy] = center.unwrap_or([w / 2.0, h / 2.0]);
    m[2] = m[0] * -cx + m[1] * -cy + cx;
    m[5] = m[3] * -cx + m[4] * -cy + cy;
    if !expand {
        return affine_nearest(img, m, fill);
    }
    let tf =
        |m: &[f64; 6], x: f64, y: f64| (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)] {
        let (tx, ty) = tf(&m, x, y);
        x0 = x0.min(tx);
        x1 = x1.max(tx);
        y0 = y0.min(ty);
        y1 = y1.max(ty);
    }
    let nw = x1.ceil() - x0.floor();
    let nh = y1.ceil() - y0.floor();
    let (tx, ty) = tf(&m, -(nw - w) / 2.0, -(nh - h) / 2.0);
    m[2] = tx;
    m[5] = ty;
    affine_nearest_sized(img, m, nw.max(0.0) as u32, nh.max(0.0) as u32, fill)
}
