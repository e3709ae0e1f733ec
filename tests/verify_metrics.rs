//! Metrics against values computed by hand, including ties and the all-impostor case.

use runner::verify::{
    classification_accuracy, eer, pair_metrics, roc_auc, tar_at_far, verification_metrics,
    VerifyError, NO_MATCH,
};

fn approx(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

#[test]
fn verification_metrics_by_hand() {
    let pred = ["A", NO_MATCH, "B", NO_MATCH, "A"];
    let truth = ["A", NO_MATCH, "C", "A", NO_MATCH];
    let v = verification_metrics(&pred, &truth).unwrap();
    approx(v.accuracy, 2.0 / 5.0); // rows 0 and 1
    approx(v.accuracy_known.unwrap(), 1.0 / 3.0); // rows 0, 2, 3: only 0
    approx(v.impostor_rejection.unwrap(), 1.0 / 2.0); // rows 1, 4: only 1
    assert_eq!((v.n, v.n_known, v.n_impostors), (5, 3, 2));
}

#[test]
fn all_impostor_and_no_impostor_sets() {
    let v = verification_metrics(&[NO_MATCH, "A", NO_MATCH], &[NO_MATCH; 3]).unwrap();
    approx(v.accuracy, 2.0 / 3.0);
    assert_eq!(v.accuracy_known, None);
    approx(v.impostor_rejection.unwrap(), 2.0 / 3.0);
    let v = verification_metrics(&["A", "B"], &["A", "A"]).unwrap();
    approx(v.accuracy, 0.5);
    approx(v.accuracy_known.unwrap(), 0.5);
    assert_eq!(v.impostor_rejection, None);
}

#[test]
fn verification_metrics_errors() {
    let empty: [&str; 0] = [];
    assert!(matches!(
        verification_metrics(&empty, &empty),
        Err(VerifyError::Empty { .. })
    ));
    assert!(matches!(
        verification_metrics(&["A"], &["A", "B"]),
        Err(VerifyError::LengthMismatch { .. })
    ));
}

#[test]
fn classification_accuracy_by_hand() {
    approx(
        classification_accuracy(&[1, 2, 3], &[1, 0, 3]).unwrap(),
        2.0 / 3.0,
    );
    approx(classification_accuracy(&["a"], &["a"]).unwrap(), 1.0);
    assert!(classification_accuracy::<u32>(&[], &[]).is_err());
    assert!(classification_accuracy(&[1], &[1, 2]).is_err());
}

#[test]
fn pairs_without_ties() {
    // Genuine 0.9 0.8 0.4, impostor 0.7 0.3 0.2.
    let s = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2];
    let y = [true, true, true, false, false, false];
    // 0.9 and 0.8 beat all 3 impostors, 0.4 beats 2: 8 of 9 pairs.
    approx(roc_auc(&s, &y).unwrap(), 8.0 / 9.0);
    // Operating points (FAR, FRR): +inf (0,1), 0.9 (0,2/3), 0.8 (0,1/3), 0.7 (1/3,1/3).
    approx(eer(&s, &y).unwrap(), 1.0 / 3.0);
    // FAR 0 allows thresholds down to 0.8: TAR 2/3.
    approx(tar_at_far(&s, &y, 1e-2).unwrap(), 2.0 / 3.0);
    approx(tar_at_far(&s, &y, 1.0 / 3.0).unwrap(), 1.0);
    let m = pair_metrics(&s, &y).unwrap();
    approx(m.roc_auc, 8.0 / 9.0);
    approx(m.eer, 1.0 / 3.0);
    approx(m.tar_at_far_1e2, 2.0 / 3.0);
    approx(m.tar_at_far_1e3, 2.0 / 3.0);
    assert_eq!((m.n_genuine, m.n_impostor), (3, 3));
}

#[test]
fn pairs_with_ties() {
    // Genuine 0.5 0.5, impostor 0.5 0.1. Mann-Whitney: each genuine beats 0.1 (1) and ties
    // 0.5 (1/2): (1.5 + 1.5) / 4 = 0.75.
    let s = [0.5, 0.5, 0.5, 0.1];
    let y = [true, true, false, false];
    approx(roc_auc(&s, &y).unwrap(), 0.75);
    // Points (FAR, FRR): +inf (0, 1), 0.5 (1/2, 0). On the segment FAR = a/2, FRR = 1 - a:
    // equal at a = 2/3, EER = 1/3.
    approx(eer(&s, &y).unwrap(), 1.0 / 3.0);
    // Only +inf has FAR <= 1e-2: TAR 0.
    approx(tar_at_far(&s, &y, 1e-2).unwrap(), 0.0);
    // All scores tied: AUC 1/2, EER 1/2.
    let s = [0.3; 4];
    approx(roc_auc(&s, &y).unwrap(), 0.5);
    approx(eer(&s, &y).unwrap(), 0.5);
}

#[test]
fn eer_interpolates_between_operating_points() {
    // Genuine 0.9 0.8 0.4, impostor 0.7 0.3. Points (FAR, FRR): (0,1) (0,2/3) (0,1/3)
    // (1/2,1/3) ...: between (0,1/3) and (1/2,1/3) FAR = a/2 reaches 1/3 at a = 2/3.
    let s = [0.9, 0.8, 0.4, 0.7, 0.3];
    let y = [true, true, true, false, false];
    approx(eer(&s, &y).unwrap(), 1.0 / 3.0);
    approx(roc_auc(&s, &y).unwrap(), 5.0 / 6.0);
}

#[test]
fn perfect_and_reversed_separation() {
    let y = [true, false];
    approx(roc_auc(&[0.9, 0.1], &y).unwrap(), 1.0);
    approx(eer(&[0.9, 0.1], &y).unwrap(), 0.0);
    approx(tar_at_far(&[0.9, 0.1], &y, 1e-3).unwrap(), 1.0);
    approx(roc_auc(&[0.1, 0.9], &y).unwrap(), 0.0);
    approx(eer(&[0.1, 0.9], &y).unwrap(), 1.0);
    approx(tar_at_far(&[0.1, 0.9], &y, 1e-3).unwrap(), 0.0);
}

#[test]
fn pairs_errors() {
    assert!(matches!(
        roc_auc(&[0.1, 0.2], &[true, true]),
        Err(VerifyError::Degenerate { .. })
    ));
    assert!(matches!(eer(&[], &[]), Err(VerifyError::Empty { .. })));
    assert!(matches!(
        roc_auc(&[f64::NAN, 0.2], &[true, false]),
        Err(VerifyError::NonFinite { row: 0, .. })
    ));
    assert!(matches!(
        tar_at_far(&[0.1, 0.2], &[true, false], 1.5),
        Err(VerifyError::OutOfRange { .. })
    ));
    assert!(matches!(
        pair_metrics(&[0.1], &[true, false]),
        Err(VerifyError::LengthMismatch { .. })
    ));
}
