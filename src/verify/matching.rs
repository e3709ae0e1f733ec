//! One-to-many matching: the gallery of known identities, similarity as one matrix product
//! (unknown x known, candle's CPU matmul, i.e. the `gemm` crate), and the open-set decision.
//!
//! Conventions (see also the module docs of `verify`):
//! - Scores are higher-is-better: cosine similarity, or the negative Euclidean distance.
//! - Cosine normalises every unknown and every gallery image to unit length first. Euclidean uses
//!   the embeddings as given (normalise them beforehand if wanted).
//! - `GalleryMode::Mean`: an identity is its mean embedding (for cosine: the mean of the
//!   normalised images, re-normalised). `GalleryMode::Max`: an identity's score is its best
//!   image's score.
//! - Identities are sorted (byte-wise `String` order). When several identities share the best
//!   score, the one that comes first in that order wins.
//! - The decision accepts the best identity when `score >= threshold` (a *score* threshold;
//!   `threshold::score_threshold` converts a user's number), otherwise answers `n000000`.
//! - The best identity is chosen on the matrix product's values; its reported score is then
//!   recomputed exactly (f64 accumulation, and directly `|u - g|` for Euclidean, avoiding the
//!   cancellation of `|u|² + |g|² - 2u·g`).

use std::collections::BTreeMap;

use candle_core::{Device, Storage, Tensor};
use rayon::prelude::*;

use super::embeddings::{dot, l2_normalize_rows, squared_distance};
use super::{Embeddings, VerifyError, NO_MATCH};
use crate::recipe::{GalleryMode, SimilarityMetric};

/// Unknown rows multiplied per matrix product: bounds the score block to
/// `CHUNK_ROWS * gallery rows * 4` bytes (40 MB for 10,000 gallery rows).
const CHUNK_ROWS: usize = 1024;

/// The best known identity for one unknown face.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// The identity's name.
    pub identity: String,
    /// Its index in [`Gallery::identities`].
    pub index: usize,
    /// Higher is better: cosine similarity or negative Euclidean distance.
    pub score: f32,
}

/// Per-identity scores of every unknown: `data[u * cols + j]` is unknown `u` against identity
/// `identities[j]`. Holds `rows * cols` floats: for diagnostics and small sets; use
/// [`Gallery::best_matches`] at scale.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreMatrix {
    pub rows: usize,
    pub cols: usize,
    pub identities: Vec<String>,
    pub data: Vec<f32>,
}

impl ScoreMatrix {
    pub fn get(&self, unknown: usize, identity: usize) -> f32 {
        self.data[unknown * self.cols + identity]
    }
}

/// The known identities, prepared for matching.
#[derive(Debug, Clone)]
pub struct Gallery {
    identities: Vec<String>,
    /// Mean: one row per identity. Max: every image, grouped by identity in sorted order.
    rows: Vec<f32>,
    /// Row -> identity index (non-decreasing).
    owner: Vec<usize>,
    /// `|g|²` per row (Euclidean only; empty for cosine).
    sq_norms: Vec<f32>,
    /// `rows` as a `(n_rows, dim)` CPU tensor, for the matrix product.
    tensor: Tensor,
    dim: usize,
    metric: SimilarityMetric,
    mode: GalleryMode,
}

