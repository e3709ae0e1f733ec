//! Pruners: which runs of a sweep go on at a rung, given each run's value there. Separate from
//! the executor (it asks between rungs and never decides itself) and from the samplers that
//! propose the runs. One trait, one small file per rule, a factory from `[sweep.prune]`.

mod halving;

pub use halving::Halving;

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

    pub fn pruner(&self) -> Box<dyn Pruner> {
        build(&self.config, self.maximize).unwrap_or_else(|| {
            Box::new(Halving {
                grace_epochs: self.config.grace_epochs,
                reduction_factor: self.config.reduction_factor,
                maximize: self.maximize,
            })
        })
    }
}

/// The pruner `[sweep.prune]` asks for, comparing by higher-is-better when `maximize`; None
/// for `kind = "none"`.
pub fn build(cfg: &PruneConfig, maximize: bool) -> Option<Box<dyn Pruner>> {
    match cfg.kind {
        PruneKind::None => None,
        PruneKind::Halving => Some(Box::new(Halving {
            grace_epochs: cfg.grace_epochs,
            reduction_factor: cfg.reduction_factor,
            maximize,
        })),
    }
}
