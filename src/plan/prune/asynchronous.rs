//! Asynchronous successive halving, decided in trial order (Optuna's SuccessiveHalvingPruner in
//! a sequential study), for search sweeps where the runs to compare are not known up front: at
//! each rung epoch (grace * factor^k, as synchronous halving's), a run goes on when its value
//! there is among the best floor(n / factor) (at least the best one) of the n values at that
//! rung: its own and those of the earlier trials that reached it.

use super::EarlyStop;

#[derive(Debug, Clone)]
pub struct AsyncHalving {
    /// The rung epochs, ascending.
    pub rungs: Vec<u32>,
    pub reduction_factor: u32,
    pub maximize: bool,
    /// Each earlier trial's value per epoch (index 0: epoch 1).
    pub earlier: Vec<Vec<Option<f64>>>,
}

impl EarlyStop for AsyncHalving {
    fn stop(&self, epoch: u32, values: &[Option<f64>]) -> bool {
        if !self.rungs.contains(&epoch) {
            return false;
        }
        let at = |curve: &[Option<f64>]| curve.get(epoch as usize - 1).copied().flatten();
        // Optuna prunes a trial whose value at a rung is missing or NaN
        let Some(own) = at(values).filter(|v| !v.is_nan()) else {
            return true;
        };
        let mut competing: Vec<f64> = self
            .earlier
            .iter()
            .filter_map(|c| at(c))
            .filter(|v| !v.is_nan())
            .collect();
        competing.push(own);
        // best first
        competing.sort_by(|a, b| {
            if self.maximize {
                b.total_cmp(a)
            } else {
                a.total_cmp(b)
            }
        });
        let keep = (competing.len() / self.reduction_factor.max(2) as usize).max(1);
        let bar = competing[keep - 1];
        let promoted = if self.maximize {
            own >= bar
        } else {
            own <= bar
        };
        !promoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(earlier: Vec<Vec<Option<f64>>>) -> AsyncHalving {
        AsyncHalving {
            rungs: vec![1, 3],
            reduction_factor: 3,
            maximize: true,
            earlier,
        }
    }

    #[test]
    fn the_first_trial_goes_on_and_later_ones_only_among_the_best_third() {
        assert!(!rule(vec![]).stop(1, &[Some(0.1)]));
        // two values at rung 1: only the best goes on (Optuna: index max(0, 2 / 3 - 1) = 0)
        let r = rule(vec![vec![Some(0.5), Some(0.6), Some(0.7)]]);
        assert!(r.stop(1, &[Some(0.4)]));
        assert!(!r.stop(1, &[Some(0.5)]));
        assert!(!r.stop(2, &[Some(0.1), Some(0.1)]), "epoch 2 is no rung");
        // six values at rung 1 (five earlier): the best two go on
        let r = rule((1..=5).map(|i| vec![Some(i as f64 / 10.0)]).collect());
        assert!(!r.stop(1, &[Some(0.45)]));
        assert!(r.stop(1, &[Some(0.35)]));
        // a missing value at a rung stops the run
        assert!(rule(vec![]).stop(1, &[None]));
    }

    #[test]
    fn earlier_trials_pruned_before_a_rung_do_not_compete_there() {
        // the earlier trial stopped at epoch 1: at rung 3 this run competes with itself alone
        let r = rule(vec![vec![Some(0.9)]]);
        assert!(!r.stop(3, &[Some(0.1), Some(0.1), Some(0.1)]));
    }
}
