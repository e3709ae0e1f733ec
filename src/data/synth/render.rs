//! Draws one synthetic face with tiny-skia: identity traits placed by a per-image pose, then
//! lighting, and the image-level nuisances (blur, noise) on the 8-bit result.

use super::traits::{FaceShape, FacialHair, Glasses, HairStyle, IdentityTraits, NoseStyle, Rgb};
use super::variation::Variation;
use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tiny_skia::{
    BlendMode, Color, FillRule, GradientStop, LineCap, LinearGradient, Paint, Path, PathBuilder,
    Pixmap, Point, Rect, SpreadMode, Stroke, Transform,
};

fn paint(c: Rgb) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(c[0], c[1], c[2], 255);
    p.anti_alias = true;
    p
}

fn paint_a(c: Rgb, a: u8) -> Paint<'static> {
    let mut p = paint(c);
    p.set_color_rgba8(c[0], c[1], c[2], a);
    p
}

fn shade(c: Rgb, f: f32) -> Rgb {
    c.map(|v| (v as f32 * f).clamp(0.0, 255.0) as u8)
}

fn oval(cx: f32, cy: f32, rx: f32, ry: f32) -> Option<Path> {
    Rect::from_xywh(cx - rx, cy - ry, 2.0 * rx.max(0.01), 2.0 * ry.max(0.01))
        .and_then(PathBuilder::from_oval)
}

struct Canvas {
    pm: Pixmap,
}

impl Canvas {
    fn fill(&mut self, path: Option<Path>, p: &Paint, t: Transform) {
        if let Some(path) = path {
            self.pm.fill_path(&path, p, FillRule::Winding, t, None);
        }
    }
    fn stroke(&mut self, path: Option<Path>, p: &Paint, width: f32, t: Transform) {
        if let Some(path) = path {
            let s = Stroke {
                width,
                line_cap: LineCap::Round,
                ..Stroke::default()
            };
            self.pm.stroke_path(&path, p, &s, t, None);
        }
    }
}

fn line(x0: f32, y0: f32, x1: f32, y1: f32) -> Option<Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(x0, y0);
    pb.line_to(x1, y1);
    pb.finish()
}

fn quad(x0: f32, y0: f32, cx: f32, cy: f32, x1: f32, y1: f32) -> Option<Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(x0, y0);
    pb.quad_to(cx, cy, x1, y1);
    pb.finish()
}

/// The face outline in face units (origin at the face centre, y down).
fn face_path(t: &IdentityTraits) -> Option<Path> {
    let (w, h) = (t.face_w, t.face_h);
    match t.shape {
        FaceShape::Oval => oval(0.0, 0.0, w, h),
        FaceShape::Round => oval(0.0, 2.0, w * 1.05, h * 0.92),
        FaceShape::Square | FaceShape::Heart => {
            let chin = if t.shape == FaceShape::Heart {
                0.25
            } else {
                t.jaw
            };
            let mut pb = PathBuilder::new();
            pb.move_to(0.0, -h);
            pb.cubic_to(w * 0.75, -h, w, -h * 0.7, w, -h * 0.1);
            pb.cubic_to(w, h * 0.5, w * chin, h, 0.0, h);
            pb.cubic_to(-w * chin, h, -w, h * 0.5, -w, -h * 0.1);
            pb.cubic_to(-w, -h * 0.7, -w * 0.75, -h, 0.0, -h);
            pb.close();
            pb.finish()
        }
    }
}

fn hair_back(c: &mut Canvas, t: &IdentityTraits, tf: Transform) {
    let p = paint(t.hair);
    let (w, h, v) = (t.face_w, t.face_h, t.hair_volume);
    match t.hair_style {
        HairStyle::Long => {
            let mut pb = PathBuilder::new();
            pb.move_to(-w * 1.2 * v, h * 0.9);
            pb.line_to(-w * 1.15 * v, -h * 0.4);
            pb.cubic_to(
                -w * 1.1,
                -h * 1.35 * v,
                w * 1.1,
                -h * 1.35 * v,
                w * 1.15 * v,
                -h * 0.4,
            );
            pb.line_to(w * 1.2 * v, h * 0.9);
            pb.close();
            c.fill(pb.finish(), &p, tf);
        }
        HairStyle::Curly => {
            for i in 0..14 {
                let a = std::f32::consts::PI * (1.0 + i as f32 / 13.0);
                let r = 6.0 * v;
                c.fill(
                    PathBuilder::from_circle(a.cos() * w * 1.05, a.sin() * h * 1.0 - 2.0, r),
                    &p,
                    tf,
                );
            }
        }
        HairStyle::Bun => c.fill(PathBuilder::from_circle(0.0, -h * 1.15, 8.0 * v), &p, tf),
        _ => {}
    }
}

