//! Search studies (`sweep.mode = "tpe"`): a study found again by its key, the batch size its
//! trials are proposed in, and its trials (number, parameters as the sampler saw them, the
//! run key they planned). A trial is written once, when proposed, so a continued sweep reads
//! the same trials back instead of proposing them again.

use rusqlite::{params, OptionalExtension};

use super::*;

/// A study as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRecord {
    pub id: i64,
    pub key: String,
    pub batch: u32,
}

/// One proposed trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    pub number: usize,
    pub params: Vec<f64>,
    pub run_key: String,
}

impl Store {
    /// The study with `key`, created with `batch` when there is none.
    pub fn study(
        &mut self,
        key: &str,
        recipe: &str,
        batch: u32,
    ) -> Result<StudyRecord, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO studies (key, recipe, batch, created) VALUES (?1, ?2, ?3, ?4)",
                params![key, recipe, batch, now()],
            )?;
            tx.query_row(
                "SELECT id, key, batch FROM studies WHERE key = ?1",
                params![key],
                |r| {
                    Ok(StudyRecord {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        batch: r.get(2)?,
                    })
                },
            )
        })
    }

    /// The study with `key`, if recorded.
    pub fn find_study(&self, key: &str) -> Result<Option<StudyRecord>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, key, batch FROM studies WHERE key = ?1",
                params![key],
                |r| {
                    Ok(StudyRecord {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        batch: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every study, oldest first.
    pub fn studies(&self) -> Result<Vec<StudyRecord>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, key, batch FROM studies ORDER BY id")
            .map_err(|e| self.err(e))?;
        st.query_map([], |r| {
            Ok(StudyRecord {
                id: r.get(0)?,
                key: r.get(1)?,
                batch: r.get(2)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// A study's trials, by number.
    pub fn trials(&self, study_id: i64) -> Result<Vec<TrialRecord>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT number, params, run_key FROM trials WHERE study_id = ?1 ORDER BY number",
            )
            .map_err(|e| self.err(e))?;
        st.query_map(params![study_id], |r| {
            let text: String = r.get(1)?;
            Ok(TrialRecord {
                number: r.get::<_, i64>(0)? as usize,
                params: serde_json::from_str(&text).unwrap_or_default(),
                run_key: r.get(2)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Records a proposed trial (a trial already recorded keeps its first record).
    pub fn add_trial(&mut self, study_id: i64, trial: &TrialRecord) -> Result<(), StoreError> {
        let text = serde_json::to_string(&trial.params).unwrap_or_else(|_| "[]".into());
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO trials (study_id, number, params, run_key) VALUES (?1, ?2, ?3, ?4)",
                params![study_id, trial.number as i64, text, trial.run_key],
            )?;
            Ok(())
        })
    }
}
