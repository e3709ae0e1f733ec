//! The report's face-task data, for the best [`DETAIL_RUNS`] runs of the leaderboard at their
//! leaderboard epoch: verification (score histograms, each probe's top-1 result, the wrong
//! decisions) and classification (per-identity accuracy, the most confused pairs, the
//! misclassified images), with small thumbnails of the mistakes of the best run. All of it is
//! read from the store (`verification_scores`, `dev_predictions`) and, for the thumbnails,
//! from the image files the store names.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};

use crate::cli::leaderboard::Ranked;
use crate::cli::CliError;
use crate::store::{DevPredictions, Store};
use crate::verify::distribution::probe_flags;

/// Runs whose verification and classification details the page embeds (the best first).
pub const DETAIL_RUNS: usize = 8;
/// Thumbnails: at most this many pixels a side, JPEG.
pub const THUMB_PX: u32 = 48;
/// Thumbnails: at most this many bytes in all (base64 included).
pub const THUMB_BUDGET: usize = 256 * 1024;
/// Confused identity pairs listed per run.
pub const CONFUSED_PAIRS: usize = 20;
/// Identities drawn per run in the per-identity accuracy chart (the worst).
pub const WORST_IDENTITIES: usize = 30;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A small JPEG of an image as a `data:` URL (None: unreadable, or over the budget left).
fn thumbnail(path: &Path, budget: &mut usize) -> Option<String> {
    let img = image::open(path).ok()?;
    let small = img.thumbnail(THUMB_PX, THUMB_PX).to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&small)
        .ok()?;
    let url = format!("data:image/jpeg;base64,{}", b64(&jpeg));
    if url.len() > *budget {
        return None;
    }
    *budget -= url.len();
    Some(url)
}

/// The verification details of one run at (or before) its leaderboard epoch.
fn verification(
    store: &Store,
    r: &Ranked,
    thumbs: Option<&mut usize>,
) -> Result<Option<Value>, CliError> {
    let Some(row_epoch) = r.row.epoch else {
        return Ok(None);
    };
    let all = store.score_distributions(r.row.id, "verify-dev")?;
    // the leaderboard's epoch, else the last verified epoch before it
    let Some(rec) = all.iter().rev().find(|d| d.epoch <= row_epoch) else {
        return Ok(None);
    };
    let scores = store.verification(r.row.id)?;
    let score = scores
        .iter()
        .rev()
        .find(|v| v.epoch == rec.epoch && v.split == "verify-dev");
    let d = &rec.distribution;
    let mut budget = thumbs;
    let wrong: Vec<Value> = d
        .wrong
        .iter()
        .map(|w| {
            let thumb = match (&mut budget, &w.path) {
                (Some(b), Some(p)) => thumbnail(Path::new(p), b),
                _ => None,
            };
            json!({"id": w.id, "truth": w.truth, "decided": w.decided, "score": w.score, "thumb": thumb})
        })
        .collect();
    let probe_scores: Vec<u8> = d
        .probes
        .iter()
        .flat_map(|p| p.score.to_le_bytes())
        .collect();
    Ok(Some(json!({
        "run": r.row.id,
        "epoch": rec.epoch,
        "row_epoch": row_epoch,
        "metric": score.map(|s| s.metric.clone()),
        "accuracy": score.map(|s| s.accuracy),
        // the decision threshold on the score scale (higher is better; Euclidean scores are
        // negative distances); +-infinity as text
        "score_threshold": if d.score_threshold.is_finite() {
            json!(d.score_threshold)
        } else {
            json!(d.score_threshold.to_string())
        },
        "lo": d.lo,
        "hi": d.hi,
        "genuine": d.genuine,
        "impostor": d.impostor,
        "probe_scores": b64(&probe_scores),
        "probe_flags": b64(&probe_flags(&d.probes)),
        "probes_total": d.probes_total,
        "wrong": wrong,
        "wrong_total": d.wrong_total,
    })))
}

