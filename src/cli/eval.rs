//! `runner eval RUN|CHECKPOINT --split ...` (metrics and submission CSVs) and
//! `runner match CHECKPOINT --gallery DIR IMAGE...` (best identity per image).

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::output::{fmt_num, print_json, Format};
use super::{CliError, Global};
use crate::data::loader::SkippedImage;
use crate::data::{CourseData, Part};
use crate::engine::progress::Reporter;
use crate::engine::restore::{load_model, LoadedModel};
use crate::engine::verification::{embed_paths, embed_paths_counted, Verifier};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    Dev,
    Test,
    VerifyDev,
    VerifyTest,
    /// A pairs list (`img1 img2 same` per line), given with `--pairs FILE`.
    Pairs,
}

/// Verification metrics of a pairs list: ROC AUC, EER, TAR at FAR 1e-2 and 1e-3.
fn eval_pairs(m: &LoadedModel, pairs_file: &Path) -> Result<serde_json::Value, CliError> {
    let pairs = crate::data::read_pairs(pairs_file).map_err(CliError::invalid)?;
    if pairs.is_empty() {
        return Err(CliError::invalid(format!(
            "{}: no pairs",
            pairs_file.display()
        )));
    }
    // every distinct image embedded once; a pair with a skipped image is left out
    let mut distinct: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.0.clone(), p.1.clone()])
        .collect();
    distinct.sort();
    distinct.dedup();
    let e =
        embed_paths(m.model.as_ref(), &distinct, &m.recipe, &m.device).map_err(CliError::failed)?;
    warn_skipped(&e.skipped);
    let row_of: std::collections::HashMap<&Path, usize> = e
        .kept
        .iter()
        .enumerate()
        .map(|(row, &i)| (distinct[i].as_path(), row))
        .collect();
    let (mut ra, mut rb, mut same) = (Vec::new(), Vec::new(), Vec::new());
    for (a, b, s) in &pairs {
        if let (Some(&x), Some(&y)) = (row_of.get(a.as_path()), row_of.get(b.as_path())) {
            ra.push(x);
            rb.push(y);
            same.push(*s);
        }
    }
    let rows = |r: &[usize]| {
        let emb = &e.embeddings;
        let ids = r.iter().map(|&i| emb.ids()[i].clone()).collect();
        let data = r.iter().flat_map(|&i| emb.row(i).iter().copied()).collect();
        crate::verify::Embeddings::new(ids, data, emb.dim()).map_err(CliError::failed)
    };
    if same.is_empty() {
        // every pair has an image skipped as unreadable: nothing was scored
        let mut v = serde_json::json!({
            "roc_auc": null, "eer": null, "tar_at_far_1e2": null, "tar_at_far_1e3": null,
            "n_genuine": 0, "n_impostor": 0, "pairs": 0,
        });
        note_skipped(&mut v, &e.skipped);
        return Ok(v);
    }
    let scores: Vec<f64> =
        crate::verify::pair_scores(&rows(&ra)?, &rows(&rb)?, m.recipe.verification.metric)
            .map_err(CliError::failed)?
            .into_iter()
            .map(f64::from)
            .collect();
    let pm = crate::verify::pair_metrics(&scores, &same).map_err(CliError::invalid)?;
    let mut v = serde_json::to_value(pm).unwrap_or_default();
    v["pairs"] = same.len().into();
    note_skipped(&mut v, &e.skipped);
    Ok(v)
}

/// Warns on stderr about images skipped as unreadable (`data.on_bad_image = "skip"`): they
/// are left out of the metrics and the submission.
fn warn_skipped(skipped: &[SkippedImage]) {
    for s in skipped {
        crate::errln!("warning: skipped unreadable image {s} (data.on_bad_image = \"skip\")");
    }
}

/// Lists skipped images in a report (`skipped`), when there are any.
fn note_skipped(report: &mut serde_json::Value, skipped: &[SkippedImage]) {
    if !skipped.is_empty() {
        report["skipped"] = skipped
            .iter()
            .map(|s| s.path.display().to_string())
            .collect::<Vec<_>>()
            .into();
    }
}

/// The model of a checkpoint file, or of a run's leaderboard row for `metric` (default: the
/// run's `checkpoint.monitor`).
fn load(g: &Global, reference: &str, metric: Option<&str>) -> Result<LoadedModel, CliError> {
    let store = if g.db.exists() {
        Some(Store::open(&g.db)?)
    } else {
        None
    };
    load_model(store.as_ref(), reference, metric).map_err(|e| match e {
        crate::engine::EngineError::Store(s) => CliError::from(s),
        other => CliError::invalid(other),
    })
}