fn hair_front(c: &mut Canvas, t: &IdentityTraits, tf: Transform) {
    let p = paint(t.hair);
    let (w, h, v) = (t.face_w, t.face_h, t.hair_volume);
    let cap = |depth: f32, lift: f32| {
        let mut pb = PathBuilder::new();
        pb.move_to(-w * 1.02, -h * depth);
        pb.cubic_to(
            -w * 1.1,
            -h * (1.2 + lift) * v,
            w * 1.1,
            -h * (1.2 + lift) * v,
            w * 1.02,
            -h * depth,
        );
        pb.quad_to(0.0, -h * (depth + 0.35), -w * 1.02, -h * depth);
        pb.close();
        pb.finish()
    };
    match t.hair_style {
        HairStyle::Bald => {}
        HairStyle::Buzz => c.fill(cap(0.55, -0.1), &paint_a(t.hair, 170), tf),
        HairStyle::Short | HairStyle::Curly | HairStyle::Bun => c.fill(cap(0.45, 0.0), &p, tf),
        HairStyle::Long => c.fill(cap(0.35, 0.05), &p, tf),
        HairStyle::SidePart => {
            c.fill(cap(0.45, 0.05), &p, tf);
            let s = t.part_side;
            let mut pb = PathBuilder::new();
            pb.move_to(s * w * 0.2, -h * 1.05);
            pb.quad_to(-s * w * 0.6, -h * 0.8, -s * w * 1.05, -h * 0.25);
            pb.line_to(-s * w * 1.05, -h * 0.6);
            pb.close();
            c.fill(pb.finish(), &p, tf);
        }
        HairStyle::Fringe => {
            c.fill(cap(0.45, 0.0), &p, tf);
            let mut pb = PathBuilder::new();
            pb.move_to(-w * 0.95, -h * 0.5);
            pb.line_to(w * 0.95, -h * 0.5);
            pb.line_to(w * 0.8, -h * 0.3);
            pb.line_to(-w * 0.8, -h * 0.3);
            pb.close();
            c.fill(pb.finish(), &p, tf);
        }
        HairStyle::Mohawk => {
            let mut pb = PathBuilder::new();
            pb.move_to(-w * 0.2, -h * 0.6);
            pb.line_to(0.0, -h * 1.45 * v);
            pb.line_to(w * 0.2, -h * 0.6);
            pb.close();
            c.fill(pb.finish(), &p, tf);
        }
    }
}

fn eyes(c: &mut Canvas, t: &IdentityTraits, v: &Variation, tf: Transform) {
    let open = v.eye_open.clamp(0.1, 1.1);
    for side in [-1.0f32, 1.0] {
        let (ex, ey) = (side * t.eye_spacing, t.eye_y);
        let (rx, ry) = (t.eye_size * 1.3, t.eye_size * t.eye_ratio * open);
        c.fill(oval(ex, ey, rx, ry), &paint([245, 245, 240]), tf);
        let ir = t.eye_size * 0.62;
        let (gx, gy) = (ex + v.gaze[0] * rx * 0.5, ey + v.gaze[1] * ry * 0.4);
        if open > 0.3 {
            c.fill(
                PathBuilder::from_circle(gx, gy, ir.min(ry * 1.1)),
                &paint(t.iris),
                tf,
            );
            c.fill(
                PathBuilder::from_circle(gx, gy, ir * 0.45),
                &paint([10, 10, 10]),
                tf,
            );
        }
        c.stroke(oval(ex, ey, rx, ry), &paint(shade(t.skin, 0.45)), 0.8, tf);
        // brow
        let by = ey - t.brow_gap - v.brow_raise;
        let (x_in, x_out) = (ex - side * t.brow_len * 0.45, ex + side * t.brow_len * 0.55);
        let tilt = t.brow_angle * t.brow_len;
        c.stroke(
            quad(x_in, by + tilt * 0.5, ex, by - 1.5, x_out, by - tilt * 0.5),
            &paint(shade(t.hair, 0.75)),
            t.brow_thick,
            tf,
        );
    }
}

