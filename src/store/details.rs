//! The per-epoch details the report draws beyond the metrics: each verification's score
//! distribution (`verification_scores`) and the dev-set predictions at epochs whose checkpoint
//! is kept (`dev_predictions`). Arrays are stored as little-endian blobs.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::verify::distribution::{probe_flags, probes_from};
use crate::verify::{ScoreDistribution, WrongDecision};

/// Dev images whose prediction is kept per epoch; a larger dev set keeps every k-th image.
pub const MAX_DEV_IMAGES: usize = 50_000;
/// Misclassified dev images kept per epoch with their paths (for thumbnails).
pub const MAX_MISCLASSIFIED: usize = 32;

/// A misclassified dev image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Misclassified {
    pub path: String,
    /// Class indices (into [`DevPredictions::classes`]).
    pub truth: u32,
    pub predicted: u32,
}

/// The dev-set predictions of a run at an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevPredictions {
    pub epoch: u32,
    /// The class names (sorted identities of `classification/train`).
    pub classes: Vec<String>,
    /// True and predicted class of each kept dev image, in the dev set's order.
    #[serde(with = "le_base64")]
    pub truth: Vec<u32>,
    #[serde(with = "le_base64")]
    pub predicted: Vec<u32>,
    /// How many dev images were predicted (`truth.len()` unless capped).
    pub images_total: usize,
    /// Misclassified images with their paths: the first [`MAX_MISCLASSIFIED`] in dev order.
    pub misclassified: Vec<Misclassified>,
    pub misclassified_total: usize,
}

impl DevPredictions {
    /// The predictions of a dev set (`paths[i]`, `truth[i]`, `predicted[i]`), capped.
    pub fn capped(
        epoch: u32,
        classes: Vec<String>,
        paths: &[String],
        truth: &[u32],
        predicted: &[u32],
    ) -> DevPredictions {
        let stride = truth.len().div_ceil(MAX_DEV_IMAGES).max(1);
        let wrong: Vec<usize> = (0..truth.len())
            .filter(|&i| truth[i] != predicted[i])
            .collect();
        DevPredictions {
            epoch,
            classes,
            truth: truth.iter().step_by(stride).copied().collect(),
            predicted: predicted.iter().step_by(stride).copied().collect(),
            images_total: truth.len(),
            misclassified: wrong
                .iter()
                .take(MAX_MISCLASSIFIED)
                .map(|&i| Misclassified {
                    path: paths[i].clone(),
                    truth: truth[i],
                    predicted: predicted[i],
                })
                .collect(),
            misclassified_total: wrong.len(),
        }
    }
}

/// A verification's score distribution with its run, epoch and split.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreDistributionRecord {
    pub run_id: i64,
    pub epoch: u32,
    pub split: String,
    pub distribution: ScoreDistribution,
}

/// 4-byte numbers stored as little-endian bytes.
pub(crate) trait Le4: Copy {
    fn to_le(self) -> [u8; 4];
    fn from_le(b: [u8; 4]) -> Self;
}

impl Le4 for u32 {
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
    fn from_le(b: [u8; 4]) -> Self {
        u32::from_le_bytes(b)
    }
}

impl Le4 for f32 {
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
    fn from_le(b: [u8; 4]) -> Self {
        f32::from_le_bytes(b)
    }
}

fn blob<T: Le4>(v: &[T]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le()).collect()
}

