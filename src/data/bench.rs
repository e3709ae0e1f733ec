//! `runner bench data`: decoded + augmented images per second for a typical training pipeline
//! (RandomResizedCrop, horizontal flip, ColorJitter, ToTensor, Normalize) through the loader,
//! at several output sizes and thread counts. `bench/torchvision_data.py` does the same work
//! with torchvision + PIL on the same files.

use super::layout::list_images;
use super::{build, generate, DataError, Loader, LoaderConfig};
use crate::recipe::{BadImagePolicy, Difficulty, RangeSpec, SizeSpec, SynthConfig, TransformSpec};
use candle_core::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataBenchCase {
    /// Output side (the crop size).
    pub size: u32,
    /// Side of the source JPEGs.
    pub source_size: u32,
    pub threads: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_sec: f64,
    pub images_per_sec_per_thread: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataBenchReport {
    pub pipeline: Vec<String>,
    pub batch_size: usize,
    pub cases: Vec<DataBenchCase>,
}

/// The benchmarked pipeline at output side `size`.
pub fn typical_pipeline(size: u32) -> Vec<TransformSpec> {
    vec![
        TransformSpec::RandomResizedCrop {
            size: SizeSpec::Square(size),
            scale: [0.08, 1.0],
            ratio: [0.75, 4.0 / 3.0],
            antialias: true,
        },
        TransformSpec::HorizontalFlip { p: 0.5 },
        TransformSpec::ColorJitter {
            brightness: Some(RangeSpec::Scalar(0.4)),
            contrast: Some(RangeSpec::Scalar(0.4)),
            saturation: Some(RangeSpec::Scalar(0.4)),
            hue: None,
        },
        TransformSpec::ToTensor,
        TransformSpec::Normalize {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        },
    ]
}

/// The source side used for an output side: 64 -> 64 (the synthetic set's size), larger
/// outputs read 256 px images (the usual Resize(256)/crop-224 setting).
pub fn source_size_for(size: u32) -> u32 {
    if size <= 64 {
        64
    } else {
        256
    }
}

/// Images/s of one epoch of `specs` over `paths` with `threads` workers (batches of
/// `batch_size` built as CPU tensors).
pub fn bench_pipeline(
    paths: &[PathBuf],
    specs: &[TransformSpec],
    threads: usize,
    batch_size: usize,
) -> Result<(usize, f64), DataError> {
    let cfg = LoaderConfig {
        batch_size,
        shuffle: true,
        drop_last: false,
        seed: 0,
        num_workers: Some(threads.max(1)),
        prefetch: 2,
        cache: false,
        on_bad_image: BadImagePolicy::Fail,
    };
    let loader = Loader::from_paths(paths, build(specs)?, cfg)?;
    let start = Instant::now();
    let mut n = 0;
    for b in loader.epoch(0, &Device::Cpu) {
        n += b?.indices.len();
    }
    Ok((n, start.elapsed().as_secs_f64()))
}

/// Generates (or reuses) a synthetic JPEG set of `identities x per_identity` images at `side`
/// under `work_dir/bench-<side>` and returns its training image paths.
pub fn bench_images(
    work_dir: &Path,
    side: u32,
    identities: usize,
    per_identity: usize,
) -> Result<Vec<PathBuf>, DataError> {
    let dir = work_dir.join(format!("bench-{side}-{identities}x{per_identity}"));
    if !dir.join("classification").is_dir() {
        std::fs::create_dir_all(work_dir).map_err(|e| DataError::io(work_dir, e))?;
        let cfg = SynthConfig {
            identities,
            images_per_identity: per_identity,
            verify_identities: 0,
            impostors: 0,
            size: side,
            seed: 0,
            difficulty: Difficulty::Medium,
        };
        generate(&cfg, &dir)?;
    }
    let train = dir.join("classification").join("train");
    let mut paths = Vec::new();
    let mut ids: Vec<PathBuf> = std::fs::read_dir(&train)
        .map_err(|e| DataError::io(&train, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    ids.sort();
    for id in ids {
        paths.extend(list_images(&id)?);
    }
    Ok(paths)
}

/// Runs every (size, threads) case on `images` source images per size, generated under
/// `work_dir`.
pub fn bench_data(
    work_dir: &Path,
    sizes: &[u32],
    threads: &[usize],
    images: usize,
) -> Result<DataBenchReport, DataError> {
    let batch_size = 64;
    let mut cases = Vec::new();
    for &size in sizes {
        let side = source_size_for(size);
        let per_identity = 20;
        let identities = images.div_ceil(per_identity * 7 / 10).max(2);
        let paths = bench_images(work_dir, side, identities, per_identity)?;
        let paths: Vec<PathBuf> = paths.into_iter().take(images).collect();
        let specs = typical_pipeline(size);
        // warm the file cache
        bench_pipeline(&paths[..paths.len().min(64)], &specs, 1, batch_size)?;
        for &t in threads {
            let (n, secs) = bench_pipeline(&paths, &specs, t, batch_size)?;
            let ips = n as f64 / secs.max(1e-9);
            cases.push(DataBenchCase {
                size,
                source_size: side,
                threads: t,
                images: n,
                seconds: secs,
                images_per_sec: ips,
                images_per_sec_per_thread: ips / t.max(1) as f64,
            });
        }
    }
    let pipeline = typical_pipeline(sizes.first().copied().unwrap_or(64))
        .iter()
        .map(|s| s.kind_name().to_string())
        .collect();
    Ok(DataBenchReport {
        pipeline,
        batch_size,
        cases,
    })
}
