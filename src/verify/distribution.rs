//! The distribution of a model's verification scores on a labelled set of unknowns, kept per
//! verified epoch for the report's ROC, DET, score histograms, accuracy against threshold and
//! DIR at FPIR:
//! - 512-bin histograms of **genuine** scores (a known unknown against its own identity) and
//!   **impostor** scores (every unknown against every other identity): all one-to-one
//!   comparisons of the one-to-many search, as a verification ROC counts them;
//! - each probe's **top-1** result (score, whether that identity is right, whether the probe's
//!   identity is known), from which any threshold's open-set decisions follow;
//! - the wrongly decided probes at the threshold used, the surest mistakes first.
//!
//! Sizes are capped ([`SCORE_BINS`], [`MAX_PROBES`], [`MAX_WRONG`]) so that a store of many
//! runs and epochs stays small; the caps are stated in `docs/report.md`.

use serde::{Deserialize, Serialize};

use super::{Embeddings, Gallery, Match, VerifyError, NO_MATCH};
use crate::recipe::SimilarityMetric;

/// Bins of each score histogram.
pub const SCORE_BINS: usize = 512;
/// Probes whose top-1 result is kept per epoch; a larger set keeps every k-th probe.
pub const MAX_PROBES: usize = 20_000;
/// Wrong decisions kept per epoch (with their image ids, for thumbnails).
pub const MAX_WRONG: usize = 32;

/// A probe's top-1 result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeTop1 {
    /// The best identity's score (higher is better).
    pub score: f32,
    /// Whether the best identity is the probe's own.
    pub correct: bool,
    /// Whether the probe's identity is in the gallery (false: it should be `n000000`).
    pub known: bool,
}

/// An unknown face decided wrongly at the threshold used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrongDecision {
    /// The image id (file name).
    pub id: String,
    /// Its true label (an identity or `n000000`).
    pub truth: String,
    /// The decision (an identity or `n000000`).
    pub decided: String,
    /// Its top-1 score.
    pub score: f32,
    /// The image's path, where the caller knows it (for the report's thumbnails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// What [`score_distribution`] keeps of one scoring of a labelled set.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreDistribution {
    /// The histograms' range on the score scale: `[lo, hi]` in [`SCORE_BINS`] equal bins
    /// (cosine: `[-1, 1]`; Euclidean: the scores' own range).
    pub lo: f64,
    pub hi: f64,
    /// Genuine and impostor score counts per bin.
    pub genuine: Vec<u32>,
    pub impostor: Vec<u32>,
    /// Top-1 results of the probes kept (all, or every k-th beyond [`MAX_PROBES`]).
    pub probes: Vec<ProbeTop1>,
    /// How many probes were scored.
    pub probes_total: usize,
    /// The threshold used (score scale).
    pub score_threshold: f64,
    /// The wrong decisions kept, the farthest from the threshold first.
    pub wrong: Vec<WrongDecision>,
    /// How many decisions were wrong.
    pub wrong_total: usize,
}

impl ScoreDistribution {
    /// The bin of a score (scores outside the range go to the first or last bin).
    pub fn bin_of(&self, score: f32) -> usize {
        bin_of(self.lo, self.hi, self.genuine.len(), score)
    }
}

fn bin_of(lo: f64, hi: f64, bins: usize, score: f32) -> usize {
    let x = ((score as f64 - lo) / (hi - lo) * bins as f64).floor();
    if x.is_nan() || x < 0.0 {
        0
    } else {
        (x as usize).min(bins - 1)
    }
}

/// The score distribution of a labelled set of unknowns: `matches` are `gallery`'s best
/// matches of `unknown` (as [`Gallery::best_matches`] gives them), `truth[i]` the identity of
/// unknown `i` or `n000000`, and `score_threshold` the decision threshold (score scale).
pub fn score_distribution<S: AsRef<str>>(
    gallery: &Gallery,
    unknown: &Embeddings,
    matches: &[Match],
    truth: &[S],
    score_threshold: f64,
) -> Result<ScoreDistribution, VerifyError> {
    let n = unknown.len();
    if truth.len() != n || matches.len() != n {
        return Err(VerifyError::LengthMismatch {
            what: "score distribution (labels, matches vs unknowns)",
            left: truth.len().min(matches.len()),
            right: n,
        });
    }
    let identities = gallery.identities();
    let own: Vec<Option<usize>> = truth
        .iter()
        .map(|t| {
            identities
                .binary_search_by(|i| i.as_str().cmp(t.as_ref()))
                .ok()
        })
        .collect();
    let (lo, hi) = match gallery.metric() {
        SimilarityMetric::Cosine => (-1.0, 1.0),
        SimilarityMetric::Euclidean => {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            gallery.for_each_score_row(unknown, |_, row| {
                for &s in row {
                    lo = lo.min(s);
                    hi = hi.max(s);
                }
            })?;
            let (lo, hi) = (lo as f64, hi as f64);
            if hi > lo {
                (lo, hi)
            } else {
                (lo, lo + 1.0)
            }
        }
    };
    let mut genuine = vec![0u32; SCORE_BINS];
    let mut impostor = vec![0u32; SCORE_BINS];
    gallery.for_each_score_row(unknown, |u, row| {
        for (j, &s) in row.iter().enumerate() {
            let b = bin_of(lo, hi, SCORE_BINS, s);
            if own[u] == Some(j) {
                genuine[b] += 1;
            } else {
                impostor[b] += 1;
            }
        }
    })?;
    let stride = n.div_ceil(MAX_PROBES).max(1);
    let probes = (0..n)
        .step_by(stride)
        .map(|i| ProbeTop1 {
            score: matches[i].score,
            correct: own[i] == Some(matches[i].index),
            known: truth[i].as_ref() != NO_MATCH,
        })
        .collect();
    let mut wrong: Vec<WrongDecision> = matches
        .iter()
        .zip(truth)
        .zip(unknown.ids())
        .filter_map(|((m, t), id)| {
            let decided = super::decide_one(m, score_threshold);
            (decided != t.as_ref()).then(|| WrongDecision {
                id: id.clone(),
                truth: t.as_ref().to_string(),
                decided: decided.to_string(),
                score: m.score,
                path: None,
            })
        })
        .collect();
    let wrong_total = wrong.len();
    // the surest mistakes first; ties in the unknowns' order
    wrong.sort_by(|a, b| {
        let (da, db) = (
            (a.score as f64 - score_threshold).abs(),
            (b.score as f64 - score_threshold).abs(),
        );
        db.total_cmp(&da)
    });
    wrong.truncate(MAX_WRONG);
    Ok(ScoreDistribution {
        lo,
        hi,
        genuine,
        impostor,
        probes,
        probes_total: n,
        score_threshold,
        wrong,
        wrong_total,
    })
}

