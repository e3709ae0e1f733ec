//! Matching throughput. The full-size benchmark (10,000 unknowns x 10,000 known identities,
//! 512-d) is `#[ignore]`d: run it with
//! `cargo test --release --test verify_bench -- --ignored --nocapture`.

use runner::recipe::SimilarityMetric;
use runner::verify::{bench::bench_matching_with, bench_matching};

#[test]
fn small_bench_runs() {
    let r = bench_matching(300, 200, 16).unwrap();
    assert_eq!((r.n_unknown, r.n_known, r.dim), (300, 200, 16));
    assert!(r.total_seconds > 0.0 && r.gflops > 0.0);
    let r = bench_matching_with(50, 40, 8, SimilarityMetric::Euclidean).unwrap();
    assert!(r.comparisons_per_sec > 0.0);
}

#[test]
#[ignore]
fn bench_10k_by_10k_512d() {
    for metric in [SimilarityMetric::Cosine, SimilarityMetric::Euclidean] {
        // Best of three: the machine is shared.
        let mut best: Option<runner::verify::MatchBench> = None;
        for _ in 0..3 {
            let r = bench_matching_with(10_000, 10_000, 512, metric).unwrap();
            eprintln!(
                "{metric:?}: gallery {:.3}s match {:.3}s total {:.3}s ({:.1} GFLOP/s, {} threads)",
                r.gallery_seconds, r.match_seconds, r.total_seconds, r.gflops, r.threads
            );
            if best
                .as_ref()
                .is_none_or(|b| r.total_seconds < b.total_seconds)
            {
                best = Some(r);
            }
        }
        let best = best.unwrap();
        println!("{}", serde_json::to_string(&best).unwrap());
    }
}
