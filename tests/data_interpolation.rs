//! `interpolation` and `max_size` against Pillow: every case of
//! tests/fixtures/resize_interp/cases.json (written by tests/fixtures/gen_resize_interp.py from
//! tests/fixtures/reference/transform_input.png) must agree bit for bit, on the uint8 image and
//! after `to_tensor` (`/ 255`).

mod common;

use common::reference_input;
use runner::data::transforms::random_resized_crop::resized_crop;
use runner::data::transforms::resize::{output_size, resize_with, vertical_first};
use runner::data::transforms::{build, sample_rng};
use runner::recipe::{Interpolation, SizeSpec, TransformSpec};
use serde::Deserialize;
use std::path::Path;

const FIXTURES: &str = "tests/fixtures/resize_interp";

#[derive(Debug, Deserialize)]
struct Manifest {
    pillow: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    group: String,
    name: String,
    op: String,
    size: SizeJson,
    #[serde(default)]
    max_size: Option<u32>,
    #[serde(default)]
    crop: Option<[i64; 4]>,
    interpolation: Interpolation,
    file: String,
    width: u32,
    height: u32,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum SizeJson {
    Int(u32),
    Pair([u32; 2]),
}

impl SizeJson {
    fn spec(self) -> SizeSpec {
        match self {
            SizeJson::Int(s) => SizeSpec::Square(s),
            SizeJson::Pair(p) => SizeSpec::HeightWidth(p),
        }
    }
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("cases.json")).expect("cases");
    let m: Manifest = serde_json::from_str(&text).expect("cases.json");
    assert!(
        m.pillow.starts_with("13."),
        "fixtures from Pillow {}",
        m.pillow
    );
    m
}

fn expected(case: &Case) -> image::RgbImage {
    let img = image::open(Path::new(FIXTURES).join(&case.file))
        .expect("fixture png")
        .to_rgb8();
    assert_eq!(img.dimensions(), (case.width, case.height), "{}", case.name);
    img
}

/// The recipe transform of a resize case, through serde as a recipe writes it.
fn resize_spec(case: &Case) -> TransformSpec {
    let mut v = serde_json::json!({
        "kind": "resize",
        "size": match case.size { SizeJson::Int(s) => serde_json::json!(s), SizeJson::Pair(p) => serde_json::json!(p) },
        "interpolation": case.interpolation.name(),
    });
    if let Some(m) = case.max_size {
        v["max_size"] = serde_json::json!(m);
    }
    serde_json::from_value(v).expect("resize spec")
}

/// The uint8 output of a case, and (for resize) the `to_tensor` output of the pipeline.
fn compute(case: &Case, img: &image::RgbImage) -> (image::RgbImage, Option<Vec<f32>>) {
    match case.op.as_str() {
        "resize" => {
            let (w, h) = output_size(img.width(), img.height(), case.size.spec(), case.max_size);
            let u8_out = resize_with(img, w, h, case.interpolation);
            let p = build(&[resize_spec(case), TransformSpec::ToTensor {}]).expect("build");
            let t = p
                .apply(img.clone(), &mut sample_rng(0, 0, 0))
                .expect("apply");
            assert_eq!(
                (t.c, t.h, t.w),
                (3, h as usize, w as usize),
                "{}",
                case.name
            );
            (u8_out, Some(t.data))
        }
        "resized_crop" => {
            let [top, left, h, w] = case.crop.expect("crop");
            let SizeJson::Pair([sh, sw]) = case.size else {
                panic!("{}: resized_crop takes [h, w]", case.name)
            };
            (
                resized_crop(img, (top, left, h, w), (sh, sw), case.interpolation),
                None,
            )
        }
        op => panic!("unknown op {op}"),
    }
}

/// Checks every case of `group`: bit-exact uint8, and the tensor equal to uint8 / 255.
fn check_group(group: &str) {
    let img = reference_input();
    let m = manifest();
    let cases: Vec<&Case> = m.cases.iter().filter(|c| c.group == group).collect();
    assert!(!cases.is_empty(), "no cases in group {group}");
    for case in cases {
        let want = expected(case);
        let (got, tensor) = compute(case, &img);
        assert_eq!(
            got.dimensions(),
            want.dimensions(),
            "{}: output size",
            case.name
        );
        let diff = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        let max = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert_eq!(
            diff,
            0,
            "{}: {diff} of {} bytes differ from Pillow (max {max})",
            case.name,
            want.as_raw().len()
        );
        if let Some(t) = tensor {
            // CHW, v / 255 in f32
            let (w, h) = want.dimensions();
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        let v = want.get_pixel(x, y)[c] as f32 / 255.0;
                        let i = (c * h as usize + y as usize) * w as usize + x as usize;
                        assert_eq!(t[i].to_bits(), v.to_bits(), "{} at {c},{y},{x}", case.name);
                    }
                }
            }
        }
        eprintln!("{}: exact", case.name);
    }
}

