//! Transform parity with torchvision (tests/fixtures/reference/transforms.*) and the contract of the
//! random transforms (shape, range, probability, reproducibility).

use runner::data::transforms::{build, sample_rng, ImageTensor};
use runner::recipe::{EraseValue, PaddingMode, PaddingSpec, RangeSpec, SizeSpec, TransformSpec};
use std::path::PathBuf;

fn reference_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference"
    ))
}

fn input() -> Option<image::RgbImage> {
    let p = reference_dir().join("transform_input.png");
    assert!(
        p.is_file(),
        "{} missing: the reference fixtures live in tests/fixtures/reference",
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
    check("to_tensor", &[TransformSpec::ToTensor {}], 0.0);
}

#[test]
fn resize_square_matches() {
    check(
        "resize_64x64_bilinear_antialias",
        &[
            resize(SizeSpec::HeightWidth([64, 64])),
            TransformSpec::ToTensor {},
        ],
        0.0,
    );
}

#[test]
fn resize_shorter_side_matches() {
    check(
        "resize_short_48_bilinear",
        &[resize(SizeSpec::Square(48)), TransformSpec::ToTensor {}],
        0.0,
    );
}

#[test]
fn resize_upsample_matches() {
    check(
        "resize_128x128_bilinear_upsample",
        &[
            resize(SizeSpec::HeightWidth([128, 128])),
            TransformSpec::ToTensor {},
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
            TransformSpec::ToTensor {},
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
            TransformSpec::ToTensor {},
        ],
        0.0,
    );
    // flipping the tensor instead of the image gives the same
    check(
        "hflip",
        &[
            TransformSpec::ToTensor {},
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
            TransformSpec::ToTensor {},
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
            TransformSpec::ToTensor {},
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
        TransformSpec::ToTensor {},
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
            padding: PaddingSpec::All(4),
            pad_if_needed: false,
            fill: 0,
            padding_mode: PaddingMode::Constant,
        }],
        vec![TransformSpec::RandomRotation {
            degrees: RangeSpec::Scalar(30.0),
            fill: 0,
            expand: false,
            center: None,
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
            TransformSpec::ToTensor {},
            TransformSpec::RandomErasing {
                p: 1.0,
                scale: [0.02, 0.33],
                ratio: [0.3, 3.3],
                value: EraseValue::Number(0.0),
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
        TransformSpec::ToTensor {},
        TransformSpec::RandomErasing {
            p: 0.5,
            scale: [0.02, 0.33],
            ratio: [0.3, 3.3],
            value: EraseValue::Number(2.0),
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
    let err = build(&[TransformSpec::ToTensor {}, resize(SizeSpec::Square(8))]).unwrap_err();
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

// ---------------------------------------------------------------- RandomCrop padding

/// A 3 x 2 image whose pixels are (gray) 1 2 3 / 4 5 6.
fn tiny_123_456() -> image::RgbImage {
    image::RgbImage::from_fn(3, 2, |x, y| {
        let v = (1 + x + 3 * y) as u8;
        image::Rgb([v, v, v])
    })
}

/// The first channel of a `to_tensor` output back as bytes, one row per line.
fn gray_rows(t: &ImageTensor) -> Vec<Vec<u8>> {
    (0..t.h)
        .map(|y| {
            (0..t.w)
                .map(|x| (t.data[y * t.w + x] * 255.0).round() as u8)
                .collect()
        })
        .collect()
}

fn crop_spec(
    h: u32,
    w: u32,
    padding: PaddingSpec,
    padding_mode: PaddingMode,
    pad_if_needed: bool,
) -> TransformSpec {
    TransformSpec::RandomCrop {
        size: SizeSpec::HeightWidth([h, w]),
        padding,
        pad_if_needed,
        fill: 9,
        padding_mode,
    }
}

/// Pads the tiny image and crops the whole padded image (a single possible window).
fn padded(padding: PaddingSpec, mode: PaddingMode, h: u32, w: u32) -> Vec<Vec<u8>> {
    let p = build(&[crop_spec(h, w, padding, mode, false)]).unwrap();
    let t = p.apply(tiny_123_456(), &mut sample_rng(0, 0, 0)).unwrap();
    assert_eq!((t.h, t.w), (h as usize, w as usize));
    // every channel carries the same gray value
    let plane = t.h * t.w;
    assert_eq!(t.data[..plane], t.data[plane..2 * plane]);
    gray_rows(&t)
}

#[test]
fn random_crop_padding_modes_give_torchvision_pixels() {
    // [left/right, top/bottom] = [2, 1]: 7 x 4
    let lr_tb = PaddingSpec::LeftRightTopBottom([2, 1]);
    assert_eq!(
        padded(lr_tb, PaddingMode::Constant, 4, 7),
        vec![
            vec![9, 9, 9, 9, 9, 9, 9],
            vec![9, 9, 1, 2, 3, 9, 9],
            vec![9, 9, 4, 5, 6, 9, 9],
            vec![9, 9, 9, 9, 9, 9, 9],
        ]
    );
    assert_eq!(
        padded(lr_tb, PaddingMode::Edge, 4, 7),
        vec![
            vec![1, 1, 1, 2, 3, 3, 3],
            vec![1, 1, 1, 2, 3, 3, 3],
            vec![4, 4, 4, 5, 6, 6, 6],
            vec![4, 4, 4, 5, 6, 6, 6],
        ]
    );
    // reflect leaves the edge pixel out: 3 2 | 1 2 3 | 2 1
    assert_eq!(
        padded(lr_tb, PaddingMode::Reflect, 4, 7),
        vec![
            vec![6, 5, 4, 5, 6, 5, 4],
            vec![3, 2, 1, 2, 3, 2, 1],
            vec![6, 5, 4, 5, 6, 5, 4],
            vec![3, 2, 1, 2, 3, 2, 1],
        ]
    );
    // symmetric repeats it: 2 1 | 1 2 3 | 3 2
    assert_eq!(
        padded(lr_tb, PaddingMode::Symmetric, 4, 7),
        vec![
            vec![2, 1, 1, 2, 3, 3, 2],
            vec![2, 1, 1, 2, 3, 3, 2],
            vec![5, 4, 4, 5, 6, 6, 5],
            vec![5, 4, 4, 5, 6, 6, 5],
        ]
    );
}

#[test]
fn random_crop_padding_forms_give_torchvision_pixels() {
    // an int pads every side
    assert_eq!(
        padded(PaddingSpec::All(1), PaddingMode::Reflect, 4, 5),
        vec![
            vec![5, 4, 5, 6, 5],
            vec![2, 1, 2, 3, 2],
            vec![5, 4, 5, 6, 5],
            vec![2, 1, 2, 3, 2],
        ]
    );
    assert_eq!(
        padded(PaddingSpec::All(1), PaddingMode::Constant, 4, 5),
        vec![
            vec![9, 9, 9, 9, 9],
            vec![9, 1, 2, 3, 9],
            vec![9, 4, 5, 6, 9],
            vec![9, 9, 9, 9, 9],
        ]
    );
    // [left, top, right, bottom]
    assert_eq!(
        padded(
            PaddingSpec::Sides([1, 0, 2, 1]),
            PaddingMode::Symmetric,
            3,
            6
        ),
        vec![
            vec![1, 1, 2, 3, 3, 2],
            vec![4, 4, 5, 6, 6, 5],
            vec![4, 4, 5, 6, 6, 5],
        ]
    );
    assert_eq!(
        padded(PaddingSpec::Sides([0, 2, 1, 0]), PaddingMode::Edge, 4, 4),
        vec![
            vec![1, 2, 3, 3],
            vec![1, 2, 3, 3],
            vec![1, 2, 3, 3],
            vec![4, 5, 6, 6],
        ]
    );
    assert_eq!(
        padded(
            PaddingSpec::Sides([0, 1, 2, 0]),
            PaddingMode::Constant,
            3,
            5
        ),
        vec![
            vec![9, 9, 9, 9, 9],
            vec![1, 2, 3, 9, 9],
            vec![4, 5, 6, 9, 9],
        ]
    );
    // padding wider than the image keeps reflecting (numpy.pad)
    assert_eq!(
        padded(
            PaddingSpec::LeftRightTopBottom([4, 0]),
            PaddingMode::Reflect,
            2,
            11
        )[0],
        vec![1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3]
    );
    assert_eq!(
        padded(
            PaddingSpec::LeftRightTopBottom([4, 0]),
            PaddingMode::Symmetric,
            2,
            11
        )[0],
        vec![3, 3, 2, 1, 1, 2, 3, 3, 2, 1, 1]
    );
}

#[test]
fn random_crop_pad_if_needed_pads_the_padded_image_in_the_same_mode() {
    // torchvision: pad by `padding` (reflect, 1) -> 5 x 4, then the width by 2 on each side
    // (reflecting the padded image) -> 9 x 4, then the height by 2 -> 9 x 8; crop 7 x 6.
    let a = [5, 4, 5, 4, 5, 6, 5, 6, 5];
    let b = [2, 1, 2, 1, 2, 3, 2, 3, 2];
    let full: Vec<[u8; 9]> = vec![a, b, a, b, a, b, a, b];
    let p = build(&[crop_spec(
        6,
        7,
        PaddingSpec::All(1),
        PaddingMode::Reflect,
        true,
    )])
    .unwrap();
    let full: Vec<Vec<u8>> = full.iter().map(|r| r.to_vec()).collect();
    assert_windows_of(&p, (6, 7), &full);
    // constant: the image padded by 2 on every side with `fill`, crop 4 x 5
    let p = build(&[crop_spec(
        4,
        5,
        PaddingSpec::All(0),
        PaddingMode::Constant,
        true,
    )])
    .unwrap();
    let full = vec![
        vec![9; 7],
        vec![9; 7],
        vec![9, 9, 1, 2, 3, 9, 9],
        vec![9, 9, 4, 5, 6, 9, 9],
        vec![9; 7],
        vec![9; 7],
    ];
    assert_windows_of(&p, (4, 5), &full);
}

/// Every output of `p` on the tiny image is an `(h, w)` window of `full`, and not always the
/// same one.
fn assert_windows_of(
    p: &runner::data::transforms::Pipeline,
    (h, w): (usize, usize),
    full: &[Vec<u8>],
) {
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..64 {
        let t = p.apply(tiny_123_456(), &mut sample_rng(4, 0, i)).unwrap();
        assert_eq!((t.h, t.w), (h, w));
        let got = gray_rows(&t);
        let window = (0..=full.len() - h)
            .flat_map(|top| (0..=full[0].len() - w).map(move |left| (top, left)))
            .find(|&(top, left)| (0..h).all(|y| got[y][..] == full[top + y][left..left + w]));
        let window = window.unwrap_or_else(|| panic!("not a window of the padded image: {got:?}"));
        seen.insert(window);
    }
    assert!(seen.len() > 1, "the window never moves: {seen:?}");
}

// ---------------------------------------------------------------- RandomErasing values

fn erasing(
    value: EraseValue,
    scale: [f64; 2],
    ratio: [f64; 2],
) -> runner::data::transforms::Pipeline {
    build(&[
        TransformSpec::ToTensor {},
        TransformSpec::RandomErasing {
            p: 1.0,
            scale,
            ratio,
            value,
        },
    ])
    .unwrap()
}

/// Indices (pixel positions) where any channel changed, and whether they form one rectangle.
fn changed_pixels(before: &ImageTensor, after: &ImageTensor) -> (Vec<usize>, bool) {
    let plane = before.h * before.w;
    let px: Vec<usize> = (0..plane)
        .filter(|&i| (0..before.c).any(|c| before.data[c * plane + i] != after.data[c * plane + i]))
        .collect();
    if px.is_empty() {
        return (px, false);
    }
    let ys = px.iter().map(|i| i / before.w);
    let xs = px.iter().map(|i| i % before.w);
    let (y0, y1) = (ys.clone().min().unwrap(), ys.max().unwrap());
    let (x0, x1) = (xs.clone().min().unwrap(), xs.max().unwrap());
    let rect = (y1 - y0 + 1) * (x1 - x0 + 1) == px.len();
    (px, rect)
}

#[test]
fn erasing_with_per_channel_values_fills_each_channel() {
    let img = noise_image(24, 20, 11);
    let before = build(&[])
        .unwrap()
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .unwrap();
    let p = erasing(
        EraseValue::PerChannel([0.25, -1.5, 3.0]),
        [0.1, 0.3],
        [0.5, 2.0],
    );
    for i in 0..20 {
        let t = p.apply(img.clone(), &mut sample_rng(5, 0, i)).unwrap();
        let (px, rect) = changed_pixels(&before, &t);
        assert!(rect, "sample {i}: the erased pixels are not one rectangle");
        let plane = t.h * t.w;
        for &k in &px {
            let got = [t.data[k], t.data[plane + k], t.data[2 * plane + k]];
            assert_eq!(got, [0.25, -1.5, 3.0], "sample {i}, pixel {k}");
        }
    }
}

#[test]
fn erasing_with_random_values_draws_standard_normal_noise() {
    let img = noise_image(64, 64, 12);
    let before = build(&[])
        .unwrap()
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .unwrap();
    let random = EraseValue::Random(runner::recipe::RandomWord::Random);
    let p = erasing(random, [0.3, 0.33], [1.0, 1.0]);
    let t = p.apply(img.clone(), &mut sample_rng(6, 0, 0)).unwrap();
    let (px, rect) = changed_pixels(&before, &t);
    assert!(rect && px.len() > 1000, "{} pixels erased", px.len());
    let plane = t.h * t.w;
    let values: Vec<f64> = (0..3)
        .flat_map(|c| px.iter().map(move |&k| c * plane + k))
        .map(|i| t.data[i] as f64)
        .collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    // n > 3000 values: the mean's standard error is < 0.02
    assert!(mean.abs() < 0.08, "mean {mean}");
    assert!((std - 1.0).abs() < 0.08, "std {std}");
    assert!(values.iter().any(|v| *v < 0.0) && values.iter().any(|v| *v > 1.0));
    // reproducible for a seed, different for another sample
    assert_eq!(p.apply(img.clone(), &mut sample_rng(6, 0, 0)).unwrap(), t);
    assert_ne!(p.apply(img.clone(), &mut sample_rng(6, 0, 1)).unwrap(), t);
}

#[test]
fn erasing_values_parse_from_a_recipe() {
    #[derive(serde::Deserialize)]
    struct T {
        t: Vec<TransformSpec>,
    }
    let parsed: T = toml::from_str(
        r#"t = [
            { kind = "random_erasing", value = 1 },
            { kind = "random_erasing", value = [0.1, 0.2, 0.3] },
            { kind = "random_erasing", value = "random" },
            { kind = "random_crop", size = 8, padding = [1, 2], padding_mode = "reflect" },
            { kind = "random_crop", size = 8, padding = [1, 2, 3, 4] },
            { kind = "random_rotation", degrees = 5, expand = true, center = [0, 1.5] },
        ]"#,
    )
    .unwrap();
    let values: Vec<_> = parsed
        .t
        .iter()
        .filter_map(|t| match t {
            TransformSpec::RandomErasing { value, .. } => Some(*value),
            _ => None,
        })
        .collect();
    assert_eq!(
        values,
        vec![
            EraseValue::Number(1.0),
            EraseValue::PerChannel([0.1, 0.2, 0.3]),
            EraseValue::Random(runner::recipe::RandomWord::Random),
        ]
    );
    assert!(matches!(
        parsed.t[3],
        TransformSpec::RandomCrop {
            padding: PaddingSpec::LeftRightTopBottom([1, 2]),
            padding_mode: PaddingMode::Reflect,
            ..
        }
    ));
    assert!(matches!(
        parsed.t[4],
        TransformSpec::RandomCrop {
            padding: PaddingSpec::Sides([1, 2, 3, 4]),
            padding_mode: PaddingMode::Constant,
            ..
        }
    ));
    assert!(matches!(
        parsed.t[5],
        TransformSpec::RandomRotation {
            expand: true,
            center: Some([0.0, 1.5]),
            ..
        }
    ));
    for bad in [r#"value = "noise""#, "value = [1, 2]"] {
        let text = format!("t = [{{ kind = \"random_erasing\", {bad} }}]");
        assert!(toml::from_str::<T>(&text).is_err(), "{bad} accepted");
    }
}

// ---------------------------------------------------------------- RandomRotation expand / center

fn rotation(
    angle: f64,
    expand: bool,
    center: Option<[f64; 2]>,
) -> runner::data::transforms::Pipeline {
    build(&[TransformSpec::RandomRotation {
        degrees: RangeSpec::Range([angle, angle]),
        fill: 0,
        expand,
        center,
    }])
    .unwrap()
}

fn to_tensor(img: &image::RgbImage) -> ImageTensor {
    build(&[])
        .unwrap()
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .unwrap()
}

#[test]
fn rotation_expand_by_90_swaps_the_size() {
    let img = noise_image(6, 4, 13);
    let t = rotation(90.0, true, None)
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .unwrap();
    assert_eq!((t.h, t.w), (6, 4));
    // counter-clockwise, nothing lost
    assert_eq!(t, to_tensor(&image::imageops::rotate270(&img)));
    let t = rotation(-90.0, true, None)
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .unwrap();
    assert_eq!(t, to_tensor(&image::imageops::rotate90(&img)));
    // without expand the size stays
    let t = rotation(90.0, false, None)
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .unwrap();
    assert_eq!((t.h, t.w), (4, 6));
    // 180 with expand keeps the size
    let t = rotation(180.0, true, None)
        .apply(img.clone(), &mut sample_rng(0, 0, 0))
        .unwrap();
    assert_eq!(t, to_tensor(&image::imageops::rotate180(&img)));
}

#[test]
fn rotation_expand_holds_the_whole_image() {
    use runner::data::transforms::affine::rotate_with;
    // Pillow's size: ceil(max) - floor(min) of the rotated corners. 30 degrees of a 10 x 6
    // image about (5, 3): x in [-0.83, 10.83] -> 12 wide, y in [-2.10, 8.10] -> 12 high.
    let img = image::RgbImage::from_pixel(10, 6, image::Rgb([200, 100, 50]));
    let out = rotate_with(&img, 30.0, None, true, 0);
    assert_eq!((out.width(), out.height()), (12, 12));
    // the whole rotated image is there: about its 60 pixels (nearest sampling at the edges)
    let lit = out.pixels().filter(|p| p.0 != [0, 0, 0]).count();
    assert!((lit as f64 - 60.0).abs() <= 8.0, "{lit} pixels of 60 kept");
    // without expand the corners are cut off
    let cut = rotate_with(&img, 30.0, None, false, 0);
    let kept = cut.pixels().filter(|p| p.0 != [0, 0, 0]).count();
    assert!(kept < lit, "{kept} >= {lit}");
    // expand at 0 degrees is the identity
    assert_eq!(rotate_with(&img, 0.0, None, true, 0), img);
}

#[test]
fn rotation_about_a_corner_keeps_that_corner() {
    let img = noise_image(9, 7, 14);
    let before = to_tensor(&img);
    let plane = 9 * 7;
    let px = |t: &ImageTensor, x: usize, y: usize| {
        [
            t.data[y * 9 + x],
            t.data[plane + y * 9 + x],
            t.data[2 * plane + y * 9 + x],
        ]
    };
    for angle in [17.0, 37.0, 90.0, 143.0, -60.0] {
        // the centre of the top-left pixel
        let t = rotation(angle, false, Some([0.5, 0.5]))
            .apply(img.clone(), &mut sample_rng(0, 0, 0))
            .unwrap();
        assert_eq!((t.h, t.w), (7, 9));
        assert_eq!(px(&t, 0, 0), px(&before, 0, 0), "{angle} degrees");
        assert_ne!(t, before);
        // the centre of the bottom-right pixel
        let t = rotation(angle, false, Some([8.5, 6.5]))
            .apply(img.clone(), &mut sample_rng(0, 0, 0))
            .unwrap();
        assert_eq!(px(&t, 8, 6), px(&before, 8, 6), "{angle} degrees");
    }
    // the image centre written out is the default
    for angle in [17.0, 90.0] {
        assert_eq!(
            rotation(angle, false, Some([4.5, 3.5]))
                .apply(img.clone(), &mut sample_rng(0, 0, 0))
                .unwrap(),
            rotation(angle, false, None)
                .apply(img.clone(), &mut sample_rng(0, 0, 0))
                .unwrap()
        );
    }
}

// ---------------------------------------------------------------- RandomPerspective p

fn perspective(p: f64) -> runner::data::transforms::Pipeline {
    build(&[TransformSpec::RandomPerspective {
        distortion_scale: 0.5,
        p,
        fill: 0,
    }])
    .unwrap()
}

#[test]
fn perspective_probability() {
    let img = noise_image(16, 16, 15);
    let base = to_tensor(&img);
    let n = 2000u64;
    let p = perspective(0.3);
    let changed = (0..n)
        .filter(|&i| p.apply(img.clone(), &mut sample_rng(8, 0, i)).unwrap() != base)
        .count();
    let rate = changed as f64 / n as f64;
    // binomial standard deviation sqrt(0.3 * 0.7 / 2000) = 0.010; allow 4 of them
    assert!((rate - 0.3).abs() < 0.041, "perspective rate {rate}");
    // p = 0 never touches the image, p = 1 always warps it
    let p0 = perspective(0.0);
    let p1 = perspective(1.0);
    for i in 0..200 {
        assert_eq!(
            p0.apply(img.clone(), &mut sample_rng(9, 0, i)).unwrap(),
            base
        );
        assert_ne!(
            p1.apply(img.clone(), &mut sample_rng(9, 0, i)).unwrap(),
            base
        );
    }
}

/// RandAugment's magnitudes equal torchvision's at every bin (tests/fixtures/
/// rand_augment_magnitudes.json, written by gen_rand_augment_magnitudes.py): float32
/// linspace bins, and Posterize's bits rounded half to even (9 bins: bin 1 keeps 8 bits).
#[test]
fn rand_augment_magnitudes_are_torchvisions() {
    use runner::data::transforms::rand_augment::RandAugment;
    let text = std::fs::read_to_string("tests/fixtures/rand_augment_magnitudes.json").unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for case in fx["cases"].as_array().unwrap() {
        let bins = case["bins"].as_u64().unwrap() as u32;
        let (w, h) = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        for op in 0..14 {
            let name = RandAugment::op_name(op);
            let want = &case["ops"][name];
            let values = want["values"].as_array().unwrap();
            assert_eq!(values.len(), bins as usize, "{name}");
            for (m, v) in values.iter().enumerate() {
                let ra = RandAugment::new(2, m as u32, bins, 0).unwrap();
                let (mag, signed) = ra.magnitude_of(op, w, h);
                assert_eq!(
                    (mag, signed),
                    (v.as_f64().unwrap(), want["signed"].as_bool().unwrap()),
                    "{name} bin {m} of {bins} at {w}x{h}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 5000, "{checked}");
}