/// Classification predictions (identity names) for images, in order: `None` for an image
/// skipped as unreadable (`data.on_bad_image = "skip"`), which is also returned.
fn classify(
    m: &LoadedModel,
    data: &CourseData,
    paths: &[PathBuf],
    on_batch: &dyn Fn(usize),
) -> Result<(Vec<Option<String>>, Vec<SkippedImage>), CliError> {
    let items: Vec<(PathBuf, u32)> = paths.iter().map(|p| (p.clone(), 0)).collect();
    let src = crate::engine::batches::BatchSource::eval_items(items, &m.recipe, &m.device)
        .map_err(CliError::failed)?;
    let mut out = vec![None; paths.len()];
    for item in src.epoch(0, 0).map_err(CliError::failed)? {
        let (_, batch) = item.map_err(CliError::failed)?;
        let logits = m.logits(&batch.images).map_err(CliError::failed)?;
        let idx = logits
            .argmax(1)
            .and_then(|t| t.to_vec1::<u32>())
            .map_err(CliError::failed)?;
        for (&at, i) in batch.indices.iter().zip(idx) {
            out[at] = Some(
                data.classes
                    .get(i as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("class{i}")),
            );
        }
        on_batch(batch.indices.len());
    }
    Ok((out, src.skipped()))
}

#[allow(clippy::too_many_arguments)]
pub fn eval(
    g: &Global,
    reference: &str,
    split: Split,
    submission: Option<&Path>,
    pairs: Option<&Path>,
    metric: Option<&str>,
    format: Format,
    reporter: &Reporter,
) -> Result<(), CliError> {
    let m = load(g, reference, metric)?;
    if split == Split::Pairs {
        let file = pairs.ok_or_else(|| CliError::invalid("--split pairs needs --pairs FILE"))?;
        let mut v = eval_pairs(&m, file)?;
        v["checkpoint"] = m.checkpoint.display().to_string().into();
        v["epoch"] = m.epoch.into();
        v["split"] = "pairs".into();
        return finish(v, format);
    }
    let root = crate::data::resolve_root(&m.recipe.data).map_err(CliError::invalid)?;
    let data = CourseData::open(&root).map_err(CliError::invalid)?;
    let split_name = format!("{split:?}")
        .to_lowercase()
        .replace("verifydev", "verify-dev")
        .replace("verifytest", "verify-test");
    // The parts of the layout this split reads (optional for training) must be there.
    let needs: &[Part] = match split {
        Split::Dev => &[Part::Dev],
        Split::Test => &[Part::Test],
        Split::VerifyDev => &[Part::Known, Part::UnknownDev],
        // the threshold is tuned on unknown_dev unless the recipe fixes it
        Split::VerifyTest if crate::engine::verification::fixed_threshold(&m.recipe).is_some() => {
            &[Part::Known, Part::UnknownTest]
        }
        Split::VerifyTest => &[Part::Known, Part::UnknownDev, Part::UnknownTest],
        Split::Pairs => &[],
    };
    for &part in needs {
        data.require(part)
            .map_err(|e| CliError::invalid(format!("--split {split_name}: {e}")))?;
    }
    let mut report = serde_json::json!({
        "checkpoint": m.checkpoint.display().to_string(),
        "epoch": m.epoch,
        "split": split_name,
    });
    // progress over the images this split embeds or classifies
    let total: usize = needs
        .iter()
        .map(|part| match part {
            Part::Dev => data.dev.len(),
            Part::Test => data.test.len(),
            Part::Known => data.known.len(),
            Part::UnknownDev => data.unknown_dev.len(),
            Part::UnknownTest => data.unknown_test.len(),
        })
        .sum();
    let progress = reporter.task("eval", "images", total as u64);
    let done = std::sync::atomic::AtomicU64::new(0);
    let on_batch = |n: usize| {
        let n = n as u64;
        progress.set(done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n)
    };
    let rows: Vec<(String, String)>;
    match split {
        Split::Dev | Split::Test => {
            let (paths, truth): (Vec<PathBuf>, Option<Vec<String>>) = if split == Split::Dev {
                (
                    data.dev.iter().map(|s| s.path.clone()).collect(),
                    Some(
                        data.dev
                            .iter()
                            .map(|s| data.classes[s.label].clone())
                            .collect(),
                    ),
                )
            } else {
                let labels = data.test_labels.as_ref().map(|l| {
                    data.test
                        .iter()
                        .map(|p| l.get(&crate::data::file_id(p)).cloned().unwrap_or_default())
                        .collect()
                });
                (data.test.clone(), labels)
            };
            let (pred, skipped) = classify(&m, &data, &paths, &on_batch)?;
            warn_skipped(&skipped);
            note_skipped(&mut report, &skipped);
            // accuracy over the images that could be read
            let scored: Vec<(usize, &String)> = pred
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
                .collect();
            if let Some(t) = truth {
                let correct = scored.iter().filter(|(i, p)| **p == t[*i]).count();
                // null when every image was skipped as unreadable: nothing was scored
                report["accuracy"] = if scored.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::json!(correct as f64 / scored.len() as f64)
                };
            }
            report["images"] = scored.len().into();
            rows = scored
                .iter()
                .map(|(i, p)| (crate::data::file_id(&paths[*i]), (*p).clone()))
                .collect();
        }
        Split::VerifyDev => {
            let s = Verifier::counted(m.model.as_ref(), &data, &m.recipe, &m.device, &on_batch)
                .and_then(|v| v.score_dev())
                .map_err(CliError::failed)?;
            report["accuracy"] = s.metrics.accuracy.into();
            report["threshold"] = threshold_json(s.threshold);
            report["accuracy_known"] = serde_json::json!(s.metrics.accuracy_known);
            report["impostor_rejection"] = serde_json::json!(s.metrics.impostor_rejection);
            report["metric"] = s.metric.clone().into();
            report["images"] = s.decisions.len().into();
            warn_skipped(&s.skipped);
            note_skipped(&mut report, &s.skipped);
            rows = s.decisions;
        }
        Split::Pairs => return Err(CliError::invalid("--split pairs needs --pairs FILE")),
        Split::VerifyTest => {
            // The gallery is embedded once, for tuning the threshold on unknown_dev (unless
            // the recipe fixes it) and for deciding unknown_test.
            let verifier =
                Verifier::counted(m.model.as_ref(), &data, &m.recipe, &m.device, &on_batch)
                    .map_err(CliError::failed)?;
            let t = match crate::engine::verification::fixed_threshold(&m.recipe) {
                Some(t) => t,
                None => verifier.score_dev().map_err(CliError::failed)?.threshold,
            };
            let decisions = verifier
                .decide(&data.unknown_test, t)
                .map_err(CliError::failed)?;
            warn_skipped(&decisions.skipped);
            note_skipped(&mut report, &decisions.skipped);
            let d = decisions.rows;
            report["threshold"] = threshold_json(t);
            report["metric"] = serde_json::json!(m.recipe.verification.metric);
            if d.is_empty() {
                // every unknown was skipped as unreadable: nothing was scored
                if data.unknown_test_labels.is_some() {
                    for k in ["accuracy", "accuracy_known", "impostor_rejection"] {
                        report[k] = serde_json::Value::Null;
                    }
                }
            } else if let Some(labels) = &data.unknown_test_labels {
                let pred: Vec<&str> = d.iter().map(|(_, l)| l.as_str()).collect();
                let truth: Vec<String> = d
                    .iter()
                    .map(|(id, _)| {
                        labels
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| crate::verify::NO_MATCH.into())
                    })
                    .collect();
                let vm =
                    crate::verify::verification_metrics(&pred, &truth).map_err(CliError::failed)?;
                report["accuracy"] = vm.accuracy.into();
                report["accuracy_known"] = serde_json::json!(vm.accuracy_known);
                report["impostor_rejection"] = serde_json::json!(vm.impostor_rejection);
            }
            report["images"] = d.len().into();
            rows = d;
        }
    }
    progress.finish();
    if let Some(path) = submission {
        crate::verify::write_submission(path, &rows).map_err(CliError::failed)?;
        report["submission"] = path.display().to_string().into();
    }
    finish(report, format)
}