fn unblob<T: Le4>(b: &[u8]) -> Vec<T> {
    b.chunks_exact(4)
        .map(|c| T::from_le([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// An array of [`Le4`] numbers as base64 of its little-endian bytes (record logs).
pub(crate) mod le_base64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: super::Le4>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(super::blob(v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: super::Le4>(d: D) -> Result<Vec<T>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        if bytes.len() % 4 != 0 {
            return Err(serde::de::Error::custom(
                "array of 4-byte numbers: length not a multiple of 4",
            ));
        }
        Ok(super::unblob(&bytes))
    }
}

/// A [`ScoreDistribution`] as a record log writes it: arrays in base64, the threshold as text
/// (it may be +-infinity).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackedDistribution {
    lo: f64,
    hi: f64,
    #[serde(with = "le_base64")]
    genuine: Vec<u32>,
    #[serde(with = "le_base64")]
    impostor: Vec<u32>,
    #[serde(with = "le_base64")]
    probe_scores: Vec<f32>,
    /// One byte per probe, base64.
    probe_flags: String,
    probes_total: usize,
    score_threshold: String,
    wrong: Vec<WrongDecision>,
    wrong_total: usize,
}

impl From<&ScoreDistribution> for PackedDistribution {
    fn from(d: &ScoreDistribution) -> Self {
        use base64::Engine;
        PackedDistribution {
            lo: d.lo,
            hi: d.hi,
            genuine: d.genuine.clone(),
            impostor: d.impostor.clone(),
            probe_scores: d.probes.iter().map(|p| p.score).collect(),
            probe_flags: base64::engine::general_purpose::STANDARD.encode(probe_flags(&d.probes)),
            probes_total: d.probes_total,
            score_threshold: d.score_threshold.to_string(),
            wrong: d.wrong.clone(),
            wrong_total: d.wrong_total,
        }
    }
}

impl TryFrom<&PackedDistribution> for ScoreDistribution {
    type Error = String;

    fn try_from(p: &PackedDistribution) -> Result<Self, String> {
        use base64::Engine;
        let flags = base64::engine::general_purpose::STANDARD
            .decode(&p.probe_flags)
            .map_err(|e| format!("probe_flags: {e}"))?;
        if flags.len() != p.probe_scores.len() || p.genuine.len() != p.impostor.len() {
            return Err("score distribution: array lengths differ".into());
        }
        Ok(ScoreDistribution {
            lo: p.lo,
            hi: p.hi,
            genuine: p.genuine.clone(),
            impostor: p.impostor.clone(),
            probes: probes_from(&p.probe_scores, &flags),
            probes_total: p.probes_total,
            score_threshold: p
                .score_threshold
                .parse()
                .map_err(|e| format!("score_threshold: {e}"))?,
            wrong: p.wrong.clone(),
            wrong_total: p.wrong_total,
        })
    }
}

pub(super) fn record_score_distribution_tx(
    tx: &rusqlite::Transaction,
    r: &ScoreDistributionRecord,
) -> rusqlite::Result<()> {
    let d = &r.distribution;
    let scores: Vec<f32> = d.probes.iter().map(|p| p.score).collect();
    tx.execute(
        "INSERT OR REPLACE INTO verification_scores (run_id, epoch, split, lo, hi, genuine,
            impostor, probe_scores, probe_flags, probes_total, score_threshold, wrong,
            wrong_total)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            r.run_id,
            r.epoch,
            r.split,
            d.lo,
            d.hi,
            blob(&d.genuine),
            blob(&d.impostor),
            blob(&scores),
            probe_flags(&d.probes),
            d.probes_total as i64,
            d.score_threshold,
            serde_json::to_string(&d.wrong).unwrap_or_else(|_| "[]".into()),
            d.wrong_total as i64,
        ],
    )?;
    Ok(())
}

pub(super) fn record_dev_predictions_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    p: &DevPredictions,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO dev_predictions (run_id, epoch, classes, truth, predicted,
            images_total, misclassified, misclassified_total)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            run_id,
            p.epoch,
            serde_json::to_string(&p.classes).unwrap_or_else(|_| "[]".into()),
            blob(&p.truth),
            blob(&p.predicted),
            p.images_total as i64,
            serde_json::to_string(&p.misclassified).unwrap_or_else(|_| "[]".into()),
            p.misclassified_total as i64,
        ],
    )?;
    Ok(())
}

/// Drops the details of a run's epochs after `after` (their epochs are recomputed).
pub(super) fn truncate_details_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    after: u32,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM verification_scores WHERE run_id = ?1 AND epoch > ?2",
        params![run_id, after],
    )?;
    tx.execute(
        "DELETE FROM dev_predictions WHERE run_id = ?1 AND epoch > ?2",
        params![run_id, after],
    )?;
    Ok(())
}

