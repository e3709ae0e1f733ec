//! Matching with hand-made embeddings: gallery modes, both metrics, ties, the open-set
//! decision, threshold tuning, and agreement with a naive pair-by-pair reference.

use runner::recipe::{GalleryMode, SimilarityMetric, ThresholdSpec};
use runner::verify::{
    decide, decide_one, natural_threshold, pair_scores, resolve_threshold, score_threshold,
    tune_threshold, verification_metrics, Embeddings, Gallery, Match, VerifyError, NO_MATCH,
};

const COS: SimilarityMetric = SimilarityMetric::Cosine;
const EUC: SimilarityMetric = SimilarityMetric::Euclidean;
const MEAN: GalleryMode = GalleryMode::Mean;
const MAX: GalleryMode = GalleryMode::Max;
const H: f32 = std::f32::consts::FRAC_1_SQRT_2;

fn emb(rows: &[[f32; 2]]) -> Embeddings {
    let ids = (0..rows.len()).map(|i| format!("x{i}")).collect();
    Embeddings::from_rows(ids, &rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-5
}

/// Gallery: bob [-1, 0]; alice [2, 0] and [0, 3] (labels deliberately unsorted).
fn gallery(metric: SimilarityMetric, mode: GalleryMode) -> Gallery {
    let images = emb(&[[-1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]);
    Gallery::build(&images, &["bob", "alice", "alice"], metric, mode).unwrap()
}

#[test]
fn cosine_mean_normalises_images_then_renormalises_the_mean() {
    let g = gallery(COS, MEAN);
    assert_eq!(g.identities(), ["alice", "bob"]);
    assert_eq!(g.n_rows(), 2);
    // alice = normalise(mean([1,0],[0,1])) = [h, h]; the raw mean [1, 1.5] would differ.
    let s = g
        .score_matrix(&emb(&[[1.0, 0.0], [0.0, -1.0], [5.0, 5.0]]))
        .unwrap();
    assert_eq!((s.rows, s.cols), (3, 2));
    assert!(close(s.get(0, 0), H) && close(s.get(0, 1), -1.0));
    assert!(close(s.get(1, 0), -H) && close(s.get(1, 1), 0.0));
    assert!(close(s.get(2, 0), 1.0) && close(s.get(2, 1), -H));
    let m = g
        .best_matches(&emb(&[[1.0, 0.0], [0.0, -1.0], [5.0, 5.0]]))
        .unwrap();
    assert_eq!(
        m.iter().map(|m| m.identity.as_str()).collect::<Vec<_>>(),
        ["alice", "bob", "alice"]
    );
    assert!(close(m[0].score, H) && close(m[1].score, 0.0) && close(m[2].score, 1.0));
    assert_eq!((m[0].index, m[1].index), (0, 1));
}

#[test]
fn cosine_max_takes_the_best_image_and_ties_go_to_the_first_identity() {
    let g = gallery(COS, MAX);
    assert_eq!(g.n_rows(), 3);
    let u = emb(&[[1.0, 0.0], [0.0, -1.0]]);
    let s = g.score_matrix(&u).unwrap();
    // [1,0]: alice max(1, 0) = 1, bob -1. [0,-1]: alice max(0, -1) = 0, bob 0 (a tie).
    assert!(close(s.get(0, 0), 1.0) && close(s.get(0, 1), -1.0));
    assert!(close(s.get(1, 0), 0.0) && close(s.get(1, 1), 0.0));
    let m = g.best_matches(&u).unwrap();
    assert_eq!(m[0].identity, "alice");
    assert!(close(m[0].score, 1.0));
    assert_eq!(
        m[1].identity, "alice",
        "tie -> first identity in sorted order"
    );
    assert!(close(m[1].score, 0.0));
}

#[test]
fn exact_ties_between_identities_pick_the_sorted_first() {
    let images = emb(&[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]);
    for mode in [MEAN, MAX] {
        for metric in [COS, EUC] {
            let g = Gallery::build(&images, &["zed", "amy", "mia"], metric, mode).unwrap();
            let m = g.best_matches(&emb(&[[0.0, 2.0]])).unwrap();
            assert_eq!(m[0].identity, "amy", "{metric:?} {mode:?}");
        }
    }
}

#[test]
fn euclidean_scores_are_negative_distances() {
    // alice [2,0], [0,2] -> mean [1,1]; bob [-1,0].
    let images = emb(&[[2.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]);
    let labels = ["alice", "alice", "bob"];
    let u = emb(&[[1.0, 0.0], [0.0, 0.0]]);
    let mean = Gallery::build(&images, &labels, EUC, MEAN).unwrap();
    let s = mean.score_matrix(&u).unwrap();
    assert!(close(s.get(0, 0), -1.0) && close(s.get(0, 1), -2.0));
    assert!(close(s.get(1, 0), -2f32.sqrt()) && close(s.get(1, 1), -1.0));
    let m = mean.best_matches(&u).unwrap();
    assert_eq!(
        (m[0].identity.as_str(), m[1].identity.as_str()),
        ("alice", "bob")
    );
    assert!(close(m[0].score, -1.0) && close(m[1].score, -1.0));
    // Max: alice = nearest image: [1,0] -> [2,0] at 1; [0,0] -> 2.
    let max = Gallery::build(&images, &labels, EUC, MAX).unwrap();
    let s = max.score_matrix(&u).unwrap();
    assert!(close(s.get(0, 0), -1.0) && close(s.get(1, 0), -2.0));
    // Euclidean does not normalise: [10, 0] is 8 from [2,0].
    let m = max.best_matches(&emb(&[[10.0, 0.0]])).unwrap();
    assert_eq!(m[0].identity, "alice");
    assert!(close(m[0].score, -8.0));
}

#[test]
fn decision_rule() {
    let m = Match {
        identity: "alice".into(),
        index: 0,
        score: 0.5,
    };
    assert_eq!(decide_one(&m, 0.5), "alice", "score >= threshold accepts");
    assert_eq!(decide_one(&m, 0.50001), NO_MATCH);
    assert_eq!(decide_one(&m, f64::NEG_INFINITY), "alice");
    assert_eq!(decide_one(&m, f64::INFINITY), NO_MATCH);
    let g = gallery(COS, MEAN);
    let matches = g.best_matches(&emb(&[[1.0, 0.0], [0.0, -1.0]])).unwrap();
    assert_eq!(decide(&matches, 0.5), ["alice", NO_MATCH]);
    assert_eq!(decide(&matches, -0.5), ["alice", "bob"]);
}

fn mk(items: &[(&str, f32)]) -> Vec<Match> {
    items
        .iter()
        .map(|(id, s)| Match {
            identity: id.to_string(),
            index: 0,
            score: *s,
        })
        .collect()
}

#[test]
fn tuning_picks_the_smallest_best_threshold() {
    // Sorted: 0.3 (impostor), 0.5 (right), 0.6 (impostor), 0.7 (wrong either way),
    // 0.8 (right), 0.9 (right). Correct counts per candidate:
    // -inf 3, 0.4 4, 0.55 3, 0.65 4, 0.75 4, 0.85 3, +inf 2 -> 0.4 (smallest of 4/6).
    let matches = mk(&[
        ("A", 0.9),
        ("B", 0.8),
        ("A", 0.6),
        ("C", 0.7),
        ("B", 0.3),
        ("A", 0.5),
    ]);
    let truth = ["A", "B", NO_MATCH, "B", NO_MATCH, "A"];
    let t = tune_threshold(&matches, &truth).unwrap();
    assert!((t.threshold - 0.4).abs() < 1e-6, "{t:?}");
    assert!((t.accuracy - 4.0 / 6.0).abs() < 1e-12);
    assert_eq!(t.candidates, 7);
    // The tuned threshold reproduces its accuracy through the decision rule.
    let pred = decide(&matches, t.threshold);
    let v = verification_metrics(&pred, &truth).unwrap();
    assert!((v.accuracy - t.accuracy).abs() < 1e-12);
}

#[test]
fn tuning_moves_tied_scores_together() {
    // Two items share 0.5: one right if accepted, one impostor. Candidates: -inf (1/3),
    // 0.35 (2/3), +inf (2/3) -> 0.35.
    let matches = mk(&[("A", 0.5), ("B", 0.5), ("A", 0.2)]);
    let t = tune_threshold(&matches, &["A", NO_MATCH, NO_MATCH]).unwrap();
    assert_eq!(t.candidates, 3);
    assert!((t.threshold - 0.35).abs() < 1e-6);
    assert!((t.accuracy - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn tuning_edge_cases() {
    // All impostors: rejecting everything is best -> +inf, accuracy 1.
    let t = tune_threshold(&mk(&[("A", 0.9), ("B", 0.1)]), &[NO_MATCH, NO_MATCH]).unwrap();
    assert_eq!(t.threshold, f64::INFINITY);
    assert_eq!(t.accuracy, 1.0);
    // No impostors, all right: accept everything -> -inf.
    let t = tune_threshold(&mk(&[("A", 0.9), ("B", 0.1)]), &["A", "B"]).unwrap();
    assert_eq!(t.threshold, f64::NEG_INFINITY);
    assert_eq!(t.accuracy, 1.0);
    // Nothing can be right: every candidate ties at 0 -> the smallest, -inf.
    let t = tune_threshold(&mk(&[("A", 0.9)]), &["B"]).unwrap();
    assert_eq!((t.threshold, t.accuracy), (f64::NEG_INFINITY, 0.0));
    assert!(matches!(
        tune_threshold(&[], &[] as &[&str]),
        Err(VerifyError::Empty { .. })
    ));
    assert!(matches!(
        tune_threshold(&mk(&[("A", 0.9)]), &["A", "B"]),
        Err(VerifyError::LengthMismatch { .. })
    ));
}

#[test]
fn threshold_units_and_resolution() {
    assert_eq!(score_threshold(COS, 0.3), 0.3);
    assert_eq!(score_threshold(EUC, 0.8), -0.8);
    assert_eq!(natural_threshold(EUC, -0.8), 0.8);
    let none: Option<(&[Match], &[&str])> = None;
    assert_eq!(
        resolve_threshold(ThresholdSpec::Fixed(0.8), EUC, none).unwrap(),
        -0.8
    );
    assert!(matches!(
        resolve_threshold(ThresholdSpec::Tune, COS, none),
        Err(VerifyError::Degenerate { .. })
    ));
    assert!(resolve_threshold(ThresholdSpec::Fixed(f64::NAN), COS, none).is_err());
    let matches = mk(&[("A", 0.9), ("B", 0.1)]);
    let truth = ["A", NO_MATCH];
    let t = resolve_threshold(ThresholdSpec::Tune, COS, Some((&matches[..], &truth[..]))).unwrap();
    assert!((t - 0.5).abs() < 1e-6);
}

#[test]
fn input_errors() {
    let images = emb(&[[1.0, 0.0]]);
    assert!(matches!(
        Gallery::build(&images, &[NO_MATCH], COS, MEAN),
        Err(VerifyError::ReservedIdentity(_))
    ));
    assert!(matches!(
        Gallery::build(&images, &[""], COS, MEAN),
        Err(VerifyError::ReservedIdentity(_))
    ));
    assert!(matches!(
        Gallery::build(&images, &["a", "b"], COS, MEAN),
        Err(VerifyError::LengthMismatch { .. })
    ));
    let empty = Embeddings::new(vec![], vec![], 2).unwrap();
    assert!(matches!(
        Gallery::build(&empty, &[] as &[&str], COS, MEAN),
        Err(VerifyError::Empty { .. })
    ));
    let g = Gallery::build(&images, &["a"], COS, MEAN).unwrap();
    assert!(matches!(
        g.best_matches(&empty),
        Err(VerifyError::Empty { .. })
    ));
    let wide = Embeddings::new(vec!["u".into()], vec![1.0, 2.0, 3.0], 3).unwrap();
    assert!(matches!(
        g.best_matches(&wide),
        Err(VerifyError::DimMismatch { .. })
    ));
}

#[test]
fn pair_scores_by_hand() {
    let a = emb(&[[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]);
    let b = emb(&[[2.0, 0.0], [3.0, 4.0], [-1.0, 1.0]]);
    let c = pair_scores(&a, &b, COS).unwrap();
    assert!(close(c[0], 1.0) && close(c[1], 0.0) && close(c[2], 0.0));
    let e = pair_scores(&a, &b, EUC).unwrap();
    assert!(close(e[0], -1.0) && close(e[1], -5.0) && close(e[2], -2.0));
    assert!(pair_scores(&a, &emb(&[[1.0, 0.0]]), COS).is_err());
}

/// A small deterministic generator (no dependency on rand's stream stability).
fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[test]
fn matrix_product_agrees_with_pair_by_pair_across_blocks() {
    // 1100 unknowns cross the 1024-row block boundary.
    let (n_u, n_img, dim) = (1100usize, 45usize, 8usize);
    let mut seed = 7;
    let mut rand = |n: usize| (0..n * dim).map(|_| lcg(&mut seed)).collect::<Vec<f32>>();
    let gal = Embeddings::new(
        (0..n_img).map(|i| format!("g{i}")).collect(),
        rand(n_img),
        dim,
    )
    .unwrap();
    let labels: Vec<String> = (0..n_img).map(|i| format!("id{:02}", i % 15)).collect();
    let unk = Embeddings::new((0..n_u).map(|i| format!("u{i}")).collect(), rand(n_u), dim).unwrap();
    for metric in [COS, EUC] {
        for mode in [MEAN, MAX] {
            let g = Gallery::build(&gal, &labels, metric, mode).unwrap();
            let best = g.best_matches(&unk).unwrap();
            let sm = g.score_matrix(&unk).unwrap();
            // Reference: each identity's images, scored pair by pair.
            for (i, m) in best.iter().enumerate() {
                let mut ref_scores = Vec::new();
                for id in g.identities() {
                    let members: Vec<usize> = (0..n_img).filter(|&k| &labels[k] == id).collect();
                    let u = unk.row(i);
                    let s = match mode {
                        GalleryMode::Max => members
                            .iter()
                            .map(|&k| reference_score(metric, u, gal.row(k)))
                            .fold(f32::NEG_INFINITY, f32::max),
                        GalleryMode::Mean => {
                            let rows: Vec<Vec<f32>> = members
                                .iter()
                                .map(|&k| match metric {
                                    SimilarityMetric::Cosine => unit(gal.row(k)),
                                    SimilarityMetric::Euclidean => gal.row(k).to_vec(),
                                })
                                .collect();
                            let mean: Vec<f32> = (0..dim)
                                .map(|d| rows.iter().map(|r| r[d]).sum::<f32>() / rows.len() as f32)
                                .collect();
                            reference_score(metric, u, &mean)
                        }
                    };
                    ref_scores.push(s);
                }
                let top = ref_scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert!(
                    (m.score - top).abs() < 1e-4,
                    "{metric:?} {mode:?} unknown {i}: {} vs {top}",
                    m.score
                );
                assert!((ref_scores[m.index] - top).abs() < 1e-4);
                for (j, r) in ref_scores.iter().enumerate() {
                    assert!((sm.get(i, j) - r).abs() < 1e-4);
                }
            }
        }
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn reference_score(metric: SimilarityMetric, u: &[f32], g: &[f32]) -> f32 {
    match metric {
        SimilarityMetric::Cosine => {
            let (a, b) = (unit(u), unit(g));
            a.iter().zip(&b).map(|(x, y)| x * y).sum()
        }
        SimilarityMetric::Euclidean => -u
            .iter()
            .zip(g)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt(),
    }
}

#[test]
fn open_set_pipeline_tunes_scores_and_predicts() {
    use runner::verify::{predict_open_set, score_open_set};
    // Gallery: alice [1,0], bob [0,1]. Unknowns: near alice (0.8 / 0.6 -> cos 0.8), exactly
    // bob (1.0), an impostor between them (cos 0.707 to both: tie -> alice).
    let g = Gallery::build(
        &emb(&[[1.0, 0.0], [0.0, 1.0]]),
        &["alice", "bob"],
        COS,
        MEAN,
    )
    .unwrap();
    let dev = emb(&[[0.8, 0.6], [0.0, 1.0], [1.0, 1.0]]);
    let truth = ["alice", "bob", NO_MATCH];
    let r = score_open_set(&g, &dev, &truth, ThresholdSpec::Tune).unwrap();
    // Best scores 0.8 (right), 0.707 (impostor), 1.0 (right): midpoint (0.707 + 0.8) / 2.
    assert!(r.tuned);
    assert!(
        (r.threshold - (H as f64 + 0.8) / 2.0).abs() < 1e-6,
        "{}",
        r.threshold
    );
    assert_eq!(r.predictions, ["alice", "bob", NO_MATCH]);
    assert_eq!(r.metrics.accuracy, 1.0);
    assert_eq!(r.matches[2].identity, "alice");
    // A fixed threshold is used as given.
    let r = score_open_set(&g, &dev, &truth, ThresholdSpec::Fixed(0.9)).unwrap();
    assert!(!r.tuned);
    assert_eq!(r.predictions, [NO_MATCH, "bob", NO_MATCH]);
    assert!((r.metrics.accuracy - 2.0 / 3.0).abs() < 1e-12);
    // Euclidean fixed thresholds are distances: accept within 0.5.
    let ge = Gallery::build(
        &emb(&[[1.0, 0.0], [0.0, 1.0]]),
        &["alice", "bob"],
        EUC,
        MEAN,
    )
    .unwrap();
    let r = score_open_set(&ge, &dev, &truth, ThresholdSpec::Fixed(0.5)).unwrap();
    assert_eq!(r.threshold, 0.5);
    assert_eq!(r.score_threshold, -0.5);
    // [0.8,0.6] is 0.632 from alice: rejected; [0,1] is bob (0); [1,1] is 1 from both.
    assert_eq!(r.predictions, [NO_MATCH, "bob", NO_MATCH]);
    // Unlabelled: rows ready for a submission.
    let rows = predict_open_set(&g, &dev, 0.75).unwrap();
    assert_eq!(rows[0], ("x0".to_string(), "alice".to_string()));
    assert_eq!(rows[2], ("x2".to_string(), NO_MATCH.to_string()));
    assert!(score_open_set(&g, &dev, &truth[..2], ThresholdSpec::Tune).is_err());
}
