//! The fused training pipeline (RandomResizedCrop, flip, ColorJitter, ToTensor, Normalize in
//! fewer passes) against the same transforms applied one after the other, and the loader's
//! direct JPEG decoding against the `image` crate's.

use runner::data::loader::{decode, decode_jpeg_rgb};
use runner::data::transforms::{build, sample_rng};
use runner::recipe::{RangeSpec, SizeSpec, TransformSpec};

fn noise_image(w: u32, h: u32, seed: u64) -> image::RgbImage {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    image::RgbImage::from_fn(w, h, |_, _| {
        image::Rgb([r.random(), r.random(), r.random()])
    })
}

/// Smooth gradients with a few saturated areas: contrast and saturation reach both clips.
fn smooth_image(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let r = (x * 255 / w.max(1)) as u8;
        let g = (y * 255 / h.max(1)) as u8;
        let b = if (x / 7 + y / 5) % 3 == 0 { 255 } else { 10 };
        image::Rgb([r, g, b])
    })
}

fn rrc(h: u32, w: u32, scale: [f64; 2]) -> TransformSpec {
    TransformSpec::RandomResizedCrop {
        size: SizeSpec::HeightWidth([h, w]),
        scale,
        ratio: [0.75, 4.0 / 3.0],
        interpolation: Default::default(),
        antialias: true,
    }
}

fn jitter(b: f64, c: f64, s: f64) -> TransformSpec {
    let opt = |v: f64| (v > 0.0).then_some(RangeSpec::Scalar(v));
    TransformSpec::ColorJitter {
        brightness: opt(b),
        contrast: opt(c),
        saturation: opt(s),
        hue: None,
    }
}

fn normalize() -> TransformSpec {
    TransformSpec::Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    }
}

fn flip(p: f64) -> TransformSpec {
    TransformSpec::HorizontalFlip { p }
}

fn variants() -> Vec<Vec<TransformSpec>> {
    use TransformSpec::ToTensor;
    vec![
        // the benchmarked pipeline
        vec![
            rrc(24, 24, [0.08, 1.0]),
            flip(0.5),
            jitter(0.4, 0.4, 0.4),
            ToTensor {},
            normalize(),
        ],
        vec![
            rrc(20, 28, [0.08, 1.0]),
            jitter(0.9, 0.9, 0.9),
            flip(0.5),
            ToTensor {},
        ],
        vec![rrc(40, 40, [0.5, 1.0]), flip(1.0), ToTensor {}, normalize()],
        vec![rrc(16, 16, [0.08, 1.0])],
        vec![rrc(24, 24, [0.08, 1.0]), jitter(0.0, 0.8, 0.0), ToTensor {}],
        vec![
            rrc(24, 24, [0.08, 1.0]),
            jitter(0.5, 0.0, 1.0),
            jitter(0.0, 0.7, 0.0),
            flip(0.5),
            flip(0.5),
            ToTensor {},
            normalize(),
        ],
        vec![
            TransformSpec::RandomResizedCrop {
                size: SizeSpec::Square(24),
                scale: [0.08, 1.0],
                ratio: [0.2, 5.0],
                interpolation: Default::default(),
                antialias: true,
            },
            TransformSpec::ColorJitter {
                brightness: Some(RangeSpec::Range([0.0, 3.0])),
                contrast: Some(RangeSpec::Range([0.0, 3.0])),
                saturation: Some(RangeSpec::Range([0.0, 3.0])),
                hue: None,
            },
            ToTensor {},
            normalize(),
        ],
        // infinite factors: Pillow's clipping, and 0 where the blend is inf * 0 = NaN
        vec![
            rrc(24, 24, [0.08, 1.0]),
            TransformSpec::ColorJitter {
                brightness: None,
                contrast: Some(RangeSpec::Range([0.0, f64::INFINITY])),
                saturation: Some(RangeSpec::Range([0.0, f64::INFINITY])),
                hue: None,
            },
            ToTensor {},
        ],
    ]
}

#[test]
fn fused_pipeline_matches_the_steps_bit_for_bit() {
    let images = [
        noise_image(32, 28, 1),
        noise_image(13, 61, 2),
        smooth_image(64, 64),
        smooth_image(50, 9),
        noise_image(1, 1, 3),
    ];
    for (v, specs) in variants().iter().enumerate() {
        let p = build(specs).unwrap();
        assert!(p.is_fused(), "variant {v} should take the fused path");
        for (k, img) in images.iter().enumerate() {
            for i in 0..60 {
                let a = p.apply(img.clone(), &mut sample_rng(5, 2, i)).unwrap();
                let b = p
                    .apply_steps(img.clone(), &mut sample_rng(5, 2, i))
                    .unwrap();
                assert_eq!(
                    (a.c, a.h, a.w),
                    (b.c, b.h, b.w),
                    "variant {v}, image {k}, sample {i}"
                );
                assert!(
                    a.data == b.data,
                    "variant {v}, image {k}, sample {i}: fused output differs"
                );
            }
        }
    }
}

