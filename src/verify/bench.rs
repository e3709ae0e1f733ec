//! Matching throughput: random embeddings (seeded), one image per known identity, timed
//! gallery preparation and best-match search (one matrix product per block of unknowns).

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use super::{Embeddings, Gallery, VerifyError};
use crate::recipe::{GalleryMode, SimilarityMetric};

/// What [`bench_matching`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct MatchBench {
    pub n_unknown: usize,
    pub n_known: usize,
    pub dim: usize,
    pub metric: SimilarityMetric,
    /// Building the gallery (normalisation, grouping), seconds.
    pub gallery_seconds: f64,
    /// Best match of every unknown (normalisation, matrix products, argmax), seconds.
    pub match_seconds: f64,
    /// `gallery_seconds + match_seconds`.
    pub total_seconds: f64,
    /// Unknown-known comparisons per second over `total_seconds`.
    pub comparisons_per_sec: f64,
    /// `2 * n_unknown * n_known * dim / total_seconds / 1e9`.
    pub gflops: f64,
    /// Rayon threads available to the matrix product.
    pub threads: usize,
}

/// Times cosine matching of `n_unknown` unknowns against `n_known` identities of `dim`-d
/// random embeddings.
pub fn bench_matching(
    n_unknown: usize,
    n_known: usize,
    dim: usize,
) -> Result<MatchBench, VerifyError> {
    bench_matching_with(n_unknown, n_known, dim, SimilarityMetric::Cosine)
}

/// [`bench_matching`] for a chosen metric.
pub fn bench_matching_with(
    n_unknown: usize,
    n_known: usize,
    dim: usize,
    metric: SimilarityMetric,
) -> Result<MatchBench, VerifyError> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut random = |n: usize, prefix: &str| {
        let data: Vec<f32> = (0..n * dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let ids = (0..n).map(|i| format!("{prefix}{i:06}")).collect();
        Embeddings::new(ids, data, dim)
    };
    let known = random(n_known, "id")?;
    let unknown = random(n_unknown, "u")?;
    let labels = known.ids().to_vec();

    let t0 = Instant::now();
    let gallery = Gallery::build(&known, &labels, metric, GalleryMode::Mean)?;
    let gallery_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let matches = gallery.best_matches(&unknown)?;
    let match_seconds = t1.elapsed().as_secs_f64();
    std::hint::black_box(&matches);

    let total_seconds = gallery_seconds + match_seconds;
    let comparisons = n_unknown as f64 * n_known as f64;
    Ok(MatchBench {
        n_unknown,
        n_known,
        dim,
        metric,
        gallery_seconds,
        match_seconds,
        total_seconds,
        comparisons_per_sec: comparisons / total_seconds,
        gflops: 2.0 * comparisons * dim as f64 / total_seconds / 1e9,
        threads: rayon::current_num_threads(),
    })
}
