//! Face verification: embeddings, open-set matching, metrics, submissions.
//!
//! Pure parts, all taking embeddings (embedding images through a model lives elsewhere):
//! - [`embeddings`]: the [`Embeddings`] matrix type (row-major f32, one row per image) and L2
//!   normalisation;
//! - [`matching`]: the gallery of known identities, similarity as one matrix product
//!   (unknown x known), the open-set decision (`n000000` when nothing is close enough);
//! - [`threshold`]: the `threshold = "tune" | number` rule;
//! - [`metrics`]: verification accuracy (the course metric), `accuracy_known`,
//!   `impostor_rejection`, ROC AUC / EER / TAR@FAR for pairs, classification accuracy;
//! - [`distribution`]: genuine and impostor score histograms, each probe's top-1 result and
//!   the wrong decisions, kept per verified epoch for the report;
//! - [`open_set`]: the pipeline above end to end (score a labelled set, label an unlabelled one);
//! - [`submission`]: the course CSV `id,label`;
//! - [`bench`]: matching throughput.
//!
//! Score convention (everywhere in this module): **higher is better**. Cosine scores are the
//! cosine similarity; Euclidean scores are the *negative* Euclidean distance. Thresholds given
//! by users (recipe `verification.threshold = number`, and what reports print) are in the
//! metric's natural unit instead: a similarity for cosine (accept when `sim >= t`), a distance
//! for Euclidean (accept when `dist <= t`); see [`threshold::score_threshold`] and
//! [`threshold::natural_threshold`].

pub mod bench;
pub mod distribution;
pub mod embeddings;
pub mod error;
pub mod matching;
pub mod metrics;
pub mod open_set;
pub mod submission;
pub mod threshold;

pub use bench::{bench_matching, bench_matching_with, MatchBench};
pub use distribution::{score_distribution, ProbeTop1, ScoreDistribution, WrongDecision};
pub use embeddings::Embeddings;
pub use error::VerifyError;
pub use matching::{decide, decide_one, pair_scores, Gallery, Match, ScoreMatrix};
pub use metrics::{
    classification_accuracy, eer, pair_metrics, roc_auc, tar_at_far, verification_metrics,
    PairMetrics, VerificationMetrics,
};
pub use open_set::{predict_open_set, score_open_set, OpenSetReport};
pub use submission::{read_submission, write_submission};
pub use threshold::{
    natural_threshold, resolve_threshold, score_threshold, tune_threshold, TunedThreshold,
};

/// The label of an unknown face that matches no known identity (the course's convention).
pub const NO_MATCH: &str = "n000000";
