//! The built-in synthetic face data set: identities with persistent traits, images varying in
//! everything else, written in the course layout (atomically, byte-identical for a seed).

pub mod render;
pub mod traits;
pub mod variation;

use super::DataError;
use crate::recipe::{Difficulty, SynthConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Bump when the generator's output changes: it is part of the cache folder name.
pub const GENERATOR_VERSION: u32 = 1;

/// What `generate` wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SynthSummary {
    pub root: PathBuf,
    pub identities: usize,
    pub verify_identities: usize,
    pub impostors: usize,
    pub train_images: usize,
    pub dev_images: usize,
    pub test_images: usize,
    pub known_images: usize,
    pub unknown_dev_images: usize,
    pub unknown_test_images: usize,
    pub size: u32,
    pub seed: u64,
    pub difficulty: Difficulty,
    pub generator_version: u32,
    /// Bytes of the set on disk.
    pub bytes: u64,
    /// Wall time of this generation.
    pub seconds: f64,
    /// Images an interrupted generation had already written, kept (not rendered again).
    pub resumed_images: usize,
}

/// An RNG for (seed, identity, image, purpose): independent of generation order and threads.
pub fn derived_rng(seed: u64, identity: u64, image: u64, purpose: &[u8; 8]) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&identity.to_le_bytes());
    key[16..24].copy_from_slice(&image.to_le_bytes());
    key[24..32].copy_from_slice(purpose);
    ChaCha8Rng::from_seed(key)
}

/// The identity folder name of identity number `n` (1-based; `n000000` means "no match").
pub fn identity_name(n: usize) -> String {
    format!("n{n:06}")
}

/// How one identity's `images_per_identity` images are split.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub train: usize,
    pub dev: usize,
    pub test: usize,
}

/// Classification identities: 20% dev, 10% test (at least one each), the rest train.
/// Verification identities: `test` is the number in each of unknown_dev / unknown_test and
/// `train` the gallery size.
pub fn split_counts(n: usize) -> Split {
    let dev = ((n as f64 * 0.2).round() as usize).max(1);
    let test = ((n as f64 * 0.1).round() as usize).max(1);
    Split {
        train: n.saturating_sub(dev + test),
        dev,
        test,
    }
}

fn verify_counts(n: usize) -> (usize, usize) {
    let u = ((n as f64 * 0.1).round() as usize).max(1);
    (n.saturating_sub(2 * u), u)
}

/// One image file of the set and what it was rendered from: `render_image(cfg, identity,
/// index)` gives its pixels. Identity numbers are 1-based: `1..=identities` classification,
/// then `verify_identities` verification identities, then `impostors` impostors (each number
/// is its own trait draw, `derived_rng(seed, identity, 0, b"identity")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthFile {
    /// Path relative to the set's root.
    pub rel: PathBuf,
    pub identity: usize,
    /// The identity's image number (its variation draw).
    pub index: usize,
}

/// What kind of identity number `identity` is in a set generated with `cfg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityRole {
    Classification,
    Verification,
    Impostor,
}

/// The role of identity number `identity` (1-based), `None` when the set has no such number.
pub fn identity_role(cfg: &SynthConfig, identity: usize) -> Option<IdentityRole> {
    let first_verify = cfg.identities + 1;
    let first_impostor = first_verify + cfg.verify_identities;
    match identity {
        0 => None,
        i if i < first_verify => Some(IdentityRole::Classification),
        i if i < first_impostor => Some(IdentityRole::Verification),
        i if i < first_impostor + cfg.impostors => Some(IdentityRole::Impostor),
        _ => None,
    }
}

/// Every image file `generate(cfg, ..)` writes, with the identity and image number it is
/// rendered from (the generator's own record; no image is read).
pub fn synth_files(cfg: &SynthConfig) -> Result<Vec<SynthFile>, DataError> {
    check(cfg)?;
    Ok(plan(cfg).jobs)
}

/// Where one image goes.
type Job = SynthFile;

/// Every file of a set: the images and the label CSVs' rows.
struct Plan {
    jobs: Vec<Job>,
    test_labels: Vec<(String, String)>,
    dev_labels: Vec<(String, String)>,
    test_vlabels: Vec<(String, String)>,
}

fn check(cfg: &SynthConfig) -> Result<(), DataError> {
    if cfg.identities < 2 {
        return Err(DataError::param(
            "synth.identities",
            "needs at least 2 identities",
        ));
    }
    if cfg.images_per_identity < 3 {
        return Err(DataError::param(
            "synth.images_per_identity",
            "needs at least 3 (train, dev and test each get one)",
        ));
    }
    if !(16..=1024).contains(&cfg.size) {
        return Err(DataError::param(
            "synth.size",
            "must be within 16..=1024 pixels",
        ));
    }
    if cfg.verify_identities == 0 && cfg.impostors > 0 {
        return Err(DataError::param(
            "synth.impostors",
            "impostors need verify_identities > 0",
        ));
    }
    Ok(())
}

