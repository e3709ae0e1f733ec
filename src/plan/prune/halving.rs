//! Synchronous successive halving: rungs at grace * factor^k epochs below the last; at each,
//! the best max(1, floor(n / factor)) of the n runs that reached it go on (ties: the lower
//! plan index), as in Optuna's SuccessiveHalvingPruner with every trial at the rung known.

use super::{Pruner, RungEntry};

#[derive(Debug, Clone)]
pub struct Halving {
    pub grace_epochs: u32,
    pub reduction_factor: u32,
    pub maximize: bool,
}

impl Pruner for Halving {
    fn rungs(&self, epochs: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut e = u64::from(self.grace_epochs.max(1));
        while e < u64::from(epochs) {
            out.push(e as u32);
            e *= u64::from(self.reduction_factor.max(2));
        }
        out
    }

    fn promote(&self, _rung: usize, entries: &[RungEntry]) -> Vec<bool> {
        let keep = (entries.len() / self.reduction_factor.max(2) as usize).max(1);
        // best first; a missing or NaN value last; equal values by plan index
        let score = |e: &RungEntry| match e.value.filter(|v| !v.is_nan()) {
            Some(v) if self.maximize => Some(v),
            Some(v) => Some(-v),
            None => None,
        };
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| {
            let (sa, sb) = (score(&entries[a]), score(&entries[b]));
            match (sa, sb) {
                (Some(x), Some(y)) => y.total_cmp(&x),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then(entries[a].index.cmp(&entries[b].index))
        });
        let mut out = vec![false; entries.len()];
        for &i in order.iter().take(keep) {
            out[i] = true;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: usize, value: Option<f64>) -> RungEntry {
        RungEntry { index, value }
    }

    #[test]
    fn rungs_sit_at_grace_times_powers_of_the_factor_below_the_last_epoch() {
        let h = Halving {
            grace_epochs: 1,
            reduction_factor: 3,
            maximize: true,
        };
        assert_eq!(h.rungs(9), vec![1, 3]);
        assert_eq!(h.rungs(10), vec![1, 3, 9]);
        assert_eq!(h.rungs(1), Vec::<u32>::new());
        let h2 = Halving {
            grace_epochs: 2,
            reduction_factor: 2,
            maximize: true,
        };
        assert_eq!(h2.rungs(16), vec![2, 4, 8]);
    }

    #[test]
    fn the_best_third_goes_on_ties_to_the_lower_index_missing_last() {
        let h = Halving {
            grace_epochs: 1,
            reduction_factor: 3,
            maximize: true,
        };
        let entries = [
            e(0, Some(0.5)),
            e(1, Some(0.9)),
            e(2, None),
            e(3, Some(0.9)),
            e(4, Some(0.1)),
            e(5, Some(f64::NAN)),
            e(6, Some(0.7)),
        ];
        // floor(7 / 3) = 2: the two 0.9s (index 1 before 3)
        assert_eq!(
            h.promote(0, &entries),
            vec![false, true, false, true, false, false, false]
        );
        // one run left: it goes on
        assert_eq!(h.promote(1, &[e(3, Some(0.2))]), vec![true]);
        // losses: lower is better
        let min = Halving {
            maximize: false,
            ..h
        };
        assert_eq!(
            min.promote(0, &[e(0, Some(2.0)), e(1, Some(1.0)), e(2, Some(3.0))]),
            vec![false, true, false]
        );
    }
}
