//! Transform parity with torchvision (../shared/reference/transforms.*) and the contract of the
//! random transforms (shape, range, probability, reproducibility).

use runner::data::transforms::{build, sample_rng, ImageTensor};
use runner::recipe::{RangeSpec, SizeSpec, TransformSpec};
use std::path::PathBuf;

fn reference_dir() -> PathBuf {
    PathBuf::from("../shared/reference")
}

fn input() -> Option<image::RgbImage> {
    let p = reference_dir().join("transform_input.png");
    assert!(
        p.is_file(),
        "{} missing: the reference fixtures live in ../shared/reference",
        p.display()
    );
    Some(image::open(p).expect("reference png").to_rgb8())
}

fn expected(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(reference_dir().join("transforms.safetensors")).expect("safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let t = st.tensor(name).expect("tensor");
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

fn run(specs: &[TransformSpec]) -> ImageTensor {
    let p = build(specs).expect("build");
    p.apply(input().expect("input"), &mut sample_rng(0, 0, 0))
        .expect("apply")
}

fn check(name: &str, specs: &[TransformSpec], tol: f32) {
    if input().is_none() {
        return;
    }
    let got = run(specs);
    let (shape, want) = expected(name);
    assert_eq!(vec![got.c, got.h, got.w], shape, "{name}: shape");
    let max = got
        .data
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{name}: max abs diff {max:e}");
    assert!(max <= tol, "{name}: max abs diff {max} > {tol}");
}

const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const STD: [f64; 3] = [0.229, 0.224, 0.225];

fn resize(size: SizeSpec) -> TransformSpec {
    TransformSpec::Resize {
        size,
        interpolation: Default::default(),
        max_size: None,
        antialias: true,
    }
}

#[test]
fn to_tensor_matches() {
    check("to_tensor", &[TransformSpec::ToTensor], 0.0);
}

#[test]
fn resize_square_matches() {
    check(
        "resize_64x64_bilinear_antialias",
        &[
            resize(SizeSpec::HeightWidth([64, 64])),
            TransformSpec::ToTensor,
        ],
        0.0,
    );
}

#[test]
fn resize_shorter_side_matches() {
    check(
        "resize_short_48_bilinear",
        &[resize(SizeSpec::Square(48)), TransformSpec::ToTensor],
        0.0,
    );
}

#[test]
fn resize_upsample_matches() {
    check(
        "resize_128x128_bilinear_upsample",
        &[
            resize(SizeSpec::HeightWidth([128, 128])),
            TransformSpec::ToTensor,
        ],
        0.0,
    );
}

#[test]
fn center_crop_matches() {
    check(
        "center_crop_64",
        &[
            TransformSpec::CenterCrop {
                size: SizeSpec::Square(64),
            },
            TransformSpec::ToTensor,
        ],
        0.0,
    );
}

#[test]
fn hflip_matches() {
    check(
        "hflip",
        &[
            TransformSpec::HorizontalFlip { p: 1.0 },
            TransformSpec::ToTensor,
        ],
        0.0,
    );
    // flipping the tensor instead of the image gives the same
    check(
        "hflip",
        &[
            TransformSpec::ToTensor,
            TransformSpec::HorizontalFlip { p: 1.0 },
        ],
        0.0,
    );
}

#[test]
fn normalize_matches() {
    check(
        "normalize_imagenet",
        &[
            TransformSpec::ToTensor,
            TransformSpec::Normalize {
                mean: MEAN,
                std: STD,
            },
        ],
        1e-6,
    );
}

#[test]
fn chain_matches() {
    check(
        "resize_64_then_center_crop_56_normalize",
        &[
            resize(SizeSpec::Square(64)),
            TransformSpec::CenterCrop {
                size: SizeSpec::Square(56),
            },
            TransformSpec::ToTensor,
            TransformSpec::Normalize {
                mean: MEAN,
                std: STD,
            },
        ],
        1e-6,
    );
}

#[test]
fn center_crop_pads_when_larger() {
    let img = image::RgbImage::from_pixel(4, 2, image::Rgb([255, 255, 255]));
    let p = build(&[
        TransformSpec::CenterCrop {
            size: SizeSpec::HeightWidth([4, 6]),
        },
        TransformSpec::ToTensor,
    ])
    .unwrap();
    let t = p.apply(img, &mut sample_rng(0, 0, 0)).unwrap();
    assert_eq!((t.h, t.w), (4, 6));
    // first row is padding, second row: 0,1,1,1,1,0
    let row1: Vec<f32> = t.data[6..12].to_vec();
    assert_eq!(row1, vec![0.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    assert!(t.data[..6].iter().all(|v| *v == 0.0));
}

fn noise_image(w: u32, h: u32, seed: u64) -> image::RgbImage {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    image::RgbImage::from_fn(w, h, |_, _| {
        image::Rgb([r.random(), r.random(), r.random()])
    })
}

fn random_specs() -> Vec<Vec<TransformSpec>> {
    vec![
        vec![TransformSpec::RandomResizedCrop {
            size: SizeSpec::Square(24),
            scale: [0.08, 1.0],
            ratio: [0.75, 4.0 / 3.0],
            interpolation: Default::default(),
            antialias: true,
        }],
        vec![TransformSpec::RandomCrop {
            size: SizeSpec::Square(24),
            padding: 4,
            pad_if_needed: false,
            fill: 0,
        }],
        vec![TransformSpec::RandomRotation {
            degrees: RangeSpec::Scalar(30.0),
            fill: 0,
        }],
        vec![TransformSpec::RandomPerspective {
            distortion_scale: 0.5,
            p: 1.0,
            fill: 0,
        }],
        vec![TransformSpec::ColorJitter {
            brightness: Some(RangeSpec::Scalar(0.4)),
            contrast: Some(RangeSpec::Scalar(0.4)),
            saturation: Some(RangeSpec::Scalar(0.4)),
            hue: Some(RangeSpec::Scalar(0.1)),
        }],
        vec![TransformSpec::RandAugment {
            num_ops: 3,
            magnitude: 9,
            num_magnitude_bins: 31,
            fill: 0,
        }],
        vec![
            TransformSpec::ToTensor,
            TransformSpec::RandomErasing {
                p: 1.0,
                scale: [0.02, 0.33],
                ratio: [0.3, 3.3],
                value: 0.0,
            },
        ],
    ]
}

#[test]
fn random_transforms_shape_range_and_reproducibility() {
    for specs in random_specs() {
        let name = specs.last().unwrap().kind_name();
        let p = build(&specs).unwrap();
        let img = noise_image(32, 28, 1);
        let a = p.apply(img.clone(), &mut sample_rng(7, 1, 3)).unwrap();
        let b = p.apply(img.clone(), &mut sample_rng(7, 1, 3)).unwrap();
        assert_eq!(a, b, "{name}: same seed, same output");
        let expect_hw = match specs[0] {
            TransformSpec::RandomResizedCrop { .. } | TransformSpec::RandomCrop { .. } => (24, 24),
            _ => (28, 32),
        };
        assert_eq!(
            (a.c, a.h, a.w),
            (3, expect_hw.0, expect_hw.1),
            "{name}: shape"
        );
        assert!(
            a.data.iter().all(|v| (0.0..=1.0).contains(v)),
            "{name}: range"
        );
        // different samples see different draws
        let differs = (0..8).any(|i| {
            p.apply(img.clone(), &mut sample_rng(7, 1, 100 + i))
                .unwrap()
                != a
        });
        assert!(differs, "{name}: output never changes with the sample");
    }
}

#[test]
fn flip_probability() {
    let p = build(&[TransformSpec::HorizontalFlip { p: 0.3 }]).unwrap();
    let img = noise_image(8, 4, 2);
    let base = build(&[])
        .unwrap()
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .unwrap();
    let n = 2000;
    let flipped = (0..n)
        .filter(|&i| p.apply(img.clone(), &mut sample_rng(1, 0, i)).unwrap() != base)
        .count();
    let rate = flipped as f64 / n as f64;
    assert!((rate - 0.3).abs() < 0.04, "flip rate {rate}");
}

#[test]
fn erasing_probability_and_value() {
    let p = build(&[
        TransformSpec::ToTensor,
        TransformSpec::RandomErasing {
            p: 0.5,
            scale: [0.02, 0.33],
            ratio: [0.3, 3.3],
            value: 2.0,
        },
    ])
    .unwrap();
    let img = noise_image(16, 16, 3);
    let n = 1000;
    let erased = (0..n)
        .filter(|&i| {
            p.apply(img.clone(), &mut sample_rng(2, 0, i))
                .unwrap()
                .data
                .contains(&2.0)
        })
        .count();
    let rate = erased as f64 / n as f64;
    assert!((rate - 0.5).abs() < 0.06, "erasing rate {rate}");
}

#[test]
fn bad_order_is_rejected() {
    let err = build(&[TransformSpec::Normalize {
        mean: MEAN,
        std: STD,
    }])
    .unwrap_err();
    assert!(err.to_string().contains("normalize"), "{err}");
    let err = build(&[TransformSpec::ToTensor, resize(SizeSpec::Square(8))]).unwrap_err();
    assert!(err.to_string().contains("resize"), "{err}");
}

#[test]
fn rotation_by_90_is_a_quarter_turn() {
    use runner::data::transforms::affine::rotate;
    let img = noise_image(6, 6, 9);
    // Pillow's rotate(90) turns counter-clockwise, like rotate270 (clockwise 270)
    assert_eq!(rotate(&img, 90.0, 0), image::imageops::rotate270(&img));
    assert_eq!(rotate(&img, -90.0, 0), image::imageops::rotate90(&img));
    assert_eq!(rotate(&img, 0.0, 0), img);
}

#[test]
fn perspective_identity_when_points_do_not_move() {
    use runner::data::transforms::perspective::{perspective_coeffs, warp_perspective};
    let img = noise_image(10, 8, 4);
    let pts = [[0.0, 0.0], [9.0, 0.0], [9.0, 7.0], [0.0, 7.0]];
    let c = perspective_coeffs(pts, pts).unwrap();
    assert_eq!(warp_perspective(&img, c, 0), img);
}

#[test]
fn rand_augment_ops_keep_shape() {
    // every op at a strong magnitude, many draws
    let p = build(&[TransformSpec::RandAugment {
        num_ops: 2,
        magnitude: 30,
        num_magnitude_bins: 31,
        fill: 128,
    }])
    .unwrap();
    let img = noise_image(20, 14, 5);
    for i in 0..200 {
        let t = p.apply(img.clone(), &mut sample_rng(3, 0, i)).unwrap();
        assert_eq!((t.c, t.h, t.w), (3, 14, 20));
    }
}
