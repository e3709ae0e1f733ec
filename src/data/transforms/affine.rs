//! Geometric warps as Pillow does them: an inverse affine map sampled at pixel centres with
//! nearest neighbour, and torchvision's inverse affine matrix (rotate, translate, scale, shear).

use image::RgbImage;

/// Pillow `Image.transform(AFFINE, NEAREST)`: output pixel (x, y) reads input
/// `m * (x + 0.5, y + 0.5)` truncated; outside the image -> `fill`.
pub fn affine_nearest(img: &RgbImage, m: [f64; 6], fill: u8) -> RgbImage {
    affine_nearest_sized(img, m, img.width(), img.height(), fill)
}

/// `affine_nearest` into an `out_w x out_h` output (Pillow's `transform(size, AFFINE, ...)`).
pub fn affine_nearest_sized(
    img: &RgbImage,
    m: [f64; 6],
    out_w: u32,
    out_h: u32,
    fill: u8,
) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (ow, oh) = (out_w as i64, out_h as i64);
    let src = img.as_raw();
    let mut out = vec![fill; (ow * oh * 3) as usize];
    for y in 0..oh {
        let yc = y as f64 + 0.5;
        for x in 0..ow {
            let xc = x as f64 + 0.5;
            let xi = m[0] * xc + m[1] * yc + m[2];
            let yi = m[3] * xc + m[4] * yc + m[5];
            let (sx, sy) = (coord(xi), coord(yi));
            if sx < 0 || sx >= w || sy < 0 || sy >= h {
                continue;
            }
            let s = ((sy * w + sx) * 3) as usize;
            let d = ((y * ow + x) * 3) as usize;
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    RgbImage::from_raw(out_w, out_h, out).unwrap_or_default()
}

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