fn write_csv(path: &Path, rows: &[(String, String)]) -> Result<(), DataError> {
    let mut w = csv::Writer::from_path(path).map_err(|e| DataError::Csv {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let err = |e: csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    w.write_record(["id", "label"]).map_err(err)?;
    for (id, label) in rows {
        w.write_record([id, label]).map_err(err)?;
    }
    w.flush().map_err(|e| DataError::io(path, e))
}

/// Renders and JPEG-encodes one image of identity number `identity` (its `index`-th image).
pub fn render_image(cfg: &SynthConfig, identity: usize, index: usize) -> (image::RgbImage, u8) {
    let mut trng = derived_rng(cfg.seed, identity as u64, 0, b"identity");
    let traits = traits::IdentityTraits::sample(&mut trng);
    let mut rng = derived_rng(cfg.seed, identity as u64, index as u64, b"variatio");
    let var = variation::Variation::sample(&mut rng, cfg.difficulty);
    let img = render::render(&traits, &var, cfg.size, &mut rng);
    (img, var.jpeg_quality)
}

fn encode_jpeg(img: &image::RgbImage, quality: u8, path: &Path) -> Result<Vec<u8>, DataError> {
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100));
    img.write_with_encoder(enc).map_err(|e| DataError::Encode {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    Ok(buf)
}

/// The folder a generation of `out` writes into before renaming it to `out`.
pub fn partial_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "synth".into());
    out.with_file_name(format!("{name}.partial"))
}

/// Writes the synthetic set to `out` (which must not exist or be empty), on all cores.
/// Generation goes to `<out>.partial` and is renamed at the end, so an interruption never
/// leaves half a set at `out`; each image is written to a temporary name and renamed, so an
/// image there is whole, and a later generation of the same set (the same parameters give the
/// same bytes) keeps them and renders only the rest. Several processes may generate the same
/// set at once: the first rename wins.
pub fn generate(cfg: &SynthConfig, out: &Path) -> Result<SynthSummary, DataError> {
    generate_with_progress(cfg, out, &|_, _| {})
}

/// `generate`, calling `progress(images written, images in all)` as images are written (from
/// the worker threads).
pub fn generate_with_progress(
    cfg: &SynthConfig,
    out: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<SynthSummary, DataError> {
    let started = std::time::Instant::now();
    check(cfg)?;
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| DataError::io(out, e))?
            .next()
            .is_none();
        if !empty {
            return Err(DataError::layout(
                out,
                "output folder exists and is not empty",
            ));
        }
        std::fs::remove_dir(out).map_err(|e| DataError::io(out, e))?;
    }
    let tmp = partial_dir(out);
    // what an interrupted generation left is kept: its images are whole
    let mut summary = generate_into(cfg, &tmp, out, progress)?;
    summary.bytes = disk_bytes(&tmp);
    match std::fs::rename(&tmp, out) {
        Ok(()) => {
            summary.seconds = started.elapsed().as_secs_f64();
            Ok(summary)
        }
        // e.g. another process finished the same set first
        Err(e) => Err(DataError::io(out, e)),
    }
}

/// Bytes of the files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// How many images `generate` writes for `cfg`.
pub fn image_count(cfg: &SynthConfig) -> usize {
    plan(cfg).jobs.len()
}

