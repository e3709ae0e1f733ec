//! Where a run's epochs spend their wall time: a `RunRecords` wrapper that clocks every call
//! into the store (or a Slurm task's record log), and the stopwatch helpers the run loop uses
//! for the other phases of `PhaseSeconds`.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use super::records::{Lineage, RunRecords};
use super::EngineError;
use crate::recipe::InitFromRun;
use crate::store::{
    CheckpointRecord, DevPredictions, EpochMetrics, PhaseSeconds, RunStatus, VerificationRecord,
};

/// Seconds spent in a `TimedRecords`' calls so far, shared with whoever reads it.
#[derive(Debug, Clone, Default)]
pub struct StoreClock(Rc<Cell<f64>>);

impl StoreClock {
    pub fn seconds(&self) -> f64 {
        self.0.get()
    }

    fn add(&self, s: f64) {
        self.0.set(self.0.get() + s);
    }
}

/// Seconds since `t`.
pub fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn clocked<T>(clock: &StoreClock, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    clock.add(since(t));
    out
}

/// A run's records, with the time of every call added to a `StoreClock`.
pub struct TimedRecords<'s> {
    inner: &'s mut dyn RunRecords,
    clock: StoreClock,
}

impl<'s> TimedRecords<'s> {
    pub fn new(inner: &'s mut dyn RunRecords) -> Self {
        TimedRecords {
            inner,
            clock: StoreClock::default(),
        }
    }

    pub fn clock(&self) -> StoreClock {
        self.clock.clone()
    }
}

impl RunRecords for TimedRecords<'_> {
    fn record_epoch(&mut self, run_id: i64, m: &EpochMetrics) -> Result<(), EngineError> {
        clocked(&self.clock, || self.inner.record_epoch(run_id, m))
    }
    fn record_verification(&mut self, v: &VerificationRecord) -> Result<(), EngineError> {
        clocked(&self.clock, || self.inner.record_verification(v))
    }
    fn record_dev_predictions(
        &mut self,
        run_id: i64,
        p: &DevPredictions,
    ) -> Result<(), EngineError> {
        clocked(&self.clock, || self.inner.record_dev_predictions(run_id, p))
    }
    fn record_checkpoint(&mut self, c: &CheckpointRecord) -> Result<(), EngineError> {
        clocked(&self.clock, || self.inner.record_checkpoint(c))
    }
    fn mark_checkpoint_deleted(&mut self, run_id: i64, epoch: u32) -> Result<(), EngineError> {
        clocked(&self.clock, || {
            self.inner.mark_checkpoint_deleted(run_id, epoch)
        })
    }
    fn mark_checkpoint_deleted_path(&mut self, run_id: i64, path: &str) -> Result<(), EngineError> {
        clocked(&self.clock, || {
            self.inner.mark_checkpoint_deleted_path(run_id, path)
        })
    }
    fn record_phases(
        &mut self,
        run_id: i64,
        epoch: u32,
        phases: &PhaseSeconds,
    ) -> Result<(), EngineError> {
        clocked(&self.clock, || {
            self.inner.record_phases(run_id, epoch, phases)
        })
    }
    fn truncate_epochs(&mut self, run_id: i64, after_epoch: u32) -> Result<(), EngineError> {
        clocked(&self.clock, || {
            self.inner.truncate_epochs(run_id, after_epoch)
        })
    }
    fn heartbeat(&mut self, run_id: i64) -> Result<(), EngineError> {
        clocked(&self.clock, || self.inner.heartbeat(run_id))
    }
    fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), EngineError> {
        clocked(&self.clock, || self.inner.finish_run(run_id, status, error))
    }
    fn record_skipped_images(
        &mut self,
        run_id: i64,
        epoch: u32,
        images: &[(String, String)],
    ) -> Result<(), EngineError> {
        clocked(&self.clock, || {
            self.inner.record_skipped_images(run_id, epoch, images)
        })
    }
    fn set_init_from(
        &mut self,
        run_id: i64,
        parent: i64,
        checkpoint: &str,
    ) -> Result<(), EngineError> {
        clocked(&self.clock, || {
            self.inner.set_init_from(run_id, parent, checkpoint)
        })
    }

    fn record_device(
        &mut self,
        run_id: i64,
        device: &str,
        threads: usize,
    ) -> Result<(), EngineError> {
        clocked(&self.clock, || {
            self.inner.record_device(run_id, device, threads)
        })
    }

    fn epochs(&self, run_id: i64) -> Result<Vec<EpochMetrics>, EngineError> {
        clocked(&self.clock, || self.inner.epochs(run_id))
    }
    fn checkpoints(&self, run_id: i64) -> Result<Vec<CheckpointRecord>, EngineError> {
        clocked(&self.clock, || self.inner.checkpoints(run_id))
    }
    fn lineage(&self, run_id: i64) -> Result<Lineage, EngineError> {
        clocked(&self.clock, || self.inner.lineage(run_id))
    }
    fn init_checkpoint(&self, link: &InitFromRun) -> Result<(i64, PathBuf), EngineError> {
        clocked(&self.clock, || self.inner.init_checkpoint(link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn every_call_through_the_wrapper_is_clocked_and_reaches_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut timed = TimedRecords::new(&mut store);
        let clock = timed.clock();
        assert_eq!(clock.seconds(), 0.0);
        // a read of an unknown run: an empty answer, still clocked
        assert!(timed.epochs(1).unwrap().is_empty());
        let after_read = clock.seconds();
        assert!(after_read > 0.0);
        timed.heartbeat(1).unwrap();
        assert!(clock.seconds() > after_read);
    }
}
