//! The loader: batches as tensors, shuffling from (seed, epoch), identical results whatever the
//! thread count, drop_last, the cache, and bad images (skip counts, fail names the path).

use candle_core::Device;
use runner::data::{build, generate, CourseData, Loader, LoaderConfig};
use runner::recipe::{BadImagePolicy, Difficulty, SizeSpec, SynthConfig, TransformSpec};
use std::path::PathBuf;

fn data(dir: &std::path::Path) -> CourseData {
    let cfg = SynthConfig {
        identities: 4,
        images_per_identity: 5,
        verify_identities: 0,
        impostors: 0,
        size: 32,
        seed: 3,
        difficulty: Difficulty::Easy,
    };
    generate(&cfg, &dir.join("d")).unwrap();
    CourseData::open(dir.join("d")).unwrap()
}

fn train_specs() -> Vec<TransformSpec> {
    vec![
        TransformSpec::RandomResizedCrop {
            size: SizeSpec::Square(24),
            scale: [0.5, 1.0],
            ratio: [0.75, 4.0 / 3.0],
            interpolation: Default::default(),
            antialias: true,
        },
        TransformSpec::HorizontalFlip { p: 0.5 },
        TransformSpec::ToTensor {},
        TransformSpec::Normalize {
            mean: [0.5; 3],
            std: [0.25; 3],
        },
    ]
}

fn cfg(workers: usize, shuffle: bool, drop_last: bool) -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        shuffle,
        drop_last,
        seed: 11,
        num_workers: Some(workers),
        prefetch: 2,
        cache: false,
        on_bad_image: BadImagePolicy::Fail,
    }
}

fn collect(l: &Loader, epoch: u64) -> Vec<(Vec<f32>, Vec<u32>, Vec<usize>)> {
    l.epoch(epoch, &Device::Cpu)
        .map(|b| {
            let b = b.unwrap();
            (
                b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.labels.to_vec1::<u32>().unwrap(),
                b.indices,
            )
        })
        .collect()
}

#[test]
fn deterministic_whatever_the_threads() {
    let t = tempfile::tempdir().unwrap();
    let d = data(t.path());
    let one =
        Loader::from_samples(&d.train, build(&train_specs()).unwrap(), cfg(1, true, true)).unwrap();
    let two =
        Loader::from_samples(&d.train, build(&train_specs()).unwrap(), cfg(2, true, true)).unwrap();
    let mut c3 = cfg(3, true, true);
    c3.cache = true;
    let three = Loader::from_samples(&d.train, build(&train_specs()).unwrap(), c3).unwrap();
    let a = collect(&one, 0);
    assert_eq!(a, collect(&two, 0));
    assert_eq!(a, collect(&three, 0));
    assert_eq!(a, collect(&three, 0), "cached second pass");
    assert_ne!(
        a,
        collect(&one, 1),
        "another epoch reshuffles and re-augments"
    );
    // shape and drop_last: 12 train images, batch 4
    let b = one.epoch(0, &Device::Cpu).next().unwrap().unwrap();
    assert_eq!(b.images.dims(), &[4, 3, 24, 24]);
    assert_eq!(one.num_batches(), d.train.len() / 4);
    assert_eq!(a.len(), one.num_batches());
}

#[test]
fn eval_keeps_order_and_last_batch() {
    let t = tempfile::tempdir().unwrap();
    let d = data(t.path());
    let eval = build(&[
        TransformSpec::Resize {
            size: SizeSpec::Square(16),
            interpolation: Default::default(),
            max_size: None,
            antialias: true,
        },
        TransformSpec::ToTensor {},
    ])
    .unwrap();
    let mut c = cfg(2, false, false);
    c.batch_size = 3;
    let l = Loader::from_samples(&d.dev, eval, c).unwrap();
    let batches = collect(&l, 0);
    let idx: Vec<usize> = batches.iter().flat_map(|b| b.2.clone()).collect();
    assert_eq!(idx, (0..d.dev.len()).collect::<Vec<_>>());
    let labels: Vec<u32> = batches.iter().flat_map(|b| b.1.clone()).collect();
    assert_eq!(
        labels,
        d.dev.iter().map(|s| s.label as u32).collect::<Vec<_>>()
    );
    assert_eq!(batches.len(), d.dev.len().div_ceil(3));
}

#[test]
fn bad_images_skip_or_fail() {
    let t = tempfile::tempdir().unwrap();
    let d = data(t.path());
    let bad = t.path().join("broken.jpg");
    std::fs::write(&bad, b"not an image").unwrap();
    let mut items: Vec<(PathBuf, u32)> = d
        .train
        .iter()
        .map(|s| (s.path.clone(), s.label as u32))
        .collect();
    items.insert(1, (bad.clone(), 0));
    let mut c = cfg(2, false, false);
    c.on_bad_image = BadImagePolicy::Skip;
    let eval = || build(&[TransformSpec::ToTensor {}]).unwrap();
    let l = Loader::new(items.clone(), eval(), c.clone()).unwrap();
    let n: usize = collect(&l, 0).iter().map(|b| b.1.len()).sum();
    assert_eq!(n, items.len() - 1);
    assert_eq!(l.skipped(), 1);
    let skipped = l.bad_images();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].path, bad);
    assert!(!skipped[0].error.is_empty() && !skipped[0].error.contains("broken.jpg"));
    c.on_bad_image = BadImagePolicy::Fail;
    let l = Loader::new(items, eval(), c).unwrap();
    let err = l
        .epoch(0, &Device::Cpu)
        .find_map(|b| b.err())
        .expect("an error");
    assert!(err.to_string().contains("broken.jpg"), "{err}");
}