/// A threshold as JSON: a number, or `"inf"` / `"-inf"` when tuning chose to reject or accept
/// every unknown (JSON numbers cannot be infinite; `null` would hide which).
fn threshold_json(t: f64) -> serde_json::Value {
    if t.is_finite() {
        t.into()
    } else {
        format!("{t}").into()
    }
}

fn finish(report: serde_json::Value, format: Format) -> Result<(), CliError> {
    if format == Format::Json {
        print_json(&report);
    } else if let Some(o) = report.as_object() {
        for (k, v) in o {
            let text = match v.as_f64() {
                Some(f) if v.is_f64() => fmt_num(f),
                _ => v.to_string().trim_matches('"').to_string(),
            };
            crate::outln!("{k:<20} {text}");
        }
    }
    Ok(())
}

/// `runner match`: for each image, the best gallery identity and its score.
/// The threshold `match` decides with: the recipe's fixed one; with `threshold = "tune"`, the
/// one tuned on the run's own `unknown_dev` (as `eval --split verify-test` does). `None` (the
/// decision is the best identity) only when the run's data has no verification part to tune on.
fn match_threshold(m: &LoadedModel) -> Result<Option<f64>, CliError> {
    if let Some(t) = crate::engine::verification::fixed_threshold(&m.recipe) {
        return Ok(Some(t));
    }
    let data = crate::data::resolve_root(&m.recipe.data)
        .and_then(|root| CourseData::open(&root))
        .ok()
        .filter(|d| d.has_verification());
    let Some(data) = data else {
        crate::errln!(
            "warning: threshold = \"tune\" and the run's data has no verification/known and \
             unknown_dev to tune on: each decision is the best identity"
        );
        return Ok(None);
    };
    let verifier =
        Verifier::new(m.model.as_ref(), &data, &m.recipe, &m.device).map_err(CliError::failed)?;
    let t = verifier.score_dev().map_err(CliError::failed)?.threshold;
    crate::errln!(
        "threshold {} (tuned on {})",
        fmt_num(t),
        data.root.join("verification").join("unknown_dev").display()
    );
    Ok(Some(t))
}