impl Gallery {
    /// Builds a gallery from images and their identity labels (`labels[i]` for row `i`).
    /// Errors: no images, a length mismatch, an empty label, or the label `n000000`.
    pub fn build<S: AsRef<str>>(
        images: &Embeddings,
        labels: &[S],
        metric: SimilarityMetric,
        mode: GalleryMode,
    ) -> Result<Gallery, VerifyError> {
        if images.is_empty() {
            return Err(VerifyError::Empty { what: "gallery" });
        }
        if labels.len() != images.len() {
            return Err(VerifyError::LengthMismatch {
                what: "gallery (labels vs images)",
                left: labels.len(),
                right: images.len(),
            });
        }
        let dim = images.dim();
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, l) in labels.iter().enumerate() {
            let l = l.as_ref();
            if l.is_empty() || l == NO_MATCH {
                return Err(VerifyError::ReservedIdentity(l.to_string()));
            }
            groups.entry(l).or_default().push(i);
        }
        let mut source = images.data().to_vec();
        if metric == SimilarityMetric::Cosine {
            l2_normalize_rows(&mut source, dim);
        }
        let row = |i: usize| &source[i * dim..(i + 1) * dim];
        let identities: Vec<String> = groups.keys().map(|s| s.to_string()).collect();
        let mut rows = Vec::new();
        let mut owner = Vec::new();
        for (j, members) in groups.values().enumerate() {
            match mode {
                GalleryMode::Mean => {
                    let mut acc = vec![0f64; dim];
                    for &i in members {
                        for (a, v) in acc.iter_mut().zip(row(i)) {
                            *a += *v as f64;
                        }
                    }
                    let n = members.len() as f64;
                    rows.extend(acc.iter().map(|a| (*a / n) as f32));
                    owner.push(j);
                }
                GalleryMode::Max => {
                    for &i in members {
                        rows.extend_from_slice(row(i));
                        owner.push(j);
                    }
                }
            }
        }
        if metric == SimilarityMetric::Cosine && mode == GalleryMode::Mean {
            l2_normalize_rows(&mut rows, dim);
        }
        let sq_norms = match metric {
            SimilarityMetric::Cosine => Vec::new(),
            SimilarityMetric::Euclidean => rows.chunks_exact(dim).map(|g| dot(g, g)).collect(),
        };
        let tensor = Tensor::from_slice(&rows, (owner.len(), dim), &Device::Cpu)?;
        Ok(Gallery {
            identities,
            rows,
            owner,
            sq_norms,
            tensor,
            dim,
            metric,
            mode,
        })
    }

    /// The known identities, sorted.
    pub fn identities(&self) -> &[String] {
        &self.identities
    }

    pub fn metric(&self) -> SimilarityMetric {
        self.metric
    }

    pub fn mode(&self) -> GalleryMode {
        self.mode
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of embeddings compared per unknown (identities for Mean, images for Max).
    pub fn n_rows(&self) -> usize {
        self.owner.len()
    }

    fn grow(&self, r: usize) -> &[f32] {
        &self.rows[r * self.dim..(r + 1) * self.dim]
    }

    /// The unknowns as the matmul's left operand (normalised for cosine).
    fn prepare_unknown(&self, unknown: &Embeddings) -> Result<Vec<f32>, VerifyError> {
        if unknown.is_empty() {
            return Err(VerifyError::Empty { what: "unknowns" });
        }
        if unknown.dim() != self.dim {
            return Err(VerifyError::DimMismatch {
                left: unknown.dim(),
                right: self.dim,
            });
        }
        let mut u = unknown.data().to_vec();
        if self.metric == SimilarityMetric::Cosine {
            l2_normalize_rows(&mut u, self.dim);
        }
        Ok(u)
    }

    /// Runs `f(first_row, dots)` for each block of at most `CHUNK_ROWS` unknowns, where
    /// `dots` is the row-major `(block, n_rows)` matrix product `U_block · Gᵀ`.
    fn for_each_block(
        &self,
        u: &[f32],
        mut f: impl FnMut(usize, &[f32]),
    ) -> Result<(), VerifyError> {
        let n = u.len() / self.dim;
        let gt = self.tensor.t()?;
        let mut start = 0;
        while start < n {
            let len = CHUNK_ROWS.min(n - start);
            let block = Tensor::from_slice(
                &u[start * self.dim..(start + len) * self.dim],
                (len, self.dim),
                &Device::Cpu,
            )?;
            let dots = block.matmul(&gt)?;
            with_cpu_f32(&dots, |d| f(start, d))?;
            start += len;
        }
        Ok(())
    }

    /// The score from a dot product (`u_sq`: `|u|²`, Euclidean only).
    fn score_from_dot(&self, d: f32, u_sq: f32, r: usize) -> f32 {
        match self.metric {
            SimilarityMetric::Cosine => d,
            SimilarityMetric::Euclidean => -(u_sq + self.sq_norms[r] - 2.0 * d).max(0.0).sqrt(),
        }
    }

    /// The exact score of unknown row `u` against gallery row `r`.
    fn exact_score(&self, u: &[f32], r: usize) -> f32 {
        let g = self.grow(r);
        match self.metric {
            SimilarityMetric::Cosine => dot(u, g),
            SimilarityMetric::Euclidean => -squared_distance(u, g).sqrt(),
        }
    }

    /// The best known identity of every unknown (in the unknowns' order), by one matrix
    /// product per block of unknowns. Ties go to the identity first in sorted order.
    pub fn best_matches(&self, unknown: &Embeddings) -> Result<Vec<Match>, VerifyError> {
        let u = self.prepare_unknown(unknown)?;
        let n = u.len() / self.dim;
        let cols = self.n_rows();
        let mut best_row = vec![0usize; n];
        self.for_each_block(&u, |start, dots| {
            let out = &mut best_row[start..start + dots.len() / cols];
            out.par_iter_mut()
                .zip(dots.par_chunks(cols))
                .for_each(|(best, drow)| *best = self.argmax_row(drow));
        })?;
        Ok(best_row
            .into_par_iter()
            .enumerate()
            .map(|(i, r)| {
                let index = self.owner[r];
                Match {
                    identity: self.identities[index].clone(),
                    index,
                    score: self.exact_score(&u[i * self.dim..(i + 1) * self.dim], r),
                }
            })
            .collect())
    }

    /// Index of the best gallery row for one row of dot products; the first one on ties
    /// (rows are grouped by identity in sorted order, so the first identity wins).
    fn argmax_row(&self, drow: &[f32]) -> usize {
        match self.metric {
            // Cosine: the score is the dot product.
            SimilarityMetric::Cosine => first_argmax(drow.len(), |r| drow[r]),
            // Euclidean: the nearest row maximises 2u·g - |g|² (|u|² is the same for all).
            SimilarityMetric::Euclidean => {
                let g = &self.sq_norms[..drow.len()];
                first_argmax(drow.len(), |r| 2.0 * drow[r] - g[r])
            }
        }
    }

    /// Every unknown's score against every identity (Max mode: the identity's best image).
    pub fn score_matrix(&self, unknown: &Embeddings) -> Result<ScoreMatrix, VerifyError> {
        let cols = self.identities.len();
        let mut data = Vec::with_capacity(unknown.len() * cols);
        self.for_each_score_row(unknown, |_, row| data.extend_from_slice(row))?;
        Ok(ScoreMatrix {
            rows: unknown.len(),
            cols,
            identities: self.identities.clone(),
            data,
        })
    }

    /// Calls `f(u, scores)` for every unknown `u` in order, where `scores[j]` is its score
    /// against identity `identities()[j]` (Max mode: the identity's best image): the rows of
    /// [`Gallery::score_matrix`] without holding them all.
    pub fn for_each_score_row(
        &self,
        unknown: &Embeddings,
        mut f: impl FnMut(usize, &[f32]),
    ) -> Result<(), VerifyError> {
        let u = self.prepare_unknown(unknown)?;
        let cols = self.identities.len();
        let n_rows = self.n_rows();
        let mut out = vec![f32::NEG_INFINITY; cols];
        self.for_each_block(&u, |start, dots| {
            for (k, drow) in dots.chunks_exact(n_rows).enumerate() {
                let i = start + k;
                let u_sq = match self.metric {
                    SimilarityMetric::Cosine => 0.0,
                    SimilarityMetric::Euclidean => {
                        let r = &u[i * self.dim..(i + 1) * self.dim];
                        dot(r, r)
                    }
                };
                out.fill(f32::NEG_INFINITY);
                for (r, &d) in drow.iter().enumerate() {
                    let s = self.score_from_dot(d, u_sq, r);
                    let slot = &mut out[self.owner[r]];
                    if s > *slot {
                        *slot = s;
                    }
                }
                f(i, &out);
            }
        })
    }
}

