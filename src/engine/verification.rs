//! Verification inside a run and for `runner eval`: embeds the gallery (`verification/known`)
//! and the unknown faces with the recipe's eval transforms (optionally averaged with the
//! flipped image), matches them one-to-many, and scores the open-set decision.

use std::path::PathBuf;

use candle_core::{Device, Tensor};

use super::batches::BatchSource;
use super::EngineError;
use crate::data::loader::SkippedImage;
use crate::data::CourseData;
use crate::model::{FaceModel, ForwardCtx};
use crate::recipe::{Recipe, ThresholdSpec};
use crate::verify::{self, Embeddings, Gallery, VerificationMetrics};

/// A verification score of a model.
#[derive(Debug, Clone)]
pub struct VerificationScore {
    pub metric: String,
    /// In the metric's natural unit (similarity for cosine, distance for Euclidean).
    pub threshold: f64,
    pub metrics: VerificationMetrics,
    /// The decision for each unknown image, by id.
    pub decisions: Vec<(String, String)>,
    /// The genuine and impostor scores, each probe's top-1 result and the wrong decisions
    /// (when asked for: a run records them for the report; `runner eval` needs none).
    pub distribution: Option<verify::ScoreDistribution>,
    /// Gallery and unknown images skipped as unreadable (`data.on_bad_image = "skip"`): they
    /// are neither in the gallery nor scored.
    pub skipped: Vec<SkippedImage>,
}

/// The embeddings of a list of images: one row per image that could be read.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Ids are the file names.
    pub embeddings: Embeddings,
    /// For each row, its image's position in the list.
    pub kept: Vec<usize>,
    /// Images skipped as unreadable (`data.on_bad_image = "skip"`; with `"fail"` an
    /// unreadable image is an error).
    pub skipped: Vec<SkippedImage>,
}

/// Embeds images (in order) with the eval pipeline.
pub fn embed_paths(
    model: &dyn FaceModel,
    paths: &[PathBuf],
    recipe: &Recipe,
    device: &Device,
) -> Result<Embedded, EngineError> {
    embed_paths_counted(model, paths, recipe, device, &|_| {})
}

/// `embed_paths`, calling `on_batch(images in the batch)` after each batch (progress).
pub fn embed_paths_counted(
    model: &dyn FaceModel,
    paths: &[PathBuf],
    recipe: &Recipe,
    device: &Device,
    on_batch: &dyn Fn(usize),
) -> Result<Embedded, EngineError> {
    let items: Vec<(PathBuf, u32)> = paths.iter().map(|p| (p.clone(), 0)).collect();
    let src = BatchSource::eval_items(items, recipe, device)?;
    let tta = recipe.verification.tta;
    let mut rows: Vec<Tensor> = Vec::new();
    let mut kept = Vec::with_capacity(paths.len());
    for item in src.epoch(0, 0)? {
        let (_, batch) = item?;
        // no graph: each layer's input is freed as soon as the next has used it
        let e = candle_core::no_grad(|| -> candle_core::Result<Tensor> {
            let e = model.embed(&batch.images, &mut ForwardCtx::eval())?;
            if !tta {
                return Ok(e);
            }
            let flipped = batch.images.flip(&[3])?;
            let f = model.embed(&flipped, &mut ForwardCtx::eval())?;
            (e + f)? * 0.5
        })?;
        rows.push(e);
        kept.extend_from_slice(&batch.indices);
        on_batch(batch.indices.len());
    }
    let ids: Vec<String> = kept
        .iter()
        .map(|&i| crate::data::file_id(&paths[i]))
        .collect();
    let embeddings = if rows.is_empty() {
        Embeddings::new(ids, Vec::new(), model.embedding_dim())?
    } else {
        Embeddings::from_tensor(ids, &Tensor::cat(&rows, 0)?)?
    };
    Ok(Embedded {
        embeddings,
        kept,
        skipped: src.skipped(),
    })
}

/// The gallery of known identities, each image embedded by `embed`; also the gallery images
/// `embed` skipped.
fn gallery_of(
    data: &CourseData,
    recipe: &Recipe,
    embed: impl Fn(&[PathBuf]) -> Result<Embedded, EngineError>,
) -> Result<(Gallery, Vec<SkippedImage>), EngineError> {
    let v = &recipe.verification;
    let paths: Vec<PathBuf> = data.known.iter().map(|s| s.path.clone()).collect();
    let known = embed(&paths)?;
    let labels: Vec<&str> = known
        .kept
        .iter()
        .map(|&i| data.known_identities[data.known[i].label].as_str())
        .collect();
    let gallery = Gallery::build(&known.embeddings, &labels, v.metric, v.gallery)?;
    Ok((gallery, known.skipped))
}

