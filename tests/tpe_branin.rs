//! TPE (`sweep.mode = "tpe"`) against random search on Branin, through the library's sampler
//! interface: 30 trials, the first 10 random, seeds 0-19. The measured distribution over 1,000
//! seeds is in docs/sweeps.md (examples/tpe_branin.rs writes it).

mod support {
    pub mod branin;
}

use runner::plan::sampler::{RandomSampler, Sampler, TpeSampler};
use support::branin;

#[test]
fn tpe_beats_random_search_on_branin_in_at_least_14_of_20_seeds() {
    let mut wins = 0;
    let mut lines = Vec::new();
    for seed in 0..20u64 {
        let random = RandomSampler {
            space: branin::space(),
            seed: seed + 1000,
        };
        let tpe = TpeSampler::new(branin::space(), seed, false);
        let (r, t) = (branin::best_of(&random, 30), branin::best_of(&tpe, 30));
        wins += usize::from(t < r);
        lines.push(format!("seed {seed}: tpe {t:.4} random {r:.4}"));
    }
    assert!(wins >= 14, "TPE won {wins} of 20:\n{}", lines.join("\n"));
}

#[test]
fn the_same_seed_proposes_the_same_trials_and_another_seed_others() {
    let a = TpeSampler::new(branin::space(), 3, false);
    let b = TpeSampler::new(branin::space(), 4, false);
    assert_eq!(branin::best_of(&a, 30), branin::best_of(&a, 30));
    assert_ne!(branin::best_of(&a, 30), branin::best_of(&b, 30));
    // trial 0 does not depend on a history, trial 15 on the one it is given
    assert_eq!(a.propose(0, &[]), a.propose(0, &[]));
}
