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

/// Where one image's time goes, on one thread (CPU time of the thread, so other processes on
/// the machine disturb it less than wall time): reading + decoding the file, the pipeline as
/// run (fused when it can be), and the same transforms one after the other.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataStageTimes {
    pub size: u32,
    pub source_size: u32,
    pub images: usize,
    pub decode_ms: f64,
    pub transforms_ms: f64,
    pub transforms_steps_ms: f64,
    pub fused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataBenchReport {
    pub pipeline: Vec<String>,
    pub batch_size: usize,
    pub cases: Vec<DataBenchCase>,
    pub stages: Vec<DataStageTimes>,
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_secs() -> f64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Per-image decode and transform times of `specs` over `paths` on the calling thread
/// (best of `rounds` passes, each image decoded again every time).
pub fn stage_times(
    paths: &[PathBuf],
    specs: &[TransformSpec],
    rounds: usize,
) -> Result<(f64, f64, f64, bool), DataError> {
    use super::loader::decode;
    use super::transforms::sample_rng;
    let pipeline = build(specs)?;
    let n = paths.len().max(1) as f64;
    let (mut dec, mut tf, mut steps) = (f64::MAX, f64::MAX, f64::MAX);
    for r in 0..rounds.max(1) {
        let (mut d, mut t, mut st) = (0.0, 0.0, 0.0);
        for (i, p) in paths.iter().enumerate() {
            let t0 = thread_cpu_secs();
            let img = decode(p)?;
            let t1 = thread_cpu_secs();
            let copy = img.clone();
            let t2 = thread_cpu_secs();
            let a = pipeline.apply(copy, &mut sample_rng(r as u64, 0, i as u64))?;
            let t3 = thread_cpu_secs();
            let b = pipeline.apply_steps(img, &mut sample_rng(r as u64, 0, i as u64))?;
            let t4 = thread_cpu_secs();
            std::hint::black_box((a, b));
            d += t1 - t0;
            t += t3 - t2;
            st += t4 - t3;
        }
        dec = dec.min(d / n * 1e3);
        tf = tf.min(t / n * 1e3);
        steps = steps.min(st / n * 1e3);
    }
    Ok((dec, tf, steps, pipeline.is_fused()))
}

/// The benchmarked pipeline at output side `size`.
pub fn typical_pipeline(size: u32) -> Vec<TransformSpec> {
    vec![
        TransformSpec::RandomResizedCrop {
            size: SizeSpec::Square(size),
            scale: [0.08, 1.0],
            ratio: [0.75, 4.0 / 3.0],
            interpolation: Default::default(),
            antialias: true,
        },
        TransformSpec::HorizontalFlip { p: 0.5 },
        TransformSpec::ColorJitter {
            brightness: Some(RangeSpec::Scalar(0.4)),
            contrast: Some(RangeSpec::Scalar(0.4)),
            saturation: Some(RangeSpec::Scalar(0.4)),
            hue: None,
        },
        TransformSpec::ToTensor {},
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
    let mut stages = Vec::new();
    for &size in sizes {
        let side = source_size_for(size);
        let per_identity = 20;
        let identities = images.div_ceil(per_identity * 7 / 10).max(2);
        let paths = bench_images(work_dir, side, identities, per_identity)?;
        let paths: Vec<PathBuf> = paths.into_iter().take(images).collect();
        let specs = typical_pipeline(size);
        // warm the file cache
        bench_pipeline(&paths[..paths.len().min(64)], &specs, 1, batch_size)?;
        let few = &paths[..paths.len().min(256)];
        let (decode_ms, transforms_ms, transforms_steps_ms, fused) = stage_times(few, &specs, 2)?;
        stages.push(DataStageTimes {
            size,
            source_size: side,
            images: few.len(),
            decode_ms,
            transforms_ms,
            transforms_steps_ms,
            fused,
        });
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
        stages,
    })
}
