//! Persistent identity traits of a synthetic face (what defines the person), drawn once per
//! identity from its own RNG.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub type Rgb = [u8; 3];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceShape {
    Oval,
    Round,
    Square,
    Heart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HairStyle {
    Bald,
    Buzz,
    Short,
    SidePart,
    Fringe,
    Long,
    Curly,
    Mohawk,
    Bun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FacialHair {
    None,
    Moustache,
    Goatee,
    Beard,
    Stubble,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glasses {
    None,
    Round,
    Rect,
    Sun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoseStyle {
    Triangle,
    Line,
    Button,
}

/// Everything that stays the same across one identity's images. Lengths are in face units
/// (the canvas is 100 units wide).
#[derive(Debug, Clone)]
pub struct IdentityTraits {
    pub skin: Rgb,
    pub shape: FaceShape,
    /// Half width / half height of the face.
    pub face_w: f32,
    pub face_h: f32,
    pub jaw: f32,
    pub ear_size: f32,
    pub eye_spacing: f32,
    pub eye_y: f32,
    pub eye_size: f32,
    pub eye_ratio: f32,
    pub iris: Rgb,
    pub brow_thick: f32,
    pub brow_angle: f32,
    pub brow_gap: f32,
    pub brow_len: f32,
    pub nose_len: f32,
    pub nose_w: f32,
    pub nose_style: NoseStyle,
    pub mouth_w: f32,
    pub mouth_y: f32,
    pub lip_thick: f32,
    pub lip: Rgb,
    pub hair: Rgb,
    pub hair_style: HairStyle,
    pub hair_volume: f32,
    pub part_side: f32,
    pub facial_hair: FacialHair,
    pub glasses: Glasses,
    pub glasses_color: Rgb,
    /// Moles: (x, y, radius) in face units.
    pub moles: Vec<(f32, f32, f32)>,
    /// Scar: from (x0, y0) to (x1, y1).
    pub scar: Option<[f32; 4]>,
    pub freckles: bool,
    pub blush: f32,
}

fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [0, 1, 2].map(|i| (a[i] as f32 + (b[i] as f32 - a[i] as f32) * t).round() as u8)
}

fn jitter(rng: &mut ChaCha8Rng, c: Rgb, amount: f32) -> Rgb {
    c.map(|v| (v as f32 + rng.random_range(-amount..=amount)).clamp(0.0, 255.0) as u8)
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f32)]) -> T {
    let total: f32 = items.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0.0..total);
    for (item, w) in items {
        if r < *w {
            return *item;
        }
        r -= w;
    }
    items[items.len() - 1].0
}