/// The true label of each embedded `unknown_dev` image (`n000000` for impostors).
fn dev_truth(data: &CourseData, unknown: &Embeddings) -> Vec<String> {
    unknown
        .ids()
        .iter()
        .map(|id| {
            data.unknown_dev_labels
                .get(id)
                .cloned()
                .unwrap_or_else(|| verify::NO_MATCH.to_string())
        })
        .collect()
}

/// Scores verification on `unknown_dev` (threshold tuned there when the recipe says "tune").
pub fn score_verification(
    model: &dyn FaceModel,
    data: &CourseData,
    recipe: &Recipe,
    device: &Device,
) -> Result<VerificationScore, EngineError> {
    Verifier::new(model, data, recipe, device)?.score_dev_with(true)
}

/// Open-set decisions for a list of unknown images.
#[derive(Debug, Clone)]
pub struct Decisions {
    /// (image id, identity or `n000000`), one per image that could be read.
    pub rows: Vec<(String, String)>,
    /// Gallery and unknown images skipped as unreadable (`data.on_bad_image = "skip"`).
    pub skipped: Vec<SkippedImage>,
}

/// A model's gallery of known identities, embedded once, against which unknown faces are
/// scored (`unknown_dev`) or decided (`unknown_test`, any list of images).
pub struct Verifier<'a> {
    model: &'a dyn FaceModel,
    data: &'a CourseData,
    recipe: &'a Recipe,
    device: &'a Device,
    gallery: Gallery,
    /// Gallery images skipped as unreadable.
    gallery_skipped: Vec<SkippedImage>,
    /// Called with the images of each embedded batch (`runner eval`'s progress).
    on_batch: &'a dyn Fn(usize),
}

impl<'a> Verifier<'a> {
    /// Embeds the gallery (`verification/known`) with the recipe's eval pipeline.
    pub fn new(
        model: &'a dyn FaceModel,
        data: &'a CourseData,
        recipe: &'a Recipe,
        device: &'a Device,
    ) -> Result<Self, EngineError> {
        Self::counted(model, data, recipe, device, &|_| {})
    }

    /// `new`, calling `on_batch(images in the batch)` after every batch it embeds, the
    /// gallery's and the unknowns' (progress).
    pub fn counted(
        model: &'a dyn FaceModel,
        data: &'a CourseData,
        recipe: &'a Recipe,
        device: &'a Device,
        on_batch: &'a dyn Fn(usize),
    ) -> Result<Self, EngineError> {
        let (gallery, gallery_skipped) = gallery_of(data, recipe, |p| {
            embed_paths_counted(model, p, recipe, device, on_batch)
        })?;
        Ok(Self {
            model,
            data,
            recipe,
            device,
            gallery,
            gallery_skipped,
            on_batch,
        })
    }

    /// Scores `unknown_dev` (threshold tuned there when the recipe says "tune").
    pub fn score_dev(&self) -> Result<VerificationScore, EngineError> {
        self.score_dev_with(false)
    }

    /// [`Verifier::score_dev`], with the score distribution when `distribution` (one more
    /// pass over every unknown-identity score; two for Euclidean).
    pub fn score_dev_with(&self, distribution: bool) -> Result<VerificationScore, EngineError> {
        let v = &self.recipe.verification;
        let unknown = embed_paths_counted(
            self.model,
            &self.data.unknown_dev,
            self.recipe,
            self.device,
            self.on_batch,
        )?;
        let mut skipped = self.gallery_skipped.clone();
        skipped.extend(unknown.skipped);
        let matches = self.gallery.best_matches(&unknown.embeddings)?;
        let truth = dev_truth(self.data, &unknown.embeddings);
        let score_t =
            verify::resolve_threshold(v.threshold, v.metric, Some((&matches[..], &truth[..])))?;
        let decisions = verify::decide(&matches, score_t);
        let metrics = verify::verification_metrics(&decisions, &truth)?;
        let distribution = if distribution {
            let mut d = verify::score_distribution(
                &self.gallery,
                &unknown.embeddings,
                &matches,
                &truth,
                score_t,
            )?;
            // the wrong decisions' image paths (for the report's thumbnails)
            let paths: std::collections::HashMap<&str, &std::path::Path> = unknown
                .embeddings
                .ids()
                .iter()
                .zip(&unknown.kept)
                .map(|(id, &i)| (id.as_str(), self.data.unknown_dev[i].as_path()))
                .collect();
            for w in &mut d.wrong {
                w.path = paths.get(w.id.as_str()).map(|p| p.display().to_string());
            }
            Some(d)
        } else {
            None
        };
        let ids = unknown.embeddings.ids().to_vec();
        Ok(VerificationScore {
            metric: format!("{:?}", v.metric).to_lowercase(),
            threshold: verify::natural_threshold(v.metric, score_t),
            metrics,
            distribution,
            decisions: ids.into_iter().zip(decisions).collect(),
            skipped,
        })
    }

