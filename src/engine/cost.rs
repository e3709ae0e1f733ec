//! What a plan costs before it runs: per planned run, epochs x training images x seconds per
//! image, the seconds per image taken from earlier runs in the store that trained the same
//! model at the same input size, batch size and precision on the same device with the same
//! thread count (their whole epochs: training, loader wait, dev, verification, checkpoints and
//! records), or, with `measure`, from a short training benchmark (training steps only).

use std::collections::BTreeMap;

use super::EngineError;
use crate::plan::PlannedRun;
use crate::recipe::Recipe;
use crate::store::{RunStatus, Store};

/// Where a run's seconds per image came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    /// The median over these earlier runs' epochs.
    EarlierRuns { runs: usize, epochs: usize },
    /// `bench train` steps just now (training only: dev, verification and checkpoints not
    /// counted).
    Measured { steps: usize },
    /// No earlier run matches, and no measurement was asked for.
    Unknown,
}

/// One planned run's cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunCost {
    pub key: String,
    pub device: String,
    pub threads: usize,
    /// Epochs left to train (0 for a done run).
    pub epochs: u32,
    pub train_images: usize,
    pub seconds_per_image: Option<f64>,
    pub source: RateSource,
    pub seconds: Option<f64>,
}

/// The cost of planned runs, each on the device its recipe names with this process's threads.
pub fn plan_cost(
    store: Option<&Store>,
    runs: &[PlannedRun],
    measure: bool,
) -> Result<Vec<RunCost>, EngineError> {
    let threads = rayon::current_num_threads();
    let mut rates: BTreeMap<String, (Option<f64>, RateSource)> = BTreeMap::new();
    let mut out = Vec::new();
    for run in runs {
        let r = &run.recipe;
        let device = match super::device(&r.train.device) {
            Ok(d) => super::device_label(&d),
            Err(_) => super::resolve_device_name(&r.train.device).to_string(),
        };
        let done = match store {
            Some(s) => match s.run_by_key(&run.key)? {
                Some(row) if row.status() == Some(RunStatus::Done) => r.train.epochs,
                Some(row) => s.epochs(row.id)?.len() as u32,
                None => 0,
            },
            None => 0,
        };
        let epochs = r.train.epochs.saturating_sub(done);
        let train_images = train_images(r)?;
        let signature = signature(r).to_string() + &device;
        if !rates.contains_key(&signature) {
            let mut rate = match store {
                Some(s) => from_store(s, r, &device, threads)?,
                None => (None, RateSource::Unknown),
            };
            if rate.0.is_none() && measure && epochs > 0 {
                let steps = 3;
                let classes = match r.model.num_classes {
                    Some(n) => n,
                    None if r.data.root == "synth" => r.data.synth.identities,
                    None => crate::data::CourseData::open(&r.data.root)?.classes.len(),
                };
                let b = super::bench::bench_train(r, classes, steps, false)?;
                rate = (
                    Some(1.0 / b.images_per_sec.max(1e-12)),
                    RateSource::Measured { steps },
                );
            }
            rates.insert(signature.clone(), rate);
        }
        let (spi, source) = rates[&signature].clone();
        out.push(RunCost {
            key: run.key.clone(),
            device,
            threads,
            epochs,
            train_images,
            seconds_per_image: spi,
            source,
            seconds: spi.map(|s| s * epochs as f64 * train_images as f64),
        });
    }
    Ok(out)
}

/// What makes two runs' seconds per image comparable: the model, the input size, the batch
/// size and the precision.
fn signature(r: &Recipe) -> serde_json::Value {
    serde_json::json!({
        "model": r.model,
        "image_size": r.data.image_size,
        "batch_size": r.train.batch_size,
        "precision": r.train.precision,
    })
}

/// Training images per epoch, without generating the built-in set.
fn train_images(r: &Recipe) -> Result<usize, EngineError> {
    if r.data.root == "synth" {
        let s = &r.data.synth;
        Ok(s.identities * crate::data::synth::split_counts(s.images_per_identity).train)
    } else {
        Ok(crate::data::CourseData::open(&r.data.root)?.train.len())
    }
}

/// The median seconds per training image over the epochs of earlier runs with `r`'s
/// signature on `device` with `threads` threads: each epoch's phases summed, over the images
/// it trained (its images per second times its training seconds).
fn from_store(
    store: &Store,
    r: &Recipe,
    device: &str,
    threads: usize,
) -> Result<(Option<f64>, RateSource), EngineError> {
    let want = signature(r);
    let mut per_image = Vec::new();
    let mut runs = 0;
    for (id, config) in store.runs_on(device, threads)? {
        let Ok(other) = serde_json::from_value::<Recipe>(config) else {
            continue;
        };
        if signature(&other) != want {
            continue;
        }
        let before = per_image.len();
        for e in store.epochs(id)? {
            let Some(p) = e.phase_seconds else { continue };
            let images = e.images_per_sec * p.train;
            let total = p.train + p.loader_wait + p.eval + p.verify + p.checkpoint + p.store;
            if images > 0.0 && total.is_finite() {
                per_image.push(total / images);
            }
        }
        runs += usize::from(per_image.len() > before);
    }
    if per_image.is_empty() {
        return Ok((None, RateSource::Unknown));
    }
    per_image.sort_by(f64::total_cmp);
    let n = per_image.len();
    let median = if n % 2 == 1 {
        per_image[n / 2]
    } else {
        (per_image[n / 2 - 1] + per_image[n / 2]) / 2.0
    };
    Ok((Some(median), RateSource::EarlierRuns { runs, epochs: n }))
}
