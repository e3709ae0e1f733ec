//! Median stopping (Optuna's MedianPruner): a run stops at the first epoch at or after the grace
//! epochs where its best value so far is worse than the median of the reference runs' values at
//! that epoch. The reference runs are those done when the run was claimed (stored with it, so
//! that a resumed run decides the same way); with fewer than `startup_runs` of them, nothing
//! stops.

use super::EarlyStop;

#[derive(Debug, Clone)]
pub struct Median {
    pub grace_epochs: u32,
    pub maximize: bool,
    /// Each reference run's value per epoch (index 0: epoch 1).
    pub reference: Vec<Vec<Option<f64>>>,
}

impl EarlyStop for Median {
    fn stop(&self, epoch: u32, values: &[Option<f64>]) -> bool {
        if epoch < self.grace_epochs.max(1) || epoch == 0 {
            return false;
        }
        let upto = (epoch as usize).min(values.len());
        let finite = values[..upto]
            .iter()
            .flatten()
            .copied()
            .filter(|v| !v.is_nan());
        let best = if self.maximize {
            finite.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))))
        } else {
            finite.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v))))
        };
        let at: Vec<f64> = self
            .reference
            .iter()
            .filter_map(|r| r.get(epoch as usize - 1).copied().flatten())
            .filter(|v| !v.is_nan())
            .collect();
        let Some(median) = median(at) else {
            return false;
        };
        match best {
            // no value yet: Optuna prunes a trial whose intermediate values are all NaN
            None => true,
            Some(b) if self.maximize => b < median,
            Some(b) => b > median,
        }
    }
}

/// The median with linear interpolation (numpy's percentile 50), None for no values.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(maximize: bool, reference: Vec<Vec<Option<f64>>>) -> Median {
        Median {
            grace_epochs: 2,
            maximize,
            reference,
        }
    }

    #[test]
    fn stops_when_the_best_so_far_is_worse_than_the_median_at_that_epoch() {
        let r = vec![
            vec![Some(0.2), Some(0.5), Some(0.6)],
            vec![Some(0.1), Some(0.4), Some(0.7)],
            vec![Some(0.3), Some(0.6), Some(0.8)],
        ];
        let p = m(true, r.clone());
        // epoch 1 is before the grace epochs: never
        assert!(!p.stop(1, &[Some(0.0)]));
        // epoch 2: median 0.5; best so far 0.45 < 0.5 stops, 0.5 does not
        assert!(p.stop(2, &[Some(0.1), Some(0.45)]));
        assert!(!p.stop(2, &[Some(0.1), Some(0.5)]));
        // the best so far counts, not the last value
        assert!(!p.stop(2, &[Some(0.55), Some(0.3)]));
        // an even count interpolates: (0.4 + 0.5) / 2 = 0.45 at epoch 2 of two references
        let two = m(true, r[..2].to_vec());
        assert!(two.stop(2, &[None, Some(0.44)]));
        assert!(!two.stop(2, &[None, Some(0.46)]));
        // losses: lower is better
        let loss = m(
            false,
            vec![vec![Some(2.0), Some(1.0)], vec![Some(2.0), Some(3.0)]],
        );
        assert!(loss.stop(2, &[Some(2.5), Some(2.1)]));
        assert!(!loss.stop(2, &[Some(1.9), Some(2.6)]));
        // no reference value at the epoch: nothing to compare with
        assert!(!p.stop(4, &[Some(0.0); 4]));
    }
}