/// Per-identity accuracy (worst first) and the most confused pairs of dev predictions.
fn classification(r: &Ranked, p: &DevPredictions, thumbs: Option<&mut usize>) -> Value {
    let n = p.classes.len();
    let name = |i: u32| {
        p.classes
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    };
    let mut correct = vec![0u64; n];
    let mut total = vec![0u64; n];
    let mut pairs: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for (&t, &q) in p.truth.iter().zip(&p.predicted) {
        if let Some(c) = total.get_mut(t as usize) {
            *c += 1;
        }
        if t == q {
            if let Some(c) = correct.get_mut(t as usize) {
                *c += 1;
            }
        } else {
            *pairs.entry((t, q)).or_default() += 1;
        }
    }
    let mut ids: Vec<usize> = (0..n).filter(|&i| total[i] > 0).collect();
    // worst accuracy first; ties by more images, then by name
    ids.sort_by(|&a, &b| {
        let (x, y) = (
            correct[a] as f64 / total[a] as f64,
            correct[b] as f64 / total[b] as f64,
        );
        x.total_cmp(&y)
            .then(total[b].cmp(&total[a]))
            .then(a.cmp(&b))
    });
    let identities = ids.len();
    let worst: Vec<Value> = ids
        .iter()
        .take(WORST_IDENTITIES)
        .map(|&i| json!({"identity": p.classes[i], "correct": correct[i], "total": total[i]}))
        .collect();
    let mut confused: Vec<((u32, u32), u64)> = pairs.into_iter().collect();
    confused.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let confused: Vec<Value> = confused
        .iter()
        .take(CONFUSED_PAIRS)
        .map(|((t, q), c)| json!({"truth": name(*t), "predicted": name(*q), "count": c}))
        .collect();
    let mut budget = thumbs;
    let misclassified: Vec<Value> = p
        .misclassified
        .iter()
        .map(|m| {
            let thumb = budget
                .as_deref_mut()
                .and_then(|b| thumbnail(Path::new(&m.path), b));
            let file = Path::new(&m.path)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            json!({"image": file, "truth": name(m.truth), "predicted": name(m.predicted), "thumb": thumb})
        })
        .collect();
    let right: u64 = correct.iter().sum();
    let seen: u64 = total.iter().sum();
    json!({
        "run": r.row.id,
        "epoch": p.epoch,
        "classes": n,
        "identities": identities,
        "images": p.truth.len(),
        "images_total": p.images_total,
        "accuracy": if seen > 0 { Some(right as f64 / seen as f64) } else { None },
        "worst": worst,
        "confused": confused,
        "misclassified": misclassified,
        "misclassified_total": p.misclassified_total,
    })
}

/// The face-task details of the best [`DETAIL_RUNS`] of `ranked` (thumbnails for the first).
pub fn build(store: &Store, ranked: &[Ranked]) -> Result<Value, CliError> {
    let mut budget = THUMB_BUDGET;
    let mut verif = Vec::new();
    let mut classif = Vec::new();
    for (i, r) in ranked.iter().take(DETAIL_RUNS).enumerate() {
        let first = i == 0;
        if let Some(v) = verification(store, r, first.then_some(&mut budget))? {
            verif.push(v);
        }
        if let Some(epoch) = r.row.epoch {
            if let Some(p) = store.dev_predictions(r.row.id, epoch)? {
                classif.push(classification(r, &p, first.then_some(&mut budget)));
            }
        }
    }
    Ok(json!({
        "verification": verif,
        "classification": classif,
        "limits": {
            "runs": DETAIL_RUNS,
            "thumb_px": THUMB_PX,
            "thumb_budget": THUMB_BUDGET,
            "thumb_bytes": THUMB_BUDGET - budget,
            "confused_pairs": CONFUSED_PAIRS,
            "worst_identities": WORST_IDENTITIES,
            "probes": crate::verify::distribution::MAX_PROBES,
            "bins": crate::verify::distribution::SCORE_BINS,
            "dev_images": crate::store::MAX_DEV_IMAGES,
            "mistakes": crate::store::MAX_MISCLASSIFIED,
        },
    }))
}
