//! The acceptance threshold: `threshold = number` (in the metric's natural unit) or
//! `threshold = "tune"` (maximise open-set accuracy on labelled unknowns).
//!
//! Units: matching works on higher-is-better *scores* (cosine similarity, or negative
//! Euclidean distance). Users' numbers are *natural* thresholds: a similarity for cosine
//! (accept when `sim >= t`), a distance for Euclidean (accept when `dist <= t`).
//! [`score_threshold`] and [`natural_threshold`] convert between the two.
//!
//! Tuning rule ([`tune_threshold`]): with the distinct best scores `v_1 < ... < v_m`, the
//! candidates are `-inf` (accept everything), the midpoints `(v_k + v_k+1) / 2`, and `+inf`
//! (reject everything). Each candidate's accuracy is that of [`super::decide`] against the
//! labels. The threshold with the highest accuracy wins; **on equal accuracy the smallest
//! candidate wins** (the one accepting the most matches). Infinite results are possible (e.g.
//! `-inf` when the labelled set has no impostors); callers that print JSON should map them.

use super::{Match, VerifyError, NO_MATCH};
use crate::recipe::{SimilarityMetric, ThresholdSpec};

/// The outcome of [`tune_threshold`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TunedThreshold {
    /// A score threshold (accept when `score >= threshold`); may be `±inf`.
    pub threshold: f64,
    /// Open-set accuracy on the tuning set at that threshold.
    pub accuracy: f64,
    /// How many candidate thresholds were evaluated.
    pub candidates: usize,
}

/// A user's threshold (similarity for cosine, distance for Euclidean) as a score threshold.
pub fn score_threshold(metric: SimilarityMetric, natural: f64) -> f64 {
    match metric {
        SimilarityMetric::Cosine => natural,
        SimilarityMetric::Euclidean => -natural,
    }
}

/// A score threshold in the metric's natural unit (similarity, or distance), for reports.
pub fn natural_threshold(metric: SimilarityMetric, score: f64) -> f64 {
    match metric {
        SimilarityMetric::Cosine => score,
        SimilarityMetric::Euclidean => -score,
    }
}

/// The score threshold a recipe asks for: a fixed number is converted with
/// [`score_threshold`]; `"tune"` needs the labelled tuning set `(matches, truth)`.
pub fn resolve_threshold<S: AsRef<str>>(
    spec: ThresholdSpec,
    metric: SimilarityMetric,
    tuning: Option<(&[Match], &[S])>,
) -> Result<f64, VerifyError> {
    match spec {
        ThresholdSpec::Fixed(v) if v.is_nan() => Err(VerifyError::OutOfRange {
            what: "verification.threshold",
            value: v,
            range: "a number",
        }),
        ThresholdSpec::Fixed(v) => Ok(score_threshold(metric, v)),
        ThresholdSpec::Tune => match tuning {
            Some((matches, truth)) => Ok(tune_threshold(matches, truth)?.threshold),
            None => Err(VerifyError::Degenerate {
                what: "verification.threshold = \"tune\"",
                needs: "labelled unknowns (unknown_dev) to tune on",
            }),
        },
    }
}

/// Picks the score threshold maximising open-set accuracy of `matches` against `truth`
/// (`truth[i]`: the known identity of unknown `i`, or `n000000`). See the module docs for
/// the candidates and the tie rule. O(n log n).
pub fn tune_threshold<S: AsRef<str>>(
    matches: &[Match],
    truth: &[S],
) -> Result<TunedThreshold, VerifyError> {
    if matches.len() != truth.len() {
        return Err(VerifyError::LengthMismatch {
            what: "threshold tuning (matches vs labels)",
            left: matches.len(),
            right: truth.len(),
        });
    }
    if matches.is_empty() {
        return Err(VerifyError::Empty {
            what: "threshold tuning",
        });
    }
    if let Some(row) = matches.iter().position(|m| !m.score.is_finite()) {
        return Err(VerifyError::NonFinite {
            what: "threshold tuning scores",
            row,
        });
    }
    // Per item: its score, whether accepting is correct, whether rejecting is correct.
    let mut items: Vec<(f64, bool, bool)> = matches
        .iter()
        .zip(truth)
        .map(|(m, t)| {
            let t = t.as_ref();
            (m.score as f64, m.identity == t, t == NO_MATCH)
        })
        .collect();
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = items.len();
    // Start at -inf: everything accepted.
    let mut correct = items.iter().filter(|it| it.1).count();
    let mut best = (f64::NEG_INFINITY, correct);
    let mut candidates = 1;
    let mut k = 0;
    while k < n {
        // Move the threshold above the group of items sharing score items[k].0.
        let v = items[k].0;
        while k < n && items[k].0 == v {
            correct = correct - items[k].1 as usize + items[k].2 as usize;
            k += 1;
        }
        let t = if k < n {
            (v + items[k].0) / 2.0
        } else {
            f64::INFINITY
        };
        candidates += 1;
        if correct > best.1 {
            best = (t, correct);
        }
    }
    Ok(TunedThreshold {
        threshold: best.0,
        accuracy: best.1 as f64 / n as f64,
        candidates,
    })
}