/// Probe flags as one byte each: bit 0 = correct, bit 1 = known.
pub fn probe_flags(probes: &[ProbeTop1]) -> Vec<u8> {
    probes
        .iter()
        .map(|p| p.correct as u8 | (p.known as u8) << 1)
        .collect()
}

/// Probes from their scores and [`probe_flags`].
pub fn probes_from(scores: &[f32], flags: &[u8]) -> Vec<ProbeTop1> {
    scores
        .iter()
        .zip(flags)
        .map(|(&score, &f)| ProbeTop1 {
            score,
            correct: f & 1 != 0,
            known: f & 2 != 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::GalleryMode;

    fn emb(rows: &[[f32; 2]]) -> Embeddings {
        let ids = (0..rows.len()).map(|i| format!("{i:02}.jpg")).collect();
        Embeddings::from_rows(ids, &rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    fn gallery(metric: SimilarityMetric) -> Gallery {
        Gallery::build(
            &emb(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]]),
            &["a", "b", "c"],
            metric,
            GalleryMode::Mean,
        )
        .unwrap()
    }

    #[test]
    fn every_comparison_is_counted_once_in_the_bin_of_its_score() {
        for metric in [SimilarityMetric::Cosine, SimilarityMetric::Euclidean] {
            let g = gallery(metric);
            let u = emb(&[[0.9, 0.1], [0.2, 0.8], [-0.5, -0.5], [0.6, 0.8]]);
            let truth = ["a", "a", "n000000", "b"];
            let m = g.best_matches(&u).unwrap();
            let d = score_distribution(&g, &u, &m, &truth, 0.5).unwrap();
            // 3 known probes, one genuine score each; the rest impostors
            assert_eq!(d.genuine.iter().sum::<u32>(), 3);
            assert_eq!(d.impostor.iter().sum::<u32>(), 4 * 3 - 3);
            let sm = g.score_matrix(&u).unwrap();
            let mut genuine = vec![0u32; SCORE_BINS];
            let mut impostor = vec![0u32; SCORE_BINS];
            for (i, t) in truth.iter().enumerate() {
                for (j, id) in sm.identities.iter().enumerate() {
                    let b = d.bin_of(sm.get(i, j));
                    if id == t {
                        genuine[b] += 1
                    } else {
                        impostor[b] += 1
                    }
                }
            }
            assert_eq!((genuine, impostor), (d.genuine.clone(), d.impostor.clone()));
            let flags: Vec<(bool, bool)> = d.probes.iter().map(|p| (p.correct, p.known)).collect();
            // probe 1 ([0.2, 0.8]) is nearest to b, not its own a
            assert_eq!(
                flags,
                [(true, true), (false, true), (false, false), (true, true)]
            );
            assert_eq!(d.probes_total, 4);
        }
    }

    #[test]
    fn wrong_decisions_are_those_that_differ_from_the_truth_surest_first() {
        let g = gallery(SimilarityMetric::Cosine);
        let u = emb(&[[0.9, 0.1], [0.2, 0.8], [0.95, 0.05], [0.7, 0.7]]);
        let truth = ["a", "a", "n000000", "b"];
        let m = g.best_matches(&u).unwrap();
        let d = score_distribution(&g, &u, &m, &truth, 0.5).unwrap();
        // probe 1 goes to b (wrong identity); probe 2 is an accepted impostor; probe 3 (a tie
        // between a and b at 0.707) goes to a, the first in order
        let ids: Vec<&str> = d.wrong.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(d.wrong_total, 3);
        assert_eq!(ids, ["02.jpg", "01.jpg", "03.jpg"]);
        assert_eq!(d.wrong[0].decided, "a");
        assert_eq!(d.wrong[0].truth, "n000000");
    }

    #[test]
    fn flags_round_trip() {
        let p = vec![
            ProbeTop1 {
                score: 0.5,
                correct: true,
                known: false,
            },
            ProbeTop1 {
                score: -0.25,
                correct: false,
                known: true,
            },
        ];
        let scores: Vec<f32> = p.iter().map(|x| x.score).collect();
        assert_eq!(probes_from(&scores, &probe_flags(&p)), p);
    }
}