    /// Decisions for a list of unknown images with a threshold in the metric's natural unit
    /// (fixed by the recipe, or tuned on `unknown_dev` by [`Verifier::score_dev`]).
    pub fn decide(
        &self,
        paths: &[PathBuf],
        threshold_natural: f64,
    ) -> Result<Decisions, EngineError> {
        let metric = self.recipe.verification.metric;
        let unknown =
            embed_paths_counted(self.model, paths, self.recipe, self.device, self.on_batch)?;
        let mut skipped = self.gallery_skipped.clone();
        skipped.extend(unknown.skipped);
        let matches = self.gallery.best_matches(&unknown.embeddings)?;
        let decisions =
            verify::decide(&matches, verify::score_threshold(metric, threshold_natural));
        let rows = unknown
            .embeddings
            .ids()
            .iter()
            .cloned()
            .zip(decisions)
            .collect();
        Ok(Decisions { rows, skipped })
    }
}

/// The fixed threshold of a recipe, if it has one.
pub fn fixed_threshold(recipe: &Recipe) -> Option<f64> {
    match recipe.verification.threshold {
        ThresholdSpec::Fixed(t) => Some(t),
        ThresholdSpec::Tune => None,
    }
}

/// Baselines that show what the learned embedding adds: verification with raw pixels as
/// the embedding (resized to 32x32, same gallery, metric and threshold rule as the recipe),
/// 1-NN classification on raw pixels, and the open-set "chance" of answering `n000000`
/// for every unknown.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Baselines {
    pub raw_pixel_nn_dev_accuracy: f64,
    pub raw_pixel_verification_accuracy: f64,
    /// +-infinity (accept / reject every unknown) as "inf" / "-inf" in JSON.
    #[serde(serialize_with = "crate::store::records::f64_or_infinity")]
    pub raw_pixel_verification_threshold: f64,
    pub all_no_match_verification_accuracy: f64,
    pub majority_class_dev_accuracy: f64,
    /// Images left out as unreadable (`data.on_bad_image = "skip"`).
    pub skipped_images: Vec<String>,
}

/// Computes the baselines of a data set for a recipe's verification settings.
pub fn baselines(data: &CourseData, recipe: &Recipe) -> Result<Baselines, EngineError> {
    let v = &recipe.verification;
    let skip = recipe.data.on_bad_image == crate::recipe::BadImagePolicy::Skip;
    let pixels = |paths: &[PathBuf]| -> Result<Embedded, EngineError> {
        let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
        let (rows, skipped) = crate::data::nn_baseline::load_all(&refs, skip)?;
        let kept: Vec<usize> = (0..paths.len()).filter(|&i| rows[i].is_some()).collect();
        let ids = kept
            .iter()
            .map(|&i| crate::data::file_id(&paths[i]))
            .collect();
        let rows: Vec<Vec<f32>> = rows.into_iter().flatten().collect();
        Ok(Embedded {
            embeddings: Embeddings::from_rows(ids, &rows)?,
            kept,
            skipped,
        })
    };
    let (gallery, mut skipped) = gallery_of(data, recipe, pixels)?;
    let unknown = pixels(&data.unknown_dev)?;
    skipped.extend(unknown.skipped);
    let unknown = unknown.embeddings;
    let matches = gallery.best_matches(&unknown)?;
    let truth = dev_truth(data, &unknown);
    let t = verify::resolve_threshold(v.threshold, v.metric, Some((&matches[..], &truth[..])))?;
    let decisions = verify::decide(&matches, t);
    let m = verify::verification_metrics(&decisions, &truth)?;
    let no_match = truth
        .iter()
        .filter(|t| t.as_str() == verify::NO_MATCH)
        .count() as f64
        / truth.len().max(1) as f64;
    let mut counts = std::collections::HashMap::new();
    for s in &data.dev {
        *counts.entry(s.label).or_insert(0usize) += 1;
    }
    let majority =
        counts.values().max().copied().unwrap_or(0) as f64 / data.dev.len().max(1) as f64;
    let (nn_accuracy, nn_skipped) = crate::data::raw_pixel_nn_accuracy(data, skip)?;
    skipped.extend(nn_skipped);
    let mut skipped_images: Vec<String> = skipped
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    skipped_images.sort();
    skipped_images.dedup();
    Ok(Baselines {
        raw_pixel_nn_dev_accuracy: nn_accuracy,
        skipped_images,
        raw_pixel_verification_accuracy: m.accuracy,
        raw_pixel_verification_threshold: verify::natural_threshold(v.metric, t),
        all_no_match_verification_accuracy: no_match,
        majority_class_dev_accuracy: majority,
    })
}
