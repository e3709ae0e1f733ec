//! Scores: open-set verification accuracy (the course metric), accuracy among unknowns with
//! a match, impostor rejection; for pairs data ROC AUC, EER and TAR at a FAR; classification
//! accuracy.
//!
//! Definitions (`n000000` marks an unknown without a match, "impostor"):
//! - `accuracy` = unknowns mapped to their true label (identity or `n000000`) / all unknowns;
//! - `accuracy_known` = the same, among unknowns whose truth is a known identity (`None` when
//!   there are none, e.g. an all-impostor set);
//! - `impostor_rejection` = impostors answered `n000000` / impostors (`None` without impostors).
//!
//! Pairs (`same[i]`: the pair shows one person; higher score = more alike; a pair is accepted
//! when `score >= t`): FAR(t) = accepted impostor pairs / impostor pairs, TAR(t) = accepted
//! genuine pairs / genuine pairs, FRR = 1 - TAR. The ROC's operating points are the thresholds
//! `+inf` and every distinct score.
//! - ROC AUC is the Mann-Whitney statistic: P(genuine score > impostor score) + 0.5 P(equal).
//! - EER: where FAR = FRR, linearly interpolated between the two operating points around the
//!   crossing (exact when an operating point has FAR = FRR).
//! - TAR@FAR x: the TAR of the lowest threshold whose FAR is `<= x` (so with fewer than `1/x`
//!   impostor pairs it is the TAR at zero false accepts).

use serde::Serialize;

use super::{VerifyError, NO_MATCH};

/// Open-set verification scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VerificationMetrics {
    pub accuracy: f64,
    pub accuracy_known: Option<f64>,
    pub impostor_rejection: Option<f64>,
    /// All unknowns.
    pub n: usize,
    /// Unknowns whose truth is a known identity.
    pub n_known: usize,
    /// Unknowns whose truth is `n000000`.
    pub n_impostors: usize,
}