pub fn match_images(
    g: &Global,
    reference: &str,
    gallery: &Path,
    images: &[PathBuf],
    metric: Option<&str>,
    format: Format,
    reporter: &Reporter,
) -> Result<(), CliError> {
    let m = load(g, reference, metric)?;
    let mut known_paths = Vec::new();
    let mut known_labels = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(gallery)
        .map_err(|e| CliError::invalid(format!("{}: {e}", gallery.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == crate::verify::NO_MATCH {
            return Err(CliError::invalid(format!(
                "{}: `{name}` means \"no match\"; a gallery identity cannot use it",
                d.display()
            )));
        }
        for p in crate::data::list_images(&d).map_err(CliError::invalid)? {
            known_paths.push(p);
            known_labels.push(name.clone());
        }
    }
    if known_paths.is_empty() {
        return Err(CliError::invalid(format!(
            "{}: no identity folders with images (expected <identity>/*.jpg)",
            gallery.display()
        )));
    }
    // a folder stands for the images in it (sorted), as the course's unknown folders hold them
    let mut listed = Vec::new();
    for img in images {
        if img.is_dir() {
            let inside = crate::data::list_images(img).map_err(CliError::invalid)?;
            if inside.is_empty() {
                return Err(CliError::invalid(format!(
                    "{}: no images in this folder",
                    img.display()
                )));
            }
            listed.extend(inside);
        } else if img.is_file() {
            listed.push(img.clone());
        } else {
            return Err(CliError::invalid(format!(
                "{}: no such image or folder",
                img.display()
            )));
        }
    }
    let images = &listed;
    let v = &m.recipe.verification;
    let progress = reporter.task("match", "images", (known_paths.len() + images.len()) as u64);
    let done = std::sync::atomic::AtomicU64::new(0);
    let on_batch = |n: usize| {
        let n = n as u64;
        progress.set(done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n)
    };
    let known = embed_paths_counted(
        m.model.as_ref(),
        &known_paths,
        &m.recipe,
        &m.device,
        &on_batch,
    )
    .map_err(CliError::failed)?;
    warn_skipped(&known.skipped);
    let known_labels: Vec<&String> = known.kept.iter().map(|&i| &known_labels[i]).collect();
    let unknown = embed_paths_counted(m.model.as_ref(), images, &m.recipe, &m.device, &on_batch)
        .map_err(CliError::failed)?;
    progress.finish();
    warn_skipped(&unknown.skipped);
    let g = crate::verify::Gallery::build(&known.embeddings, &known_labels, v.metric, v.gallery)
        .map_err(CliError::failed)?;
    let matches = g
        .best_matches(&unknown.embeddings)
        .map_err(CliError::failed)?;
    let threshold = match_threshold(&m)?;
    let rows: Vec<serde_json::Value> = unknown
        .kept
        .iter()
        .map(|&i| &images[i])
        .zip(&matches)
        .map(|(p, mt)| {
            let natural = crate::verify::natural_threshold(v.metric, mt.score as f64);
            let decision = match threshold {
                Some(t) => crate::verify::decide_one(mt, crate::verify::score_threshold(v.metric, t)).to_string(),
                None => mt.identity.clone(),
            };
            serde_json::json!({"image": p.display().to_string(), "identity": mt.identity, "score": natural, "decision": decision})
        })
        .collect();
    if format == Format::Json {
        print_json(&serde_json::Value::Array(rows));
    } else {
        let headers: Vec<String> = ["image", "best identity", "score", "decision"]
            .map(String::from)
            .to_vec();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r["image"].as_str().unwrap_or("").to_string(),
                    r["identity"].as_str().unwrap_or("").to_string(),
                    fmt_num(r["score"].as_f64().unwrap_or(f64::NAN)),
                    r["decision"].as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        crate::outln!("{}", super::output::table(&headers, &cells));
    }
    Ok(())
}