fn nose_mouth(c: &mut Canvas, t: &IdentityTraits, v: &Variation, tf: Transform) {
    let dark = paint(shade(t.skin, 0.62));
    let ny = t.eye_y + 2.0;
    match t.nose_style {
        NoseStyle::Triangle => {
            let mut pb = PathBuilder::new();
            pb.move_to(0.0, ny);
            pb.line_to(t.nose_w * 0.5, ny + t.nose_len);
            pb.line_to(-t.nose_w * 0.5, ny + t.nose_len);
            pb.close();
            c.fill(pb.finish(), &paint(shade(t.skin, 0.85)), tf);
            c.stroke(
                line(0.0, ny, t.nose_w * 0.5, ny + t.nose_len),
                &dark,
                0.9,
                tf,
            );
        }
        NoseStyle::Line => {
            c.stroke(
                quad(
                    0.0,
                    ny,
                    t.nose_w * 0.3,
                    ny + t.nose_len * 0.8,
                    -t.nose_w * 0.4,
                    ny + t.nose_len,
                ),
                &dark,
                1.3,
                tf,
            );
        }
        NoseStyle::Button => {
            c.fill(
                oval(
                    0.0,
                    ny + t.nose_len * 0.85,
                    t.nose_w * 0.55,
                    t.nose_w * 0.35,
                ),
                &paint(shade(t.skin, 0.8)),
                tf,
            );
        }
    }
    for s in [-1.0f32, 1.0] {
        c.fill(
            PathBuilder::from_circle(s * t.nose_w * 0.3, ny + t.nose_len, 0.9),
            &paint(shade(t.skin, 0.4)),
            tf,
        );
    }
    let my = t.mouth_y;
    let mw = t.mouth_w * 0.5;
    let curve = v.smile * 4.0;
    if v.mouth_open > 0.0 {
        let mut pb = PathBuilder::new();
        pb.move_to(-mw, my);
        pb.quad_to(0.0, my + curve + v.mouth_open * 6.0, mw, my);
        pb.quad_to(0.0, my - 1.0, -mw, my);
        pb.close();
        c.fill(pb.finish(), &paint([60, 20, 25]), tf);
    }
    c.stroke(
        quad(-mw, my - curve * 0.3, 0.0, my + curve, mw, my - curve * 0.3),
        &paint(t.lip),
        t.lip_thick,
        tf,
    );
}

fn facial_hair(c: &mut Canvas, t: &IdentityTraits, tf: Transform, rng: &mut ChaCha8Rng) {
    let p = paint(shade(t.hair, 0.9));
    let my = t.mouth_y;
    match t.facial_hair {
        FacialHair::None => {}
        FacialHair::Moustache => c.stroke(
            quad(
                -t.mouth_w * 0.55,
                my - 1.0,
                0.0,
                my - 5.0,
                t.mouth_w * 0.55,
                my - 1.0,
            ),
            &p,
            2.8,
            tf,
        ),
        FacialHair::Goatee => c.fill(oval(0.0, my + 6.0, 4.5, 5.0), &p, tf),
        FacialHair::Beard => {
            let (w, h) = (t.face_w, t.face_h);
            let mut pb = PathBuilder::new();
            pb.move_to(-w * 0.98, 0.0);
            pb.cubic_to(-w * 0.9, h * 1.15, w * 0.9, h * 1.15, w * 0.98, 0.0);
            pb.line_to(w * 0.75, 0.0);
            pb.cubic_to(w * 0.6, my + 2.0, -w * 0.6, my + 2.0, -w * 0.75, 0.0);
            pb.close();
            c.fill(pb.finish(), &p, tf);
        }
        FacialHair::Stubble => {
            let pa = paint_a(shade(t.hair, 0.8), 150);
            for _ in 0..40 {
                let x = rng.random_range(-t.face_w * 0.7..t.face_w * 0.7);
                let y = rng.random_range(my - 4.0..t.face_h * 0.9);
                c.fill(PathBuilder::from_circle(x, y, 0.7), &pa, tf);
            }
        }
    }
}

fn glasses(c: &mut Canvas, t: &IdentityTraits, tf: Transform) {
    if t.glasses == Glasses::None {
        return;
    }
    let p = paint(t.glasses_color);
    let r = t.eye_size * 1.9;
    for s in [-1.0f32, 1.0] {
        let (ex, ey) = (s * t.eye_spacing, t.eye_y);
        let shape = match t.glasses {
            Glasses::Rect => {
                Rect::from_xywh(ex - r, ey - r * 0.7, 2.0 * r, 1.4 * r).map(PathBuilder::from_rect)
            }
            _ => PathBuilder::from_circle(ex, ey, r),
        };
        if t.glasses == Glasses::Sun {
            c.fill(shape.clone(), &paint_a([15, 15, 20], 235), tf);
        }
        c.stroke(shape, &p, 1.3, tf);
        c.stroke(line(ex + s * r, ey, s * t.face_w, ey - 1.0), &p, 1.2, tf);
    }
    c.stroke(
        line(-t.eye_spacing + r, t.eye_y, t.eye_spacing - r, t.eye_y),
        &p,
        1.2,
        tf,
    );
}