/// Scores predicted labels (identities or `n000000`) against the truth.
pub fn verification_metrics<P: AsRef<str>, T: AsRef<str>>(
    predicted: &[P],
    truth: &[T],
) -> Result<VerificationMetrics, VerifyError> {
    check_lengths("verification metrics", predicted.len(), truth.len())?;
    let (mut correct, mut n_known, mut known_ok, mut n_imp, mut imp_ok) = (0, 0, 0, 0, 0);
    for (p, t) in predicted.iter().zip(truth) {
        let (p, t) = (p.as_ref(), t.as_ref());
        let ok = p == t;
        correct += ok as usize;
        if t == NO_MATCH {
            n_imp += 1;
            imp_ok += ok as usize;
        } else {
            n_known += 1;
            known_ok += ok as usize;
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    Ok(VerificationMetrics {
        accuracy: correct as f64 / predicted.len() as f64,
        accuracy_known: ratio(known_ok, n_known),
        impostor_rejection: ratio(imp_ok, n_imp),
        n: predicted.len(),
        n_known,
        n_impostors: n_imp,
    })
}

/// Fraction of `predicted[i] == truth[i]` (classification accuracy).
pub fn classification_accuracy<T: PartialEq>(
    predicted: &[T],
    truth: &[T],
) -> Result<f64, VerifyError> {
    check_lengths("classification accuracy", predicted.len(), truth.len())?;
    let ok = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    Ok(ok as f64 / predicted.len() as f64)
}

fn check_lengths(what: &'static str, left: usize, right: usize) -> Result<(), VerifyError> {
    if left != right {
        return Err(VerifyError::LengthMismatch { what, left, right });
    }
    if left == 0 {
        return Err(VerifyError::Empty { what });
    }
    Ok(())
}

/// Pairs-data scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairMetrics {
    pub roc_auc: f64,
    pub eer: f64,
    pub tar_at_far_1e2: f64,
    pub tar_at_far_1e3: f64,
    pub n_genuine: usize,
    pub n_impostor: usize,
}

/// All pairs metrics at once.
pub fn pair_metrics(scores: &[f64], same: &[bool]) -> Result<PairMetrics, VerifyError> {
    let roc = Roc::new(scores, same)?;
    Ok(PairMetrics {
        roc_auc: roc.auc,
        eer: roc.eer(),
        tar_at_far_1e2: roc.tar_at_far(1e-2),
        tar_at_far_1e3: roc.tar_at_far(1e-3),
        n_genuine: roc.n_pos,
        n_impostor: roc.n_neg,
    })
}

/// ROC AUC as the Mann-Whitney statistic (ties count one half).
pub fn roc_auc(scores: &[f64], same: &[bool]) -> Result<f64, VerifyError> {
    Ok(Roc::new(scores, same)?.auc)
}

/// Equal error rate (see the module docs for the interpolation).
pub fn eer(scores: &[f64], same: &[bool]) -> Result<f64, VerifyError> {
    Ok(Roc::new(scores, same)?.eer())
}

/// True accept rate at a false accept rate of at most `far` (in `[0, 1]`).
pub fn tar_at_far(scores: &[f64], same: &[bool], far: f64) -> Result<f64, VerifyError> {
    if !(0.0..=1.0).contains(&far) {
        return Err(VerifyError::OutOfRange {
            what: "FAR",
            value: far,
            range: "0 to 1",
        });
    }
    Ok(Roc::new(scores, same)?.tar_at_far(far))
}

/// The ROC's operating points, from threshold `+inf` down to the lowest score.
struct Roc {
    /// `(far, tar)` per operating point; the first is `(0, 0)`, the last `(1, 1)`.
    points: Vec<(f64, f64)>,
    auc: f64,
    n_pos: usize,
    n_neg: usize,
}

impl Roc {
    fn new(scores: &[f64], same: &[bool]) -> Result<Roc, VerifyError> {
        check_lengths("pairs (scores vs labels)", scores.len(), same.len())?;
        if let Some(row) = scores.iter().position(|s| !s.is_finite()) {
            return Err(VerifyError::NonFinite {
                what: "pair scores",
                row,
            });
        }
        let n_pos = same.iter().filter(|s| **s).count();
        let n_neg = same.len() - n_pos;
        if n_pos == 0 || n_neg == 0 {
            return Err(VerifyError::Degenerate {
                what: "pairs metrics",
                needs: "at least one genuine and one impostor pair",
            });
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let (p, n) = (n_pos as f64, n_neg as f64);
        let mut points = vec![(0.0, 0.0)];
        let (mut tp, mut fp) = (0usize, 0usize);
        // Mann-Whitney: each genuine counts the impostors strictly below it, plus half of
        // those tied with it.
        let mut wins = 0.0f64;
        let mut k = 0;
        while k < order.len() {
            let v = scores[order[k]];
            let (mut gtp, mut gfp) = (0usize, 0usize);
            while k < order.len() && scores[order[k]] == v {
                if same[order[k]] {
                    gtp += 1;
                } else {
                    gfp += 1;
                }
                k += 1;
            }
            let below = n_neg - fp - gfp;
            wins += gtp as f64 * (below as f64 + 0.5 * gfp as f64);
            tp += gtp;
            fp += gfp;
            points.push((fp as f64 / n, tp as f64 / p));
        }
        Ok(Roc {
            points,
            auc: wins / (p * n),
            n_pos,
            n_neg,
        })
    }

    fn eer(&self) -> f64 {
        // d = FAR - FRR rises from -1 (threshold +inf) to +1 (lowest threshold).
        let d = |(far, tar): (f64, f64)| far - (1.0 - tar);
        let mut prev = self.points[0];
        for &pt in &self.points[1..] {
            let (d0, d1) = (d(prev), d(pt));
            if d1 >= 0.0 {
                let alpha = if d1 == d0 { 0.0 } else { -d0 / (d1 - d0) };
                return prev.0 + alpha * (pt.0 - prev.0);
            }
            prev = pt;
        }
        // Unreachable for valid input (the last point has FAR = 1, FRR = 0).
        prev.0
    }

    fn tar_at_far(&self, far: f64) -> f64 {
        self.points
            .iter()
            .filter(|(f, _)| *f <= far)
            .map(|(_, t)| *t)
            .fold(0.0, f64::max)
    }
}