/// The first index of the largest `value(i)` for `i < n` (0 when `n == 0` or every value is
/// NaN). Two passes: a lane-wise maximum the compiler vectorises, then the first index
/// reaching it (`value` must be deterministic, so equality is exact).
fn first_argmax(n: usize, value: impl Fn(usize) -> f32) -> usize {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let full = n - n % LANES;
    for base in (0..full).step_by(LANES) {
        for (j, l) in lanes.iter_mut().enumerate() {
            *l = l.max(value(base + j));
        }
    }
    let mut best = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for i in full..n {
        best = best.max(value(i));
    }
    (0..n).find(|&i| value(i) == best).unwrap_or(0)
}

/// Calls `f` on a CPU f32 tensor's contiguous data without copying when possible.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, VerifyError> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            let s = cpu.as_slice::<f32>()?;
            return Ok(f(&s[a..b]));
        }
    }
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&v))
}

/// The open-set decision for one unknown: its best identity if `score >= threshold`
/// (a score threshold, higher is better), else `n000000`.
pub fn decide_one(m: &Match, threshold: f64) -> &str {
    if m.score as f64 >= threshold {
        &m.identity
    } else {
        NO_MATCH
    }
}

/// [`decide_one`] for every unknown, in order.
pub fn decide(matches: &[Match], threshold: f64) -> Vec<String> {
    matches
        .iter()
        .map(|m| decide_one(m, threshold).to_string())
        .collect()
}

/// Row-wise scores of pairs: `a.row(i)` against `b.row(i)` (for pairs data: ROC, EER).
pub fn pair_scores(
    a: &Embeddings,
    b: &Embeddings,
    metric: SimilarityMetric,
) -> Result<Vec<f32>, VerifyError> {
    if a.len() != b.len() {
        return Err(VerifyError::LengthMismatch {
            what: "pairs",
            left: a.len(),
            right: b.len(),
        });
    }
    if a.is_empty() {
        return Err(VerifyError::Empty { what: "pairs" });
    }
    if a.dim() != b.dim() {
        return Err(VerifyError::DimMismatch {
            left: a.dim(),
            right: b.dim(),
        });
    }
    Ok((0..a.len())
        .map(|i| {
            let (x, y) = (a.row(i), b.row(i));
            match metric {
                SimilarityMetric::Cosine => {
                    let n = (dot(x, x).sqrt().max(super::embeddings::NORM_EPS))
                        * (dot(y, y).sqrt().max(super::embeddings::NORM_EPS));
                    dot(x, y) / n
                }
                SimilarityMetric::Euclidean => -squared_distance(x, y).sqrt(),
            }
        })
        .collect())
}
