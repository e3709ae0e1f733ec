//! torchvision's ops on PIL images, pixel for pixel: rotation, affine and perspective warps
//! (Pillow's nearest-neighbour affine engine and bilinear generic transform) and the colour
//! ops of ColorJitter and RandAugment. Every case of tests/fixtures/pil_ops/cases.json, written
//! by tests/fixtures/gen_pil_ops.py from tests/fixtures/reference/transform_input.png, must agree
//! bit for bit, output size included.

mod common;

use common::reference_input;
use runner::data::transforms::affine::{affine_nearest, inverse_affine_matrix, rotate_with};
use runner::data::transforms::enhance;
use runner::data::transforms::perspective::{perspective_coeffs, warp_perspective};
use serde::Deserialize;

const FIXTURES: &str = "tests/fixtures/pil_ops";

#[derive(Debug, Deserialize)]
struct Manifest {
    fill: u8,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    kind: String,
    #[serde(default)]
    angle: f64,
    #[serde(default)]
    center: Option<[f64; 2]>,
    #[serde(default)]
    expand: bool,
    #[serde(default)]
    translate: [f64; 2],
    #[serde(default)]
    scale: f64,
    #[serde(default)]
    shear: [f64; 2],
    /// perspective: the corners in the input and where they go in the output
    #[serde(default)]
    start: [[f64; 2]; 4],
    #[serde(default)]
    end: [[f64; 2]; 4],
    /// colour ops: the factor, bits or threshold
    #[serde(default)]
    value: f64,
}

#[test]
fn geometric_and_colour_ops_match_torchvision_pixel_for_pixel() {
    let img = reference_input();
    let (w, h) = (img.width() as f64, img.height() as f64);
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/cases.json")).expect("cases.json"),
    )
    .expect("manifest");
    assert!(manifest.cases.len() >= 28);
    for c in &manifest.cases {
        let ours = match c.kind.as_str() {
            "rotate" => rotate_with(&img, c.angle, c.center, c.expand, manifest.fill),
            "affine" => {
                // torchvision's F.affine on a PIL image: centre (w/2, h/2) unless given
                let m = inverse_affine_matrix(
                    c.center.unwrap_or([w * 0.5, h * 0.5]),
                    c.angle,
                    c.translate,
                    c.scale,
                    c.shear,
                );
                affine_nearest(&img, m, manifest.fill)
            }
            "perspective" => {
                let k = perspective_coeffs(c.start, c.end).expect("solvable");
                warp_perspective(&img, k, manifest.fill)
            }
            "brightness" => enhance::brightness(&img, c.value),
            "contrast" => enhance::contrast(&img, c.value),
            "saturation" => enhance::saturation(&img, c.value),
            "sharpness" => enhance::sharpness(&img, c.value),
            "hue" => enhance::hue(&img, c.value),
            "posterize" => enhance::posterize(&img, c.value as u32),
            "solarize" => enhance::solarize(&img, c.value),
            "autocontrast" => enhance::autocontrast(&img),
            "equalize" => enhance::equalize(&img),
            other => panic!("unknown case kind {other}"),
        };
        let want = image::open(format!("{FIXTURES}/{}.png", c.name))
            .expect("fixture png")
            .to_rgb8();
        assert_eq!(ours.dimensions(), want.dimensions(), "{}: size", c.name);
        let differing = ours
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{}: {differing} channel values differ",
            c.name
        );
    }
}