#[test]
fn resize_downscale_nearest_bicubic_lanczos_box_hamming_match_pillow() {
    check_group("down");
}

#[test]
fn resize_upscale_nearest_bicubic_lanczos_match_pillow() {
    check_group("up");
}

#[test]
fn resize_size_pair_matches_pillow() {
    check_group("pair");
}

#[test]
fn resize_max_size_matches_torchvision() {
    check_group("max_size");
}

#[test]
fn resized_crop_matches_pillow() {
    check_group("crop");
}

#[test]
fn resize_pass_order_matches_pillow_13() {
    // vertical pass first when the height shrinks by more than twice the width's pixels
    assert!(vertical_first(97, 83, 90, 20));
    assert!(!vertical_first(97, 83, 56, 48));
    assert!(
        !vertical_first(50, 50, 45, 40),
        "a tie keeps the horizontal pass first"
    );
    assert!(vertical_first(50, 50, 46, 40));
    assert!(
        !vertical_first(9, 120, 27, 241),
        "never when the height grows"
    );
    check_group("order");
}

#[test]
fn fused_path_follows_pillows_pass_order() {
    // The fused RandomResizedCrop (bilinear) on the whole image resized to 20x90, where
    // Pillow 13 runs the vertical pass first, against Pillow.
    let img = reference_input();
    let m = manifest();
    let case = m
        .cases
        .iter()
        .find(|c| c.name == "resize_20x90_bilinear")
        .expect("case");
    let want = expected(case);
    let r = 97.0 / 83.0;
    let p = build(&[
        TransformSpec::RandomResizedCrop {
            size: SizeSpec::HeightWidth([20, 90]),
            scale: [1.0, 1.0],
            ratio: [r, r],
            interpolation: Interpolation::Bilinear,
            antialias: true,
        },
        TransformSpec::HorizontalFlip { p: 0.0 },
        TransformSpec::ToTensor {},
    ])
    .expect("build");
    assert!(p.is_fused());
    let wanted: Vec<f32> = (0..3)
        .flat_map(|c| want.pixels().map(move |p| p[c] as f32 / 255.0))
        .collect();
    let fused = p
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .expect("fused");
    assert_eq!(fused.data, wanted, "fused");
    let steps = p.apply_steps(img, &mut sample_rng(0, 0, 0)).expect("steps");
    assert_eq!(steps.data, wanted, "steps");
}

#[test]
fn max_size_output_sizes_follow_torchvision() {
    // 97x83: Resize(48) -> 56x48; max_size 50 caps the longer side: int(50 * 48 / 56) = 42
    assert_eq!(output_size(97, 83, SizeSpec::Square(48), None), (56, 48));
    assert_eq!(
        output_size(97, 83, SizeSpec::Square(48), Some(50)),
        (50, 42)
    );
    assert_eq!(
        output_size(97, 83, SizeSpec::Square(48), Some(56)),
        (56, 48)
    );
    // portrait: the width is the shorter side
    assert_eq!(
        output_size(83, 97, SizeSpec::Square(64), Some(70)),
        (60, 70)
    );
    // a max_size the image stays under changes nothing
    assert_eq!(
        output_size(100, 100, SizeSpec::Square(32), Some(33)),
        (32, 32)
    );
    // int(64 * 300 / 100) = 192 > 100 -> (int(100 * 64 / 192), 100) = (33, 100)
    assert_eq!(
        output_size(300, 100, SizeSpec::Square(64), Some(100)),
        (100, 33)
    );
}

