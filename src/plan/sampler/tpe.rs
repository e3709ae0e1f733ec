//! TPE, the tree-structured Parzen estimator, as Optuna 5 runs it by default for one objective
//! (`TPESampler(multivariate=True, constant_liar=True)`):
//! - the first `startup_trials` finished trials are random;
//! - then the finished trials split into the best gamma(n) = min(ceil(n / 10), 25) ("below";
//!   complete trials first, then pruned ones by the last epoch reached and their value there)
//!   and the rest ("above", with the batch's running trials, which count as bad);
//! - each group is a mixture of product kernels, one per trial plus a prior over the whole
//!   range (weight 1), widths from the neighbouring observations, clipped Optuna's way;
//! - 24 candidates drawn from "below"; the one with the largest l(x) / g(x) wins.
//!
//! Floats with `log` and their kernels live in log space; integers are steps of 1.

use rand::Rng;

use super::{draw_uniform, trial_rng, truncnorm, Outcome, Param, Sampler, Space, Trial};

#[derive(Debug, Clone)]
pub struct TpeSampler {
    pub space: Space,
    pub seed: u64,
    /// Random trials first (finished trials needed before TPE takes over).
    pub startup_trials: usize,
    /// Whether a larger objective is better.
    pub maximize: bool,
    /// Candidates drawn from the good group per proposal.
    pub candidates: usize,
}

impl TpeSampler {
    /// Optuna's defaults: 10 startup trials, 24 candidates.
    pub fn new(space: Space, seed: u64, maximize: bool) -> TpeSampler {
        TpeSampler {
            space,
            seed,
            startup_trials: 10,
            maximize,
            candidates: 24,
        }
    }
}

/// How many finished trials count as good: Optuna's `default_gamma`.
fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Kernel weights for `n` observations (oldest first): Optuna's `default_weights`, flat for
/// the 25 newest and a ramp below them.
fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            let (lo, hi) = (1.0 / n as f64, 1.0);
            if ramp == 1 {
                lo
            } else {
                lo + (hi - lo) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// The good and bad groups (Optuna's `_split_trials`), each in trial order.
fn split(history: &[Trial], maximize: bool) -> (Vec<&Trial>, Vec<&Trial>) {
    let finished = history
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Complete(_) | Outcome::Pruned { .. }))
        .count();
    let mut n_below = gamma(finished);
    let sign = if maximize { -1.0 } else { 1.0 };
    let mut complete: Vec<&Trial> = Vec::new();
    let mut pruned: Vec<&Trial> = Vec::new();
    let mut running: Vec<&Trial> = Vec::new();
    for t in history {
        match t.outcome {
            Outcome::Complete(_) => complete.push(t),
            Outcome::Pruned { .. } => pruned.push(t),
            Outcome::Running => running.push(t),
            Outcome::Failed => {}
        }
    }
    let value = |t: &Trial| match t.outcome {
        Outcome::Complete(v) if !v.is_nan() => sign * v,
        _ => f64::INFINITY,
    };
    complete.sort_by(|a, b| value(a).total_cmp(&value(b)));
    // pruned: the furthest first, then the better value there
    let score = |t: &Trial| match t.outcome {
        Outcome::Pruned { step, value } => (
            -(step as f64),
            value
                .filter(|v| !v.is_nan())
                .map_or(f64::INFINITY, |v| sign * v),
        ),
        _ => (1.0, 0.0),
    };
    pruned.sort_by(|a, b| {
        let (sa, sb) = (score(a), score(b));
        sa.0.total_cmp(&sb.0).then(sa.1.total_cmp(&sb.1))
    });
    let mut below: Vec<&Trial> = Vec::new();
    let mut above: Vec<&Trial> = Vec::new();
    for group in [complete, pruned] {
        let take = n_below.min(group.len());
        below.extend(&group[..take]);
        above.extend(&group[take..]);
        n_below -= take;
    }
    above.extend(running);
    below.sort_by_key(|t| t.number);
    above.sort_by_key(|t| t.number);
    (below, above)
}

/// One dimension of a mixture: per kernel, a truncated normal (in the adapted space) or
/// choice probabilities.
enum Kernels {
    Numeric {
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        /// The range in the adapted space (log for log floats; +-1/2 around integers).
        low: f64,
        high: f64,
        log: bool,
        /// Integers: the original bounds, for rounding draws.
        int: Option<(f64, f64)>,
    },
    Choice {
        probs: Vec<Vec<f64>>,
    },
}

/// The index a uniform `u` in [0, 1) picks among `weights` (summing to 1): the first whose
/// running sum exceeds it (the last, against rounding).
fn pick(weights: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return i;
        }
    }
    weights.len().saturating_sub(1)
}

/// A mixture of product kernels over the space (Optuna's `_ParzenEstimator`).
struct Parzen {
    weights: Vec<f64>,
    dims: Vec<Kernels>,
}