impl IdentityTraits {
    pub fn sample(rng: &mut ChaCha8Rng) -> IdentityTraits {
        let skin_t: f32 = rng.random();
        let skin = jitter(rng, lerp([250, 222, 196], [78, 50, 36], skin_t), 12.0);
        let shape = pick(
            rng,
            &[
                (FaceShape::Oval, 1.0),
                (FaceShape::Round, 1.0),
                (FaceShape::Square, 1.0),
                (FaceShape::Heart, 1.0),
            ],
        );
        let face_w = rng.random_range(22.0..31.0);
        let face_h = rng.random_range(29.0..37.0);
        let hair_palette: [Rgb; 9] = [
            [20, 16, 14],
            [60, 38, 24],
            [110, 72, 40],
            [190, 150, 90],
            [230, 205, 140],
            [150, 60, 30],
            [150, 150, 150],
            [235, 235, 230],
            [70, 50, 120],
        ];
        let hi = rng.random_range(0..hair_palette.len());
        let hair = jitter(rng, hair_palette[hi], 10.0);
        let iris_palette: [Rgb; 6] = [
            [70, 45, 25],
            [40, 25, 15],
            [60, 110, 170],
            [70, 130, 80],
            [120, 120, 125],
            [130, 100, 40],
        ];
        let iris = iris_palette[rng.random_range(0..iris_palette.len())];
        let hair_style = pick(
            rng,
            &[
                (HairStyle::Bald, 0.6),
                (HairStyle::Buzz, 1.0),
                (HairStyle::Short, 1.4),
                (HairStyle::SidePart, 1.2),
                (HairStyle::Fringe, 1.0),
                (HairStyle::Long, 1.4),
                (HairStyle::Curly, 1.0),
                (HairStyle::Mohawk, 0.4),
                (HairStyle::Bun, 0.6),
            ],
        );
        let facial_hair = pick(
            rng,
            &[
                (FacialHair::None, 3.0),
                (FacialHair::Moustache, 0.8),
                (FacialHair::Goatee, 0.7),
                (FacialHair::Beard, 0.9),
                (FacialHair::Stubble, 0.7),
            ],
        );
        let glasses = pick(
            rng,
            &[
                (Glasses::None, 3.0),
                (Glasses::Round, 0.8),
                (Glasses::Rect, 0.8),
                (Glasses::Sun, 0.4),
            ],
        );
        let glasses_palette: [Rgb; 5] = [
            [20, 20, 20],
            [120, 80, 40],
            [180, 180, 190],
            [150, 30, 30],
            [30, 60, 140],
        ];
        let glasses_color = glasses_palette[rng.random_range(0..glasses_palette.len())];
        let n_moles = pick(rng, &[(0usize, 2.0), (1, 1.2), (2, 0.5)]);
        let moles = (0..n_moles)
            .map(|_| {
                (
                    rng.random_range(-0.7f32..0.7) * face_w,
                    rng.random_range(-0.2f32..0.7) * face_h,
                    rng.random_range(0.8..1.8),
                )
            })
            .collect();
        let scar = if rng.random_bool(0.15) {
            let x = rng.random_range(-0.6f32..0.6) * face_w;
            let y = rng.random_range(-0.5f32..0.5) * face_h;
            let a: f32 = rng.random_range(0.0..std::f32::consts::PI);
            let l = rng.random_range(5.0..10.0);
            Some([x, y, x + a.cos() * l, y + a.sin() * l])
        } else {
            None
        };
        let lt = rng.random_range(0.3..0.7);
        let lip = jitter(rng, lerp(skin, [170, 60, 70], lt), 10.0);
        IdentityTraits {
            skin,
            shape,
            face_w,
            face_h,
            jaw: rng.random_range(0.55..0.95),
            ear_size: rng.random_range(4.0..7.5),
            eye_spacing: rng.random_range(8.5..14.0),
            eye_y: rng.random_range(-8.0..-1.0),
            eye_size: rng.random_range(3.0..5.5),
            eye_ratio: rng.random_range(0.45..0.85),
            iris,
            brow_thick: rng.random_range(1.0..3.8),
            brow_angle: rng.random_range(-0.35..0.35),
            brow_gap: rng.random_range(4.0..8.0),
            brow_len: rng.random_range(7.0..12.0),
            nose_len: rng.random_range(7.0..15.0),
            nose_w: rng.random_range(3.0..8.5),
            nose_style: pick(
                rng,
                &[
                    (NoseStyle::Triangle, 1.0),
                    (NoseStyle::Line, 1.0),
                    (NoseStyle::Button, 1.0),
                ],
            ),
            mouth_w: rng.random_range(7.0..17.0),
            mouth_y: rng.random_range(12.0..20.0),
            lip_thick: rng.random_range(1.0..4.0),
            lip,
            hair,
            hair_style,
            hair_volume: rng.random_range(0.8..1.3),
            part_side: if rng.random_bool(0.5) { 1.0 } else { -1.0 },
            facial_hair,
            glasses,
            glasses_color,
            moles,
            scar,
            freckles: rng.random_bool(0.15),
            blush: rng.random_range(0.0..0.5),
        }
    }
}