#[test]
fn random_resized_crop_uses_its_interpolation_and_skips_the_fused_path() {
    let img = reference_input();
    let m = manifest();
    // scale [1, 1] and the image's own ratio: the crop is the whole image, so
    // RandomResizedCrop(64, bicubic) is Resize([64, 64], bicubic).
    let case = m
        .cases
        .iter()
        .find(|c| c.name == "resize_64x64_bicubic")
        .expect("case");
    let want = expected(case);
    let r = 97.0 / 83.0;
    let rrc = |interpolation| TransformSpec::RandomResizedCrop {
        size: SizeSpec::Square(64),
        scale: [1.0, 1.0],
        ratio: [r, r],
        interpolation,
        antialias: true,
    };
    let specs = |interpolation| {
        vec![
            rrc(interpolation),
            TransformSpec::HorizontalFlip { p: 0.0 },
            TransformSpec::ToTensor {},
        ]
    };
    let bicubic = build(&specs(Interpolation::Bicubic)).expect("build");
    assert!(!bicubic.is_fused(), "the fused path is bilinear only");
    assert!(bicubic.fused_shape().is_none());
    let t = bicubic
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .expect("apply");
    let wanted: Vec<f32> = (0..3)
        .flat_map(|c| want.pixels().map(move |p| p[c] as f32 / 255.0))
        .collect();
    assert_eq!(t.data, wanted, "RandomResizedCrop(bicubic) != Pillow");
    // the same list with the default interpolation is fused, and differs
    let bilinear = build(&specs(Interpolation::Bilinear)).expect("build");
    assert!(bilinear.is_fused());
    let tb = bilinear
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .expect("apply");
    assert_ne!(tb.data, wanted);
    for interp in [
        Interpolation::Nearest,
        Interpolation::Box,
        Interpolation::Hamming,
        Interpolation::Lanczos,
    ] {
        assert!(
            !build(&specs(interp)).expect("build").is_fused(),
            "{interp:?}"
        );
    }
}

#[test]
fn random_resized_crop_draws_then_resized_crop() {
    // Whatever the crop drawn, the transform is `resized_crop` of its parameters.
    use runner::data::transforms::random_resized_crop::RandomResizedCrop;
    use runner::data::transforms::{Transform, Value};
    let img = reference_input();
    for interp in [
        Interpolation::Nearest,
        Interpolation::Bicubic,
        Interpolation::Lanczos,
    ] {
        let t = RandomResizedCrop::new((40, 48), [0.08, 1.0], [0.75, 4.0 / 3.0])
            .expect("rrc")
            .with_interpolation(interp);
        for seed in 0..8 {
            let params = t.params(img.width(), img.height(), &mut sample_rng(seed, 0, 0));
            let want = resized_crop(&img, params, (40, 48), interp);
            let Value::Image(got) = t
                .apply(Value::Image(img.clone()), &mut sample_rng(seed, 0, 0))
                .expect("apply")
            else {
                panic!("expected an image")
            };
            assert_eq!(got.dimensions(), (48, 40));
            assert_eq!(got, want, "{interp:?} seed {seed}");
        }
    }
}

#[test]
fn interpolation_names_parse_and_default_to_bilinear() {
    let spec: TransformSpec =
        serde_json::from_str(r#"{"kind": "resize", "size": 32}"#).expect("parse");
    let TransformSpec::Resize {
        interpolation,
        max_size,
        ..
    } = spec
    else {
        panic!("resize")
    };
    assert_eq!(interpolation, Interpolation::Bilinear);
    assert_eq!(max_size, None);
    for name in [
        "nearest", "bilinear", "bicubic", "box", "hamming", "lanczos",
    ] {
        let spec: TransformSpec = serde_json::from_str(&format!(
            r#"{{"kind": "random_resized_crop", "size": 32, "interpolation": "{name}"}}"#
        ))
        .expect("parse");
        let TransformSpec::RandomResizedCrop { interpolation, .. } = spec else {
            panic!("rrc")
        };
        assert_eq!(interpolation.name(), name);
    }
    assert!(serde_json::from_str::<TransformSpec>(
        r#"{"kind": "resize", "size": 32, "interpolation": "cubic"}"#
    )
    .is_err());
}

#[test]
fn bad_max_size_is_a_typed_error() {
    let bad = |size, max_size| {
        build(&[TransformSpec::Resize {
            size,
            interpolation: Interpolation::Bilinear,
            max_size: Some(max_size),
            antialias: true,
        }])
        .expect_err("must fail")
        .to_string()
    };
    let e = bad(SizeSpec::HeightWidth([32, 32]), 64);
    assert!(e.contains("max_size"), "{e}");
    let e = bad(SizeSpec::Square(32), 32);
    assert!(e.contains("max_size"), "{e}");
}
