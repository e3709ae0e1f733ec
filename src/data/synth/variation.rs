//! Per-image variation (what does not define the person): pose, expression, lighting,
//! background and clutter, occlusion, blur, noise and JPEG quality, scaled by difficulty.

use super::traits::Rgb;
use crate::recipe::Difficulty;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A background object: kind (0 rect, 1 circle, 2 line), position, size, colour.
#[derive(Debug, Clone)]
pub struct Clutter {
    pub kind: u8,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub angle: f32,
    pub color: Rgb,
}

#[derive(Debug, Clone)]
pub struct Occluder {
    /// 0: hand-like ellipse in a skin colour, 1: a rectangle (an object, a scarf, a hat brim).
    pub kind: u8,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub angle: f32,
    pub color: Rgb,
}

#[derive(Debug, Clone)]
pub struct Variation {
    pub rotation: f32,
    pub shift: [f32; 2],
    pub scale: f32,
    /// -1..1, a yaw-like turn: the face squeezes, features slide sideways.
    pub yaw: f32,
    pub smile: f32,
    pub mouth_open: f32,
    pub eye_open: f32,
    pub brow_raise: f32,
    pub gaze: [f32; 2],
    pub light_angle: f32,
    pub light_strength: f32,
    pub light_tint: Rgb,
    pub bg: [Rgb; 2],
    pub bg_angle: f32,
    pub clothes: Rgb,
    pub clutter: Vec<Clutter>,
    pub occluder: Option<Occluder>,
    pub blur: f32,
    pub noise: f32,
    pub jpeg_quality: u8,
}

fn color(rng: &mut ChaCha8Rng) -> Rgb {
    [rng.random(), rng.random(), rng.random()]
}

/// The strength of the nuisance factors for a difficulty.
pub fn level(d: Difficulty) -> f32 {
    match d {
        Difficulty::Easy => 0.4,
        Difficulty::Medium => 1.0,
        Difficulty::Hard => 1.5,
    }
}

impl Variation {
    pub fn sample(rng: &mut ChaCha8Rng, difficulty: Difficulty) -> Variation {
        let k = level(difficulty);
        let sym = |rng: &mut ChaCha8Rng, a: f32| rng.random_range(-a..=a);
        let n_clutter = rng.random_range(0..=((6.0 * k) as usize).max(1));
        let clutter = (0..n_clutter)
            .map(|_| Clutter {
                kind: rng.random_range(0..3),
                x: rng.random_range(0.0..100.0),
                y: rng.random_range(0.0..100.0),
                w: rng.random_range(5.0..35.0),
                h: rng.random_range(5.0..35.0),
                angle: rng.random_range(0.0..180.0),
                color: color(rng),
            })
            .collect();
        let occluder = if rng.random_bool((0.3 * k as f64).min(0.6)) {
            let hand = rng.random_bool(0.5);
            Some(Occluder {
                kind: if hand { 0 } else { 1 },
                x: rng.random_range(-30.0..30.0),
                y: rng.random_range(-20.0..35.0),
                w: rng.random_range(8.0..14.0 + 8.0 * k),
                h: rng.random_range(6.0..10.0 + 8.0 * k),
                angle: rng.random_range(0.0..180.0),
                color: if hand {
                    let t: f32 = rng.random();
                    [0, 1, 2].map(|i| {
                        let (a, b) = ([245.0, 215.0, 190.0][i], [90.0, 60.0, 45.0][i]);
                        (a + (b - a) * t) as u8
                    })
                } else {
                    color(rng)
                },
            })
        } else {
            None
        };
        let bright: f32 = rng.random_range(0.75..1.0);
        let tint = [
            bright * rng.random_range(1.0 - 0.15 * k..=1.0),
            bright * rng.random_range(1.0 - 0.1 * k..=1.0),
            bright * rng.random_range(1.0 - 0.15 * k..=1.0),
        ];
        Variation {
            rotation: sym(rng, 14.0 * k),
            shift: [sym(rng, 7.0 * k), sym(rng, 6.0 * k)],
            scale: rng.random_range(1.0 - 0.12 * k..=1.0 + 0.08 * k),
            yaw: sym(rng, (0.45 * k).min(0.8)),
            smile: rng.random_range(-0.4..1.0),
            mouth_open: if rng.random_bool(0.3) {
                rng.random_range(0.2..1.0)
            } else {
                0.0
            },
            eye_open: if rng.random_bool(0.1) {
                0.15
            } else {
                rng.random_range(0.6..1.1)
            },
            brow_raise: rng.random_range(-1.5..2.5),
            gaze: [sym(rng, 0.3), sym(rng, 0.2)],
            light_angle: rng.random_range(0.0..360.0),
            light_strength: rng.random_range(0.05..(0.2 + 0.45 * k)),
            light_tint: tint.map(|v| (v.clamp(0.0, 1.0) * 255.0) as u8),
            bg: [color(rng), color(rng)],
            bg_angle: rng.random_range(0.0..360.0),
            clothes: color(rng),
            clutter,
            occluder,
            blur: if rng.random_bool(0.5) {
                rng.random_range(0.0..(0.3 + 0.8 * k))
            } else {
                0.0
            },
            noise: rng.random_range(0.0..(2.0 + 8.0 * k)),
            jpeg_quality: rng.random_range((85.0 - 30.0 * k) as u8..=95),
        }
    }
}
