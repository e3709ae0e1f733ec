//! Successive halving on Slurm, driven from the submitting machine: each rung is one job
//! array. Its tasks train their runs to the rung's epoch (`until_epoch` in the manifest),
//! checkpoint there, record the run `paused` and exit 0; once `collect` has imported them all,
//! the rung is decided here exactly as on this machine (`halving::decide`, recorded at once),
//! and the runs that go on are the next array, continued from their rung checkpoints. The
//! survivors of the last rung train to `train.epochs`. Nothing here waits: each call takes the
//! step the store's state asks for (`runner sweep --executor slurm` again, or `--wait`).

use super::super::halving::{decide, progress, Rung};
use crate::engine::progress::Reporter;
use crate::engine::EngineError;
use crate::plan::prune::PrunePlan;
use crate::plan::PlannedRun;
use crate::store::{RunStatus, Store};

/// What a halving sweep on Slurm needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum RungStep {
    /// Submit these runs (indices into the plan) as rung `rung`'s array, each to epoch
    /// `until` (None: to `train.epochs`, after the last rung).
    Submit {
        rung: usize,
        until: Option<u32>,
        runs: Vec<usize>,
    },
    /// `left` runs of rung `rung` are still submitted (or training elsewhere).
    Waiting { rung: usize, left: usize },
    /// The schedule is through: the last rung's survivors are done (or failed).
    Finished,
}

/// The next step of the halving schedule of `runs` (their parents done), deciding every rung
/// whose runs have all reached it on the way (decisions recorded under `sweep_id`).
pub fn next_step(
    store: &mut Store,
    sweep_id: i64,
    runs: &[PlannedRun],
    plan: &PrunePlan,
    reporter: &Reporter,
) -> Result<RungStep, EngineError> {
    let epochs = runs
        .iter()
        .filter(|r| r.target)
        .map(|r| r.recipe.train.epochs)
        .max()
        .unwrap_or(0);
    let rungs = plan.pruner().rungs(epochs);
    let mut alive: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].target).collect();
    for (k, &rung_epoch) in rungs.iter().chain(std::iter::once(&epochs)).enumerate() {
        let last = k == rungs.len();
        let mut submit = Vec::new();
        let mut waiting = 0;
        for &i in &alive {
            let run = &runs[i];
            let (id, reached) = progress(store, run)?;
            let status = match id {
                Some(id) => {
                    store.add_to_sweep(sweep_id, id)?;
                    if store.rungs(id)?.iter().any(|r| r.rung as usize == k) {
                        continue;
                    }
                    store.run(id)?.status()
                }
                None => None,
            };
            if reached >= rung_epoch {
                continue;
            }
            match status {
                Some(RunStatus::Submitted | RunStatus::Running) => waiting += 1,
                // ranks last at the rung, as on this machine (a failed run is not resubmitted
                // by the schedule)
                Some(RunStatus::Failed | RunStatus::Diverged | RunStatus::Done) => {}
                _ => submit.push(i),
            }
        }
        if !submit.is_empty() {
            return Ok(RungStep::Submit {
                rung: k,
                until: (!last).then_some(rung_epoch),
                runs: submit,
            });
        }
        if waiting > 0 {
            return Ok(RungStep::Waiting {
                rung: k,
                left: waiting,
            });
        }
        if last {
            break;
        }
        let rung = Rung {
            index: k,
            epoch: rung_epoch,
        };
        alive = decide(store, sweep_id, runs, &alive, rung, plan, reporter)?;
    }
    Ok(RungStep::Finished)
}
