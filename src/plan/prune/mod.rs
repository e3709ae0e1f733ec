//! Pruners: which runs of a sweep stop early. Two shapes: a rung rule (halving: which runs go
//! on, given each run's value at the rung; the executor asks between rungs) and an epoch rule
//! (median: does this run stop now, given its values and the earlier runs'; the run asks after
//! each epoch). Neither trains nor reads the store: the executor hands them the values. One
//! small file per rule; `PrunePlan` resolves `[sweep.prune]`.

mod asynchronous;
mod halving;
mod median;

pub use asynchronous::AsyncHalving;
pub use halving::Halving;
pub use median::Median;

use crate::recipe::{PruneConfig, PruneKind};

/// One run at a rung: its position in the plan (ties go to the lower) and its value of the
/// pruning metric at the rung's epoch (None: it has none, as after a failure; ranks last).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RungEntry {
    pub index: usize,
    pub value: Option<f64>,
}

/// A rule that stops runs at rungs.
pub trait Pruner {
    /// The epochs at which runs are compared, ascending, each below `epochs`.
    fn rungs(&self, epochs: u32) -> Vec<u32>;
    /// Which of `entries` (the runs that reached rung `rung`) go on, in the same order.
    fn promote(&self, rung: usize, entries: &[RungEntry]) -> Vec<bool>;
}

/// A rule a run asks after each epoch (it owns no state of the run): stop now? `values` are
/// the run's values of the rule's metric for epochs 1..=epoch (None where it logged none).
pub trait EarlyStop {
    fn stop(&self, epoch: u32, values: &[Option<f64>]) -> bool;
}

/// `[sweep.prune]` resolved for a sweep: the rule, and the metric it compares (higher is
/// better when `maximize`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrunePlan {
    pub config: PruneConfig,
    pub metric: String,
    pub maximize: bool,
}

impl PrunePlan {
    /// The plan of a recipe's `[sweep.prune]`; None without one or with `kind = "none"`.
    pub fn of(recipe: &crate::recipe::Recipe) -> Option<PrunePlan> {
        let config = recipe.sweep.as_ref()?.prune.clone()?;
        if config.kind == PruneKind::None {
            return None;
        }
        let (metric, maximize) = config.objective(&recipe.checkpoint);
        Some(PrunePlan {
            config,
            metric,
            maximize,
        })
    }

    /// Whether runs stop at rungs, decided between them (halving); else each run decides
    /// after each epoch against earlier runs (median).
    pub fn by_rungs(&self) -> bool {
        self.config.kind == PruneKind::Halving
    }

    /// The median rule for a run whose reference runs logged `reference` (values per epoch);
    /// None while fewer than `startup_runs` are done.
    pub fn median(&self, reference: Vec<Vec<Option<f64>>>) -> Option<Median> {
        (reference.len() >= self.config.startup_runs as usize).then_some(Median {
            grace_epochs: self.config.grace_epochs,
            maximize: self.maximize,
            reference,
        })
    }

    /// Halving as a rule each run asks at its rungs, against the earlier trials' values there
    /// (`earlier`: values per epoch), for a search sweep of `epochs` epochs.
    pub fn asynchronous(&self, epochs: u32, earlier: Vec<Vec<Option<f64>>>) -> AsyncHalving {
        let halving = Halving {
            grace_epochs: self.config.grace_epochs,
            reduction_factor: self.config.reduction_factor,
            maximize: self.maximize,
        };
        AsyncHalving {
            rungs: halving.rungs(epochs),
            reduction_factor: self.config.reduction_factor,
            maximize: self.maximize,
            earlier,
        }
    }

    /// The rule that decides at rungs (`by_rungs`).
    pub fn pruner(&self) -> Box<dyn Pruner> {
        Box::new(Halving {
            grace_epochs: self.config.grace_epochs,
            reduction_factor: self.config.reduction_factor,
            maximize: self.maximize,
        })
    }
}

/// The best of `values` (NaN left out): the largest when `maximize`, else the smallest.
pub fn best_so_far(values: impl IntoIterator<Item = f64>, maximize: bool) -> Option<f64> {
    values
        .into_iter()
        .filter(|v| !v.is_nan())
        .fold(None, |b, v| {
            Some(match b {
                None => v,
                Some(b) if maximize => b.max(v),
                Some(b) => b.min(v),
            })
        })
}