fn plan(cfg: &SynthConfig) -> Plan {
    let n = cfg.images_per_identity;
    let split = split_counts(n);
    let (gallery, per_unknown) = verify_counts(n);
    let mut jobs = Vec::new();
    let mut test_items = Vec::new(); // (identity, index)
    let mut unknown_items = Vec::new(); // (identity, index, is_dev, label)
    for id in 1..=cfg.identities {
        let name = identity_name(id);
        for index in 0..n {
            let sub = if index < split.train {
                "train"
            } else if index < split.train + split.dev {
                "dev"
            } else {
                test_items.push((id, index));
                continue;
            };
            jobs.push(Job {
                identity: id,
                index,
                rel: PathBuf::from("classification")
                    .join(sub)
                    .join(&name)
                    .join(format!("{name}_{index:04}.jpg")),
            });
        }
    }
    let first_verify = cfg.identities + 1;
    let first_impostor = first_verify + cfg.verify_identities;
    for id in first_verify..first_impostor {
        let name = identity_name(id);
        for index in 0..n {
            if index < gallery {
                jobs.push(Job {
                    identity: id,
                    index,
                    rel: PathBuf::from("verification")
                        .join("known")
                        .join(&name)
                        .join(format!("{name}_{index:04}.jpg")),
                });
            } else {
                let dev = index < gallery + per_unknown;
                unknown_items.push((id, index, dev, name.clone()));
            }
        }
    }
    for id in first_impostor..first_impostor + cfg.impostors {
        for index in 0..2 * per_unknown {
            unknown_items.push((
                id,
                index,
                index < per_unknown,
                super::layout::NO_MATCH.to_string(),
            ));
        }
    }
    // anonymous, shuffled file names for the flat folders
    let mut order_rng = derived_rng(cfg.seed, u64::MAX, 0, b"shuffle ");
    test_items.shuffle(&mut order_rng);
    let mut test_labels = Vec::new();
    for (k, (id, index)) in test_items.iter().enumerate() {
        let file = format!("{k:06}.jpg");
        test_labels.push((file.clone(), identity_name(*id)));
        jobs.push(Job {
            identity: *id,
            index: *index,
            rel: PathBuf::from("classification").join("test").join(file),
        });
    }
    unknown_items.shuffle(&mut order_rng);
    let (mut dev_labels, mut test_vlabels) = (Vec::new(), Vec::new());
    let (mut kd, mut kt) = (0usize, 0usize);
    for (id, index, dev, label) in unknown_items {
        let (folder, k, labels) = if dev {
            kd += 1;
            ("unknown_dev", kd - 1, &mut dev_labels)
        } else {
            kt += 1;
            ("unknown_test", kt - 1, &mut test_vlabels)
        };
        let file = format!("{k:06}.jpg");
        labels.push((file.clone(), label));
        jobs.push(Job {
            identity: id,
            index,
            rel: PathBuf::from("verification").join(folder).join(file),
        });
    }
    Plan {
        jobs,
        test_labels,
        dev_labels,
        test_vlabels,
    }
}

fn generate_into(
    cfg: &SynthConfig,
    dir: &Path,
    final_root: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<SynthSummary, DataError> {
    let n = cfg.images_per_identity;
    let split = split_counts(n);
    let (gallery, _) = verify_counts(n);
    let Plan {
        jobs,
        test_labels,
        dev_labels,
        test_vlabels,
    } = plan(cfg);
    // folders first (sequentially), then the images in parallel
    let mut folders: Vec<PathBuf> = jobs
        .iter()
        .filter_map(|j| j.rel.parent().map(|p| dir.join(p)))
        .collect();
    folders.push(dir.join("classification/dev"));
    folders.sort();
    folders.dedup();
    for f in &folders {
        std::fs::create_dir_all(f).map_err(|e| DataError::io(f, e))?;
    }
    let resumed = std::sync::atomic::AtomicUsize::new(0);
    let written = std::sync::atomic::AtomicU64::new(0);
    let total = jobs.len() as u64;
    jobs.par_iter().try_for_each(|j| -> Result<(), DataError> {
        let path = dir.join(&j.rel);
        let done = || {
            let n = written.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(n, total);
        };
        if path.is_file() {
            // written whole by an interrupted generation of the same set
            resumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            done();
            return Ok(());
        }
        let (img, q) = render_image(cfg, j.identity, j.index);
        let bytes = encode_jpeg(&img, q, &path)?;
        let part = path.with_extension(format!("jpg.tmp-{}", std::process::id()));
        std::fs::write(&part, bytes).map_err(|e| DataError::io(&part, e))?;
        std::fs::rename(&part, &path).map_err(|e| DataError::io(&path, e))?;
        done();
        Ok(())
    })?;
    write_csv(&dir.join("classification/test_labels.csv"), &test_labels)?;
    if cfg.verify_identities > 0 {
        write_csv(&dir.join("verification/verification_dev.csv"), &dev_labels)?;
        write_csv(
            &dir.join("verification/verification_test.csv"),
            &test_vlabels,
        )?;
    }
    Ok(SynthSummary {
        root: final_root.to_path_buf(),
        identities: cfg.identities,
        verify_identities: cfg.verify_identities,
        impostors: cfg.impostors,
        train_images: cfg.identities * split.train,
        dev_images: cfg.identities * split.dev,
        test_images: test_labels.len(),
        known_images: cfg.verify_identities * gallery,
        unknown_dev_images: dev_labels.len(),
        unknown_test_images: test_vlabels.len(),
        size: cfg.size,
        seed: cfg.seed,
        difficulty: cfg.difficulty,
        generator_version: GENERATOR_VERSION,
        bytes: 0,
        seconds: 0.0,
        resumed_images: resumed.into_inner(),
    })
}