/// Drops an epoch's dev predictions (its checkpoint is no longer kept).
pub(super) fn drop_dev_predictions_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    epoch: u32,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM dev_predictions WHERE run_id = ?1 AND epoch = ?2",
        params![run_id, epoch],
    )?;
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, col: usize) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Store {
    /// Records the dev predictions of an epoch (replacing any of that epoch).
    pub fn record_dev_predictions(
        &mut self,
        run_id: i64,
        p: &DevPredictions,
    ) -> Result<(), StoreError> {
        self.write(|tx| record_dev_predictions_tx(tx, run_id, p))
    }

    /// A run's score distributions of one split, in epoch order.
    pub fn score_distributions(
        &self,
        run_id: i64,
        split: &str,
    ) -> Result<Vec<ScoreDistributionRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT epoch, lo, hi, genuine, impostor, probe_scores, probe_flags, probes_total,
                        score_threshold, wrong, wrong_total
                 FROM verification_scores WHERE run_id = ?1 AND split = ?2 ORDER BY epoch",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![run_id, split], |r| {
            let scores: Vec<u8> = r.get(5)?;
            let flags: Vec<u8> = r.get(6)?;
            let wrong: String = r.get(9)?;
            Ok(ScoreDistributionRecord {
                run_id,
                epoch: r.get(0)?,
                split: split.to_string(),
                distribution: ScoreDistribution {
                    lo: r.get(1)?,
                    hi: r.get(2)?,
                    genuine: unblob::<u32>(&r.get::<_, Vec<u8>>(3)?),
                    impostor: unblob::<u32>(&r.get::<_, Vec<u8>>(4)?),
                    probes: probes_from(&unblob::<f32>(&scores), &flags),
                    probes_total: r.get::<_, i64>(7)? as usize,
                    score_threshold: r.get(8)?,
                    wrong: parse_json(&wrong, 9)?,
                    wrong_total: r.get::<_, i64>(10)? as usize,
                },
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// A run's dev predictions at an epoch, if kept.
    pub fn dev_predictions(
        &self,
        run_id: i64,
        epoch: u32,
    ) -> Result<Option<DevPredictions>, StoreError> {
        self.conn
            .query_row(
                "SELECT classes, truth, predicted, images_total, misclassified,
                        misclassified_total
                 FROM dev_predictions WHERE run_id = ?1 AND epoch = ?2",
                params![run_id, epoch],
                |r| {
                    let classes: String = r.get(0)?;
                    let wrong: String = r.get(4)?;
                    Ok(DevPredictions {
                        epoch,
                        classes: parse_json(&classes, 0)?,
                        truth: unblob::<u32>(&r.get::<_, Vec<u8>>(1)?),
                        predicted: unblob::<u32>(&r.get::<_, Vec<u8>>(2)?),
                        images_total: r.get::<_, i64>(3)? as usize,
                        misclassified: parse_json(&wrong, 4)?,
                        misclassified_total: r.get::<_, i64>(5)? as usize,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The epochs of a run that have dev predictions.
    pub fn dev_prediction_epochs(&self, run_id: i64) -> Result<Vec<u32>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT epoch FROM dev_predictions WHERE run_id = ?1 ORDER BY epoch")
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![run_id], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::ProbeTop1;

    #[test]
    fn a_distribution_survives_the_record_log_form_exactly() {
        let d = ScoreDistribution {
            lo: -1.0,
            hi: 1.0,
            genuine: vec![0, 3, 1],
            impostor: vec![7, 0, 2],
            probes: vec![
                ProbeTop1 {
                    score: 0.123_456_7,
                    correct: true,
                    known: true,
                },
                ProbeTop1 {
                    score: -0.5,
                    correct: false,
                    known: false,
                },
            ],
            probes_total: 2,
            score_threshold: f64::NEG_INFINITY,
            wrong: vec![WrongDecision {
                id: "x.jpg".into(),
                truth: "n000000".into(),
                decided: "n000001".into(),
                score: 0.9,
                path: Some("/data/x.jpg".into()),
            }],
            wrong_total: 1,
        };
        let text = serde_json::to_string(&PackedDistribution::from(&d)).unwrap();
        let back: PackedDistribution = serde_json::from_str(&text).unwrap();
        assert_eq!(ScoreDistribution::try_from(&back).unwrap(), d);
    }

    #[test]
    fn predictions_keep_every_kth_image_beyond_the_cap_and_the_first_mistakes() {
        let n = MAX_DEV_IMAGES + 10;
        let truth: Vec<u32> = (0..n as u32).map(|i| i % 7).collect();
        let predicted: Vec<u32> = (0..n as u32)
            .map(|i| (i % 7 + (i % 3 == 0) as u32) % 7)
            .collect();
        let paths: Vec<String> = (0..n).map(|i| format!("{i}.jpg")).collect();
        let p = DevPredictions::capped(3, vec!["a".into()], &paths, &truth, &predicted);
        assert_eq!(p.truth.len(), n.div_ceil(2));
        assert_eq!(p.truth[1], truth[2]);
        assert_eq!(p.images_total, n);
        assert_eq!(p.misclassified_total, n.div_ceil(3));
        assert_eq!(p.misclassified.len(), MAX_MISCLASSIFIED);
        assert_eq!(p.misclassified[1].path, "3.jpg");
    }
}
