//! The rung decisions of pruned sweeps (`[sweep.prune]`): per run and rung, the epoch, the
//! metric's value there and whether the run went on; pruned runs get status `pruned` in the
//! same transaction, so a decision is never half recorded.

use rusqlite::params;

use super::*;

/// One run's decision at one rung.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RungRecord {
    #[serde(skip)]
    pub run_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_id: Option<i64>,
    /// 0 for the first rung.
    pub rung: u32,
    pub epoch: u32,
    pub metric: String,
    /// The run's value of `metric` at `epoch` (None: it logged none there).
    pub value: Option<f64>,
    /// `promoted` or `pruned`.
    pub decision: String,
}

pub const PROMOTED: &str = "promoted";
pub const PRUNED: &str = "pruned";

impl Store {
    /// Records a rung's decisions at once, and marks the pruned runs `pruned`.
    pub fn record_rung_decisions(&mut self, decisions: &[RungRecord]) -> Result<(), StoreError> {
        self.write(|tx| {
            for d in decisions {
                tx.execute(
                    "INSERT OR REPLACE INTO rungs
                        (run_id, sweep_id, rung, epoch, metric, value, decision, decided)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        d.run_id,
                        d.sweep_id,
                        d.rung,
                        d.epoch,
                        d.metric,
                        d.value,
                        d.decision,
                        now()
                    ],
                )?;
                // a paused run stops here; one that failed or finished keeps its status
                if d.decision == PRUNED {
                    tx.execute(
                        "UPDATE runs SET status = 'pruned', finished = ?2, heartbeat = NULL
                         WHERE id = ?1 AND status = 'paused'",
                        params![d.run_id, now()],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// A run's rung decisions, first rung first.
    pub fn rungs(&self, run_id: i64) -> Result<Vec<RungRecord>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT run_id, sweep_id, rung, epoch, metric, value, decision
                 FROM rungs WHERE run_id = ?1 ORDER BY rung",
            )
            .map_err(|e| self.err(e))?;
        st.query_map(params![run_id], |r| {
            Ok(RungRecord {
                run_id: r.get(0)?,
                sweep_id: r.get(1)?,
                rung: r.get(2)?,
                epoch: r.get(3)?,
                metric: r.get(4)?,
                value: r.get(5)?,
                decision: r.get(6)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// The runs median stopping compares a run with, as fixed when it was first claimed.
    pub fn prune_reference(&self, run_id: i64) -> Result<Option<Vec<i64>>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT prune_reference FROM runs WHERE id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Fixes a run's reference runs (once: a second call keeps the first).
    pub fn set_prune_reference(&mut self, run_id: i64, ids: &[i64]) -> Result<(), StoreError> {
        let text = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        self.write(|tx| {
            tx.execute(
                "UPDATE runs SET prune_reference = ?2 WHERE id = ?1 AND prune_reference IS NULL",
                params![run_id, text],
            )?;
            Ok(())
        })
    }
}
