//! The open-set pipeline on embeddings, end to end: best matches, the threshold (fixed, or
//! tuned on the labelled set itself), the decisions and their metrics; or, for an unlabelled
//! set, the `(id, label)` rows of a submission.
//!
//! Typical use: `verify-dev` = `score_open_set(&gallery, &dev, &dev_truth, cfg.threshold)`;
//! `verify-test` = tune on dev (its `score_threshold`), then `predict_open_set` on test, or
//! `score_open_set(.., ThresholdSpec::Fixed(report.threshold))` when test has labels.

use super::metrics::{verification_metrics, VerificationMetrics};
use super::threshold::{natural_threshold, score_threshold, tune_threshold};
use super::{decide, Embeddings, Gallery, Match, VerifyError};
use crate::recipe::ThresholdSpec;

/// What [`score_open_set`] found.
#[derive(Debug, Clone)]
pub struct OpenSetReport {
    /// The threshold in the metric's natural unit (similarity, or distance); may be `±inf`
    /// when tuning found that accepting or rejecting everything is best.
    pub threshold: f64,
    /// The same threshold on the higher-is-better score scale.
    pub score_threshold: f64,
    /// Whether the threshold was tuned on this set.
    pub tuned: bool,
    pub metrics: VerificationMetrics,
    /// Best match of each unknown, in the unknowns' order.
    pub matches: Vec<Match>,
    /// Each unknown's label: a known identity or `n000000`.
    pub predictions: Vec<String>,
}

/// Scores a labelled set of unknowns (`truth[i]`: identity of `unknown.ids()[i]`, or
/// `n000000`). `ThresholdSpec::Tune` tunes on this set; `Fixed(t)` is in natural units.
pub fn score_open_set<S: AsRef<str>>(
    gallery: &Gallery,
    unknown: &Embeddings,
    truth: &[S],
    spec: ThresholdSpec,
) -> Result<OpenSetReport, VerifyError> {
    if truth.len() != unknown.len() {
        return Err(VerifyError::LengthMismatch {
            what: "open-set scoring (labels vs unknowns)",
            left: truth.len(),
            right: unknown.len(),
        });
    }
    let matches = gallery.best_matches(unknown)?;
    let metric = gallery.metric();
    let (score_thr, tuned) = match spec {
        ThresholdSpec::Tune => (tune_threshold(&matches, truth)?.threshold, true),
        ThresholdSpec::Fixed(v) if v.is_nan() => {
            return Err(VerifyError::OutOfRange {
                what: "verification.threshold",
                value: v,
                range: "a number",
            })
        }
        ThresholdSpec::Fixed(v) => (score_threshold(metric, v), false),
    };
    let predictions = decide(&matches, score_thr);
    let metrics = verification_metrics(&predictions, truth)?;
    Ok(OpenSetReport {
        threshold: natural_threshold(metric, score_thr),
        score_threshold: score_thr,
        tuned,
        metrics,
        matches,
        predictions,
    })
}

/// Labels an unlabelled set with a *score* threshold (e.g. `OpenSetReport::score_threshold`
/// from dev): `(id, label)` rows in the unknowns' order, ready for `write_submission`.
pub fn predict_open_set(
    gallery: &Gallery,
    unknown: &Embeddings,
    score_threshold: f64,
) -> Result<Vec<(String, String)>, VerifyError> {
    let matches = gallery.best_matches(unknown)?;
    Ok(unknown
        .ids()
        .iter()
        .cloned()
        .zip(decide(&matches, score_threshold))
        .collect())
}
