//! Samplers: which point a search sweep tries next. A sampler reads the trials before it (their
//! parameters and outcomes, handed to it by the executor from the store) and proposes trial
//! `number`'s parameters; it neither trains nor reads the store. Trial `number`'s random state
//! is hash(seed, number), so a sweep interrupted and continued proposes exactly the trials an
//! uninterrupted one would. One small file per sampler: `random` (random search) and `tpe`
//! (Optuna's tree-structured Parzen estimator).

mod random;
mod tpe;
mod truncnorm;

pub use random::RandomSampler;
pub use tpe::TpeSampler;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One searched parameter, in the sampler's internal representation (a float: the value
/// itself, or a choice's index).
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A float in [low, high], searched in log space when `log`.
    Float { low: f64, high: f64, log: bool },
    /// An integer in [low, high].
    Int { low: i64, high: i64 },
    /// One of `n` choices, by index.
    Categorical { n: usize },
}

/// The searched parameters, in a fixed order (the sweep's keys, sorted).
pub type Space = Vec<(String, Param)>;

/// Where a trial stands, as a sampler sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished: its objective value.
    Complete(f64),
    /// Stopped early at epoch `step` with the objective's value there (None: none logged).
    Pruned { step: u32, value: Option<f64> },
    /// Proposed in the same batch, before this one, and not finished yet (Optuna's constant
    /// liar: it counts as a bad trial, so a batch spreads out).
    Running,
    /// Failed: not used.
    Failed,
}

/// A trial before the one being proposed: its number, its parameters (internal representation,
/// in the space's order) and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub number: usize,
    pub params: Vec<f64>,
    pub outcome: Outcome,
}

/// A sampler: the parameters of trial `number` given the trials before it.
pub trait Sampler {
    /// Trial `number`'s parameters, in the space's order (internal representation).
    fn propose(&self, number: usize, history: &[Trial]) -> Vec<f64>;
}

/// The random state of trial `number` of a study seeded `seed`: a stream of its own, so a
/// trial's draw does not depend on how many draws came before it.
pub fn trial_rng(seed: u64, number: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(number as u64 + 1);
    rng
}

/// A uniform draw from one parameter (internal representation).
fn draw_uniform(param: &Param, rng: &mut impl rand::Rng) -> f64 {
    match *param {
        Param::Float { low, high, log } => {
            if log {
                let (a, b) = (low.ln(), high.ln());
                (a + (b - a) * rng.random::<f64>()).exp().clamp(low, high)
            } else {
                low + (high - low) * rng.random::<f64>()
            }
        }
        Param::Int { low, high } => rng.random_range(low..=high) as f64,
        Param::Categorical { n } => rng.random_range(0..n.max(1)) as f64,
    }
}
