//! Random search: every parameter drawn uniformly (log-uniformly for log floats), from trial
//! `number`'s own random state. Used as the baseline TPE is measured against, and by TPE for
//! its startup trials.

use super::{draw_uniform, trial_rng, Sampler, Space, Trial};

#[derive(Debug, Clone)]
pub struct RandomSampler {
    pub space: Space,
    pub seed: u64,
}

impl Sampler for RandomSampler {
    fn propose(&self, number: usize, _history: &[Trial]) -> Vec<f64> {
        let mut rng = trial_rng(self.seed, number);
        self.space
            .iter()
            .map(|(_, p)| draw_uniform(p, &mut rng))
            .collect()
    }
}