fn marks(c: &mut Canvas, t: &IdentityTraits, tf: Transform, rng: &mut ChaCha8Rng) {
    if t.blush > 0.1 {
        let a = (t.blush * 120.0) as u8;
        for s in [-1.0f32, 1.0] {
            c.fill(
                oval(s * t.face_w * 0.55, t.mouth_y - 6.0, 5.0, 3.0),
                &paint_a([220, 90, 90], a),
                tf,
            );
        }
    }
    if t.freckles {
        let pa = paint_a(shade(t.skin, 0.6), 200);
        for _ in 0..14 {
            let x = rng.random_range(-t.face_w * 0.6..t.face_w * 0.6);
            let y = rng.random_range(t.eye_y + 3.0..t.eye_y + 10.0);
            c.fill(PathBuilder::from_circle(x, y, 0.6), &pa, tf);
        }
    }
    for &(x, y, r) in &t.moles {
        c.fill(PathBuilder::from_circle(x, y, r), &paint([55, 35, 25]), tf);
    }
    if let Some([x0, y0, x1, y1]) = t.scar {
        c.stroke(line(x0, y0, x1, y1), &paint(shade(t.skin, 0.55)), 1.2, tf);
    }
}

fn background(c: &mut Canvas, v: &Variation, px: Transform) {
    let a = v.bg_angle.to_radians();
    let (dx, dy) = (a.cos() * 50.0, a.sin() * 50.0);
    let col = |c: Rgb| Color::from_rgba8(c[0], c[1], c[2], 255);
    let shader = LinearGradient::new(
        Point::from_xy(50.0 - dx, 50.0 - dy),
        Point::from_xy(50.0 + dx, 50.0 + dy),
        vec![
            GradientStop::new(0.0, col(v.bg[0])),
            GradientStop::new(1.0, col(v.bg[1])),
        ],
        SpreadMode::Pad,
        Transform::identity(),
    );
    let mut p = Paint::default();
    if let Some(s) = shader {
        p.shader = s;
    } else {
        p.set_color(col(v.bg[0]));
    }
    if let Some(r) = Rect::from_xywh(0.0, 0.0, 100.0, 100.0) {
        c.pm.fill_rect(r, &p, px, None);
    }
    for k in &v.clutter {
        let tf = px.pre_translate(k.x, k.y).pre_rotate(k.angle);
        let p = paint(k.color);
        match k.kind {
            0 => {
                if let Some(r) = Rect::from_xywh(-k.w / 2.0, -k.h / 2.0, k.w, k.h) {
                    c.fill(Some(PathBuilder::from_rect(r)), &p, tf)
                }
            }
            1 => c.fill(oval(0.0, 0.0, k.w / 2.0, k.h / 2.0), &p, tf),
            _ => c.stroke(line(-k.w, 0.0, k.w, 0.0), &p, 1.0 + k.h / 10.0, tf),
        }
    }
}

fn lighting(c: &mut Canvas, v: &Variation, px: Transform) {
    let a = v.light_angle.to_radians();
    let (dx, dy) = (a.cos() * 40.0, a.sin() * 40.0);
    let t = v.light_tint;
    let dark = shade(t, 1.0 - v.light_strength);
    let shader = LinearGradient::new(
        Point::from_xy(50.0 - dx, 50.0 - dy),
        Point::from_xy(50.0 + dx, 50.0 + dy),
        vec![
            GradientStop::new(0.0, Color::from_rgba8(t[0], t[1], t[2], 255)),
            GradientStop::new(1.0, Color::from_rgba8(dark[0], dark[1], dark[2], 255)),
        ],
        SpreadMode::Pad,
        Transform::identity(),
    );
    if let (Some(s), Some(r)) = (shader, Rect::from_xywh(0.0, 0.0, 100.0, 100.0)) {
        let p = Paint {
            shader: s,
            blend_mode: BlendMode::Multiply,
            anti_alias: true,
            ..Paint::default()
        };
        c.pm.fill_rect(r, &p, px, None);
    }
}

