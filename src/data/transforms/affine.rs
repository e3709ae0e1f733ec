//! Geometric warps as Pillow does them: an inverse affine map sampled at pixel centres with
//! nearest neighbour, and torchvision's inverse affine matrix (rotate, translate, scale, shear).

use image::RgbImage;

/// Pillow `Image.transform(AFFINE, NEAREST)`: output pixel (x, y) reads input
/// `m * (x + 0.5, y + 0.5)` truncated; outside the image -> `fill`.
pub fn affine_nearest(img: &RgbImage, m: [f64; 6], fill: u8) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let mut out = vec![fill; (w * h * 3) as usize];
    for y in 0..h {
        let yc = y as f64 + 0.5;
        for x in 0..w {
            let xc = x as f64 + 0.5;
            let xi = m[0] * xc + m[1] * yc + m[2];
            let yi = m[3] * xc + m[4] * yc + m[5];
            let (sx, sy) = (coord(xi), coord(yi));
            if sx < 0 || sx >= w || sy < 0 || sy >= h {
                continue;
            }
            let s = ((sy * w + sx) * 3) as usize;
            let d = ((y * w + x) * 3) as usize;
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_default()
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
    let (cx, cy) = (w / 2.0, h / 2.0);
    m[2] = m[0] * -cx + m[1] * -cy + cx;
    m[5] = m[3] * -cx + m[4] * -cy + cy;
    affine_nearest(img, m, fill)
}