#[test]
fn fused_pipeline_matches_at_224_from_256() {
    let specs = runner::data::bench::typical_pipeline(224);
    let p = build(&specs).unwrap();
    assert!(p.is_fused());
    let img = smooth_image(256, 256);
    let noisy = noise_image(256, 256, 9);
    for i in 0..12 {
        for src in [&img, &noisy] {
            let a = p.apply(src.clone(), &mut sample_rng(1, 0, i)).unwrap();
            let b = p
                .apply_steps(src.clone(), &mut sample_rng(1, 0, i))
                .unwrap();
            assert!(a == b, "sample {i}: fused output differs");
        }
    }
}

#[test]
fn other_pipelines_are_not_fused() {
    let with_hue = vec![
        rrc(24, 24, [0.08, 1.0]),
        TransformSpec::ColorJitter {
            brightness: None,
            contrast: None,
            saturation: None,
            hue: Some(RangeSpec::Scalar(0.1)),
        },
        TransformSpec::ToTensor {},
    ];
    assert!(!build(&with_hue).unwrap().is_fused());
    let erasing = vec![
        rrc(24, 24, [0.08, 1.0]),
        TransformSpec::ToTensor {},
        TransformSpec::RandomErasing {
            p: 0.5,
            scale: [0.02, 0.33],
            ratio: [0.3, 3.3],
            value: runner::recipe::EraseValue::Number(0.0),
        },
    ];
    assert!(!build(&erasing).unwrap().is_fused());
    let tensor_flip = vec![
        rrc(24, 24, [0.08, 1.0]),
        TransformSpec::ToTensor {},
        flip(0.5),
    ];
    assert!(!build(&tensor_flip).unwrap().is_fused());
}

fn jpeg_bytes(img: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

#[test]
fn direct_jpeg_decoding_matches_the_image_crate() {
    for (k, (w, h)) in [(256, 256), (37, 29), (1, 1), (64, 17)]
        .into_iter()
        .enumerate()
    {
        for q in [50, 90] {
            let src = if k % 2 == 0 {
                smooth_image(w, h)
            } else {
                noise_image(w, h, k as u64)
            };
            let bytes = jpeg_bytes(&src, q);
            let ours = decode_jpeg_rgb(&bytes).expect("a colour JPEG");
            let theirs = image::load_from_memory(&bytes).unwrap().into_rgb8();
            assert_eq!(ours.dimensions(), theirs.dimensions());
            assert!(ours == theirs, "{w}x{h} q{q}: pixels differ");
        }
    }
    // grey JPEGs and other formats go through the image crate
    let grey = image::GrayImage::from_fn(20, 10, |x, _| image::Luma([(x * 12) as u8]));
    let mut g = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut g)
        .encode_image(&grey)
        .unwrap();
    assert!(decode_jpeg_rgb(&g).is_none());
    assert!(decode_jpeg_rgb(b"\x89PNG\r\n\x1a\n").is_none());
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("grey.jpg");
    std::fs::write(&path, &g).unwrap();
    let img = decode(&path).unwrap();
    assert!(img == image::open(&path).unwrap().into_rgb8());
    // PNGs too
    let png = t.path().join("noise.png");
    noise_image(9, 7, 5).save(&png).unwrap();
    assert!(decode(&png).unwrap() == noise_image(9, 7, 5));
    // a colour JPEG through the loader's decode is the image crate's decode
    let path = t.path().join("colour.jpg");
    std::fs::write(&path, jpeg_bytes(&noise_image(33, 20, 6), 75)).unwrap();
    assert!(decode(&path).unwrap() == image::open(&path).unwrap().into_rgb8());
    // a truncated JPEG is an error (as in Pillow), even where the image crate fills the missing
    // rows: see `damaged_jpegs_are_unreadable_images_not_filler_or_an_abort`
}

#[test]
fn damaged_jpegs_are_unreadable_images_not_filler_or_an_abort() {
    let t = tempfile::tempdir().unwrap();
    let bytes = jpeg_bytes(&noise_image(96, 96, 7), 90);
    let write = |name: &str, b: &[u8]| {
        let p = t.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // Cut short: Pillow says "image file is truncated"; rows of filler would train silently.
    for keep in [0.5, 0.75, 0.9] {
        let cut = &bytes[..(bytes.len() as f64 * keep) as usize];
        let err = decode(&write("cut.jpg", cut)).unwrap_err().to_string();
        assert!(err.contains("cut.jpg"), "{keep}: {err}");
    }
    // A header claiming 60000 x 60000 pixels: refused before anything is allocated.
    let mut huge = bytes.clone();
    let sof = huge
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let err = decode(&write("huge.jpg", &huge)).unwrap_err().to_string();
    assert!(err.contains("huge.jpg") && err.contains("limit"), "{err}");
    // The whole file still reads.
    assert!(decode(&write("whole.jpg", &bytes)).is_ok());
}
