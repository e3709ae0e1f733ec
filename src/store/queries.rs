//! Reading runs back: one run, every run, a run's epochs, checkpoints and verification, and
//! resolving a run reference (an id or a key prefix).

use super::*;

impl Store {
    /// A run's folder: the one its row records (every run since store version 7, and the
    /// older ones the migration filled in).
    pub fn run_dir(&self, id: i64) -> Result<PathBuf, StoreError> {
        let run = self.run(id)?;
        Ok(match run.dir {
            Some(d) => PathBuf::from(d),
            None => checkpoint_base(&run.config)
                .join(&run.key)
                .join(format!("run-{id}")),
        })
    }

    /// The images a run skipped as unreadable, by path.
    pub fn skipped_images(&self, run_id: i64) -> Result<Vec<SkippedImageRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, error, epoch FROM skipped_images WHERE run_id = ?1 ORDER BY path",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok(SkippedImageRecord {
                    path: r.get(0)?,
                    error: r.get(1)?,
                    epoch: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The status of the newest run with `key`, if any (for the planner's "done" column).
    pub fn status_of_key(&self, key: &str) -> Result<Option<RunStatus>, StoreError> {
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT status FROM runs WHERE key = ?1 ORDER BY
                   CASE status WHEN 'done' THEN 0 WHEN 'running' THEN 1 WHEN 'submitted' THEN 1 ELSE 2 END, id DESC LIMIT 1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(s.and_then(|s| RunStatus::parse(&s)))
    }

    /// The newest run with `key` (done ones first), if any.
    pub fn run_by_key(&self, key: &str) -> Result<Option<RunRow>, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM runs WHERE key = ?1 ORDER BY
                   CASE status WHEN 'done' THEN 0 WHEN 'running' THEN 1 WHEN 'submitted' THEN 1 ELSE 2 END, id DESC LIMIT 1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match id {
            Some(id) => self.run(id).map(Some),
            None => Ok(None),
        }
    }

    /// Resolves a run reference: a numeric id, or a (prefix of a) run key.
    pub fn resolve_run(&self, reference: &str) -> Result<i64, StoreError> {
        if let Ok(id) = reference.parse::<i64>() {
            let found: Option<i64> = self
                .conn
                .query_row("SELECT id FROM runs WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(id) = found {
                return Ok(id);
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM runs WHERE substr(key, 1, length(?1)) = ?1 ORDER BY id DESC")
            .map_err(|e| self.err(e))?;
        let ids: Vec<i64> = stmt
            .query_map(params![reference], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        match ids.as_slice() {
            [] => Err(StoreError::NoSuchRun(reference.to_string())),
            [id] => Ok(*id),
            many => {
                // Several runs of the same key (e.g. --force): the newest; distinct keys: ambiguous.
                let keys: std::collections::BTreeSet<String> = many
                    .iter()
                    .filter_map(|id| self.run(*id).ok().map(|r| r.key))
                    .collect();
                if keys.len() == 1 {
                    Ok(many[0])
                } else {
                    Err(StoreError::Ambiguous {
                        reference: reference.to_string(),
                        matches: many
                            .iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<RunRow, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                params![id],
                RunRow::from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NoSuchRun(id.to_string()))
    }

    /// Every run, oldest first; optionally only those of one sweep.
    pub fn runs(&self, sweep: Option<i64>) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR id IN
               (SELECT run_id FROM sweep_runs WHERE sweep_id = ?1)) ORDER BY id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sweep], RunRow::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A run's per-epoch metrics, in epoch order.
    pub fn epochs(&self, run_id: i64) -> Result<Vec<EpochMetrics>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT epoch, lr, train_loss, train_acc, val_loss, val_acc, verify_acc,
                        images_per_sec, seconds, phase_seconds
                 FROM epochs WHERE run_id = ?1 ORDER BY epoch",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], EpochMetrics::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A run's checkpoints (kept and deleted), in epoch order.
    pub fn checkpoints(&self, run_id: i64) -> Result<Vec<CheckpointRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, epoch, path, metric_name, metric, kept FROM checkpoints
                 WHERE run_id = ?1 ORDER BY epoch, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], CheckpointRecord::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A run's verification results, in epoch order.
    pub fn verification(&self, run_id: i64) -> Result<Vec<VerificationRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, epoch, split, metric, threshold, accuracy, accuracy_known,
                        impostor_rejection FROM verification WHERE run_id = ?1 ORDER BY epoch, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], VerificationRecord::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

impl Store {
    /// The runs that trained on `device` with `threads` threads: (id, resolved configuration).
    pub fn runs_on(
        &self,
        device: &str,
        threads: usize,
    ) -> Result<Vec<(i64, serde_json::Value)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, config FROM runs WHERE device = ?1 AND threads = ?2 ORDER BY id")
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![device, threads as i64], |r| {
            let text: String = r.get(1)?;
            Ok((
                r.get(0)?,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            ))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }
}