/// Renders one image of the identity `t` under variation `v` (`rng` draws the small details:
/// stubble, freckles, noise).
pub fn render(t: &IdentityTraits, v: &Variation, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let size = size.max(8);
    let Some(pm) = Pixmap::new(size, size) else {
        return RgbImage::new(size, size);
    };
    let mut c = Canvas { pm };
    let unit = size as f32 / 100.0;
    let px = Transform::from_scale(unit, unit);
    background(&mut c, v, px);
    let yaw = v.yaw;
    let squeeze = 1.0 - 0.35 * yaw.abs();
    let head = px
        .pre_translate(50.0 + v.shift[0], 52.0 + v.shift[1])
        .pre_rotate(v.rotation)
        .pre_scale(v.scale * 1.05, v.scale * 1.05);
    // shoulders and neck (do not turn with the head's yaw)
    c.fill(
        oval(0.0, t.face_h * 1.9, t.face_w * 2.2, t.face_h * 0.9),
        &paint(v.clothes),
        head,
    );
    if let Some(r) = Rect::from_xywh(
        -t.face_w * 0.45,
        t.face_h * 0.5,
        t.face_w * 0.9,
        t.face_h * 0.9,
    ) {
        c.fill(
            Some(PathBuilder::from_rect(r)),
            &paint(shade(t.skin, 0.85)),
            head,
        );
    }
    let face = head.pre_scale(squeeze, 1.0);
    let features = face.pre_translate(yaw * t.face_w * 0.45, 0.0);
    let back = face.pre_translate(-yaw * t.face_w * 0.15, 0.0);
    hair_back(&mut c, t, back);
    for s in [-1.0f32, 1.0] {
        let ex = s * (t.face_w - 1.0) - yaw * t.face_w * 0.3;
        c.fill(
            oval(ex, t.eye_y + 4.0, t.ear_size * 0.7, t.ear_size),
            &paint(shade(t.skin, 0.92)),
            face,
        );
    }
    c.fill(face_path(t), &paint(t.skin), face);
    // cheek shading on the side turned away
    if let Some(path) = face_path(t) {
        let a = (yaw.abs() * 120.0) as u8;
        let side = if yaw > 0.0 { -1.0 } else { 1.0 };
        let dark = shade(t.skin, 0.7);
        let shader = LinearGradient::new(
            Point::from_xy(side * t.face_w, 0.0),
            Point::from_xy(0.0, 0.0),
            vec![
                GradientStop::new(0.0, Color::from_rgba8(dark[0], dark[1], dark[2], a)),
                GradientStop::new(1.0, Color::from_rgba8(dark[0], dark[1], dark[2], 0)),
            ],
            SpreadMode::Pad,
            Transform::identity(),
        );
        if let Some(s) = shader {
            let p = Paint {
                shader: s,
                anti_alias: true,
                ..Paint::default()
            };
            c.pm.fill_path(&path, &p, FillRule::Winding, face, None);
        }
    }
    marks(&mut c, t, features, rng);
    facial_hair(&mut c, t, features, rng);
    eyes(&mut c, t, v, features);
    nose_mouth(&mut c, t, v, features);
    hair_front(&mut c, t, face);
    glasses(&mut c, t, features);
    if let Some(o) = &v.occluder {
        let tf = head.pre_translate(o.x, o.y).pre_rotate(o.angle);
        let p = paint(o.color);
        if o.kind == 0 {
            c.fill(oval(0.0, 0.0, o.w, o.h), &p, tf);
            for f in 0..4 {
                let fx = -o.w * 0.6 + f as f32 * o.w * 0.4;
                c.fill(oval(fx, -o.h, o.w * 0.16, o.h * 0.7), &p, tf);
            }
        } else if let Some(r) = Rect::from_xywh(-o.w, -o.h * 0.5, 2.0 * o.w, o.h) {
            c.fill(Some(PathBuilder::from_rect(r)), &p, tf);
        }
    }
    lighting(&mut c, v, px);

    let rgba = c.pm.take();
    let rgb: Vec<u8> = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let mut img = RgbImage::from_raw(size, size, rgb).unwrap_or_else(|| RgbImage::new(size, size));
    if v.blur > 0.05 {
        img = image::imageops::blur(&img, v.blur * size as f32 / 64.0);
    }
    if v.noise > 0.0 {
        if let Ok(n) = Normal::new(0.0f32, v.noise) {
            for b in img.iter_mut() {
                *b = (*b as f32 + n.sample(rng)).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    img
}