impl Parzen {
    fn new(space: &Space, observed: &[&Trial]) -> Parzen {
        let n = observed.len();
        let mut weights = default_weights(n);
        weights.push(1.0); // the prior
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let dims = space
            .iter()
            .enumerate()
            .map(|(d, (_, p))| {
                let obs: Vec<f64> = observed.iter().map(|t| t.params[d]).collect();
                Self::kernels(p, &obs)
            })
            .collect();
        Parzen { weights, dims }
    }

    fn kernels(param: &Param, obs: &[f64]) -> Kernels {
        match *param {
            Param::Categorical { n: choices } => {
                let kernels = obs.len() + 1;
                let base = 1.0 / kernels as f64;
                let mut probs: Vec<Vec<f64>> = obs
                    .iter()
                    .map(|&o| {
                        let mut row = vec![base; choices];
                        if let Some(c) = row.get_mut(o as usize) {
                            *c += 1.0;
                        }
                        row
                    })
                    .collect();
                probs.push(vec![base; choices]);
                for row in &mut probs {
                    let s: f64 = row.iter().sum();
                    row.iter_mut().for_each(|p| *p /= s);
                }
                Kernels::Choice { probs }
            }
            Param::Float { low, high, log } => {
                let f = |x: f64| if log { x.ln() } else { x };
                let mus: Vec<f64> = obs.iter().map(|&x| f(x)).collect();
                Self::numeric(mus, f(low), f(high), log, None)
            }
            Param::Int { low, high } => {
                let (lo, hi) = (low as f64, high as f64);
                Self::numeric(obs.to_vec(), lo - 0.5, hi + 0.5, false, Some((lo, hi)))
            }
        }
    }

    /// Widths from the neighbours (the two sides' larger gap; the outermost take their inner
    /// gap), clipped to [range / min(100, kernels + 1), range]; then the prior at the middle
    /// with the whole range as its width.
    fn numeric(
        mut mus: Vec<f64>,
        low: f64,
        high: f64,
        log: bool,
        int: Option<(f64, f64)>,
    ) -> Kernels {
        let n = mus.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
        let mut ends = Vec::with_capacity(n + 2);
        ends.push(low);
        ends.extend(order.iter().map(|&i| mus[i]));
        ends.push(high);
        let mut sorted_sigmas: Vec<f64> = (1..=n)
            .map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i]))
            .collect();
        if ends.len() >= 4 {
            sorted_sigmas[0] = ends[2] - ends[1];
            sorted_sigmas[n - 1] = ends[n] - ends[n - 1];
        }
        let range = high - low;
        let min_sigma = range / (1.0 + (n + 1) as f64).min(100.0);
        let mut sigmas = vec![0.0; n];
        for (rank, &i) in order.iter().enumerate() {
            sigmas[i] = sorted_sigmas[rank].clamp(min_sigma, range);
        }
        mus.push(0.5 * (low + high));
        sigmas.push(range);
        Kernels::Numeric {
            mus,
            sigmas,
            low,
            high,
            log,
            int,
        }
    }

    /// `count` points drawn from the mixture (internal representation).
    fn sample(&self, rng: &mut impl Rng, count: usize) -> Vec<Vec<f64>> {
        (0..count)
            .map(|_| {
                let k = pick(&self.weights, rng.random());
                self.dims
                    .iter()
                    .map(|dim| match dim {
                        Kernels::Choice { probs } => pick(&probs[k], rng.random()) as f64,
                        Kernels::Numeric {
                            mus,
                            sigmas,
                            low,
                            high,
                            log,
                            int,
                        } => {
                            let x = truncnorm::draw(rng.random(), *low, *high, mus[k], sigmas[k]);
                            match int {
                                Some((lo, hi)) => x.round().clamp(*lo, *hi),
                                None if *log => x.exp(),
                                None => x,
                            }
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// ln of the mixture's density (mass, for integers and choices) at `x`.
    fn log_pdf(&self, x: &[f64]) -> f64 {
        let per_kernel: Vec<f64> = (0..self.weights.len())
            .map(|k| {
                let mut lp = self.weights[k].ln();
                for (dim, &xi) in self.dims.iter().zip(x) {
                    lp += match dim {
                        Kernels::Choice { probs } => probs[k][xi as usize].ln(),
                        Kernels::Numeric {
                            mus,
                            sigmas,
                            low,
                            high,
                            log,
                            int,
                        } => {
                            let (mu, sigma) = (mus[k], sigmas[k]);
                            let (a, b) = ((low - mu) / sigma, (high - mu) / sigma);
                            if int.is_some() {
                                let (l, r) = ((xi - 0.5 - mu) / sigma, (xi + 0.5 - mu) / sigma);
                                truncnorm::log_gauss_mass(l, r) - truncnorm::log_gauss_mass(a, b)
                            } else {
                                let v = if *log { xi.ln() } else { xi };
                                truncnorm::logpdf(v, a, b, mu, sigma)
                            }
                        }
                    };
                }
                lp
            })
            .collect();
        let max = per_kernel.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return max;
        }
        max + per_kernel.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
    }
}

impl Sampler for TpeSampler {
    fn propose(&self, number: usize, history: &[Trial]) -> Vec<f64> {
        let mut rng = trial_rng(self.seed, number);
        let finished = history
            .iter()
            .filter(|t| matches!(t.outcome, Outcome::Complete(_) | Outcome::Pruned { .. }))
            .count();
        if finished < self.startup_trials || self.space.is_empty() {
            return self
                .space
                .iter()
                .map(|(_, p)| draw_uniform(p, &mut rng))
                .collect();
        }
        let (below, above) = split(history, self.maximize);
        let good = Parzen::new(&self.space, &below);
        let bad = Parzen::new(&self.space, &above);
        let candidates = good.sample(&mut rng, self.candidates.max(1));
        let mut best = 0;
        let mut best_score = f64::NEG_INFINITY;
        for (i, c) in candidates.iter().enumerate() {
            let score = good.log_pdf(c) - bad.log_pdf(c);
            if score > best_score || (i == 0 && score.is_nan()) {
                best = i;
                best_score = score;
            }
        }
        candidates.into_iter().nth(best).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(number: usize, x: f64, outcome: Outcome) -> Trial {
        Trial {
            number,
            params: vec![x],
            outcome,
        }
    }

    #[test]
    fn gamma_and_weights_are_optunas() {
        assert_eq!((gamma(10), gamma(11), gamma(300)), (1, 2, 25));
        let w = default_weights(27);
        assert_eq!(w.len(), 27);
        assert!((w[0] - 1.0 / 27.0).abs() < 1e-15 && w[1] == 1.0 && w[26] == 1.0);
    }

    #[test]
    fn complete_trials_rank_before_pruned_ones_and_pruned_by_the_furthest_epoch() {
        let h = vec![
            trial(
                0,
                0.0,
                Outcome::Pruned {
                    step: 3,
                    value: Some(0.1),
                },
            ),
            trial(1, 1.0, Outcome::Complete(5.0)),
            trial(
                2,
                2.0,
                Outcome::Pruned {
                    step: 1,
                    value: Some(0.0),
                },
            ),
            trial(3, 3.0, Outcome::Complete(7.0)),
            trial(4, 4.0, Outcome::Running),
        ];
        // 4 finished -> 1 below (minimize): the best complete trial
        let (below, above) = split(&h, false);
        assert_eq!(below.iter().map(|t| t.number).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            above.iter().map(|t| t.number).collect::<Vec<_>>(),
            vec![0, 2, 3, 4]
        );
        // with only pruned trials, the one that went further ranks first
        let only_pruned = [h[0].clone(), h[2].clone()];
        let (below, _) = split(&only_pruned, false);
        assert_eq!(below[0].number, 0);
    }

    #[test]
    fn widths_follow_the_neighbours_and_are_clipped() {
        let Kernels::Numeric { mus, sigmas, .. } =
            Parzen::numeric(vec![0.5, 0.1, 0.2], 0.0, 1.0, false, None)
        else {
            unreachable!()
        };
        // sorted 0.1, 0.2, 0.5: the outermost take their inner gap (0.1, 0.3), 0.2 the larger
        // of 0.1 and 0.3; clipped below at 1 / min(100, 3 + 1 + 1) = 0.2; the prior's is 1
        assert_eq!(mus, vec![0.5, 0.1, 0.2, 0.5]);
        let expect = [0.3, 0.2, 0.3, 1.0];
        for (s, e) in sigmas.iter().zip(expect) {
            assert!((s - e).abs() < 1e-12, "{sigmas:?}");
        }
        // all three at the lower clip
        let Kernels::Numeric { sigmas, .. } =
            Parzen::numeric(vec![0.5, 0.51, 0.52], 0.0, 1.0, false, None)
        else {
            unreachable!()
        };
        assert!(
            sigmas[..3].iter().all(|s| (s - 0.2).abs() < 1e-12),
            "{sigmas:?}"
        );
    }

    #[test]
    fn proposals_are_a_function_of_seed_number_and_history_and_stay_in_range() {
        let space: Space = vec![
            (
                "a".into(),
                Param::Float {
                    low: 1e-4,
                    high: 1e-1,
                    log: true,
                },
            ),
            ("b".into(), Param::Int { low: 1, high: 4 }),
            ("c".into(), Param::Categorical { n: 3 }),
        ];
        let s = TpeSampler::new(space, 7, false);
        let mut history = Vec::new();
        for k in 0..20 {
            let p = s.propose(k, &history);
            assert_eq!(p, s.propose(k, &history));
            assert!((1e-4..=1e-1).contains(&p[0]), "{p:?}");
            assert!([1.0, 2.0, 3.0, 4.0].contains(&p[1]), "{p:?}");
            assert!([0.0, 1.0, 2.0].contains(&p[2]), "{p:?}");
            let value = (p[0].ln() - 1e-3f64.ln()).powi(2) + p[1] + p[2];
            history.push(Trial {
                number: k,
                params: p,
                outcome: Outcome::Complete(value),
            });
        }
    }
}
