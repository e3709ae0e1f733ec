//! The leaderboard's input: every run with one row of metrics (one epoch, the one whose
//! checkpoint is used), or per-metric extremes over epochs; and the large store the
//! leaderboard benchmark fills.

use super::*;

pub use crate::recipe::metrics::{maximize, METRICS};

/// The epochs column of a metric name (never text pasted from the user into SQL).
fn metric_column(metric: &str) -> Option<&'static str> {
    Some(match metric {
        "train_loss" => "train_loss",
        "train_acc" => "train_acc",
        "val_loss" => "val_loss",
        "val_acc" => "val_acc",
        "verify_acc" => "verify_acc",
        "lr" => "lr",
        _ => return None,
    })
}

// METRICS (recipe::metrics): the epochs table's metric columns, in the order the leaderboard
// queries select them.

/// The run columns every leaderboard query selects first (`LeaderRow::from_run_columns`).
const LEADER_RUN_COLUMNS: &str = "r.id, r.key, r.status, r.recipe, r.sweep_id, r.overrides, \
     r.config, r.host, r.pid, r.pid_start, r.heartbeat";
const LEADER_RUN_N: usize = 11;

/// The six metrics from column `first` on, those that are recorded.
fn metric_values(
    r: &rusqlite::Row,
    first: usize,
) -> rusqlite::Result<std::collections::BTreeMap<String, f64>> {
    let mut out = std::collections::BTreeMap::new();
    for (i, n) in METRICS.iter().enumerate() {
        if let Some(v) = r.get::<_, Option<f64>>(first + i)? {
            out.insert(n.to_string(), v);
        }
    }
    Ok(out)
}

impl LeaderRow {
    fn from_run_columns(r: &rusqlite::Row) -> rusqlite::Result<LeaderRow> {
        let status: String = r.get(2)?;
        let host: Option<String> = r.get(7)?;
        let heartbeat: Option<String> = r.get(10)?;
        let stale = status == "running"
            && super::lifecycle::claimant_gone(
                host.as_deref(),
                r.get(8)?,
                r.get(9)?,
                heartbeat.as_deref(),
            );
        Ok(LeaderRow {
            id: r.get(0)?,
            key: r.get(1)?,
            status: if stale {
                STALE_STATUS.to_string()
            } else {
                status
            },
            recipe: r.get(3)?,
            sweep_id: r.get(4)?,
            overrides: serde_json::from_str(&r.get::<_, String>(5)?)
                .unwrap_or(serde_json::Value::Null),
            config_text: r.get(6)?,
            metrics: Default::default(),
            epoch: None,
            checkpoint: None,
            epochs: 0,
        })
    }
}

impl Store {
    /// The leaderboard's rows for `metric` (all runs, or one sweep's): for each run that
    /// recorded the metric, **one epoch**, with every metric at that epoch and the checkpoint
    /// of that epoch. The epoch is the best by `metric` (max, or min for losses; the earliest
    /// of equals) among the epochs with a kept end-of-epoch checkpoint; a run with none shows
    /// its last epoch that has the metric, with no checkpoint. `eval`, `export`, `match`,
    /// `resume` and `best` use the same rule (`row_epoch`), so the leaderboard's numbers are
    /// what its checkpoint scores. One query.
    pub fn leaderboard_rows(
        &self,
        sweep: Option<i64>,
        metric: &str,
    ) -> Result<Vec<LeaderRow>, StoreError> {
        self.one_epoch_rows(sweep, None, metric)
    }

    /// A run's leaderboard row for `metric` (see `leaderboard_rows`); `None` when the run
    /// recorded no finite value of it.
    pub fn row_epoch(&self, run_id: i64, metric: &str) -> Result<Option<LeaderRow>, StoreError> {
        Ok(self.one_epoch_rows(None, Some(run_id), metric)?.pop())
    }

    fn one_epoch_rows(
        &self,
        sweep: Option<i64>,
        run: Option<i64>,
        metric: &str,
    ) -> Result<Vec<LeaderRow>, StoreError> {
        let Some(column) = metric_column(metric) else {
            return Ok(Vec::new());
        };
        let order = if maximize(metric) { "DESC" } else { "ASC" };
        // The kept checkpoints (a partial index holds them) joined to their epochs, ranked
        // per run; runs with none fall back to their last epoch with the metric.
        let finite = format!("e.{column} BETWEEN -1e308 AND 1e308");
        let in_sweep =
            "(?1 IS NULL OR run_id IN (SELECT run_id FROM sweep_runs WHERE sweep_id = ?1))";
        let in_sweep_e = in_sweep.replace("OR run_id IN", "OR e.run_id IN");
        let sql = format!(
            "WITH kept AS (
                SELECT run_id, epoch, MAX(id) AS cid FROM checkpoints
                WHERE kept = 1 AND (metric_name IS NULL OR metric_name != 'interrupt')
                  AND (?2 IS NULL OR run_id = ?2) AND {in_sweep}
                GROUP BY run_id, epoch),
             ranked AS (
                SELECT k.run_id, k.epoch, k.cid, ROW_NUMBER() OVER (PARTITION BY k.run_id
                    ORDER BY e.{column} {order}, k.epoch) AS rn
                FROM kept k JOIN epochs e ON e.run_id = k.run_id AND e.epoch = k.epoch
                WHERE {finite}),
             best AS (SELECT run_id, epoch, cid FROM ranked WHERE rn = 1),
             chosen AS (
                SELECT run_id, epoch, cid FROM best
                UNION ALL
                SELECT e.run_id, MAX(e.epoch), NULL FROM epochs e
                WHERE {finite} AND (?2 IS NULL OR e.run_id = ?2) AND {in_sweep_e}
                  AND e.run_id NOT IN (SELECT run_id FROM best)
                GROUP BY e.run_id)
             SELECT {LEADER_RUN_COLUMNS}, e.epoch, c.path,
                    e.train_loss, e.train_acc, e.val_loss, e.val_acc, e.verify_acc, e.lr,
                    (SELECT COUNT(*) FROM epochs e3 WHERE e3.run_id = r.id)
             FROM chosen x JOIN runs r ON r.id = x.run_id
                  JOIN epochs e ON e.run_id = x.run_id AND e.epoch = x.epoch
                  LEFT JOIN checkpoints c ON c.id = x.cid
             ORDER BY r.id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sweep, run], |r| {
                let mut row = LeaderRow::from_run_columns(r)?;
                row.epoch = Some(r.get(LEADER_RUN_N)?);
                row.checkpoint = r.get(LEADER_RUN_N + 1)?;
                row.metrics = metric_values(r, LEADER_RUN_N + 2)?;
                row.epochs = r.get(LEADER_RUN_N + 8)?;
                Ok(row)
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Every run with the per-metric extremes over its epochs (max for accuracies, min for
    /// losses, the last lr), each from whatever epoch had it: `leaderboard
    /// --best-over-epochs`. No one epoch or checkpoint scores these together. One query.
    pub fn best_over_epochs_rows(&self, sweep: Option<i64>) -> Result<Vec<LeaderRow>, StoreError> {
        let sql = format!(
            "SELECT {LEADER_RUN_COLUMNS},
                    b.train_loss, b.train_acc, b.val_loss, b.val_acc, b.verify_acc, b.lr, b.epochs
             FROM runs r LEFT JOIN (
                SELECT run_id, MIN(train_loss) AS train_loss, MAX(train_acc) AS train_acc,
                       MIN(val_loss) AS val_loss, MAX(val_acc) AS val_acc,
                       MAX(verify_acc) AS verify_acc,
                       (SELECT e2.lr FROM epochs e2 WHERE e2.run_id = e.run_id ORDER BY e2.epoch DESC LIMIT 1) AS lr,
                       COUNT(*) AS epochs
                FROM epochs e GROUP BY run_id) b ON b.run_id = r.id
             WHERE (?1 IS NULL OR r.id IN (SELECT run_id FROM sweep_runs WHERE sweep_id = ?1))
             ORDER BY r.id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sweep], |r| {
                let mut row = LeaderRow::from_run_columns(r)?;
                row.metrics = metric_values(r, LEADER_RUN_N)?;
                row.epochs = r.get::<_, Option<i64>>(LEADER_RUN_N + 6)?.unwrap_or(0);
                Ok(row)
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

/// Fills a store with `runs` synthetic finished runs of `epochs` epochs each, with a checkpoint
/// row per epoch of which the best by `val_acc` and the last are kept (for the leaderboard
/// benchmark), in one transaction.
pub fn bench_fill(store: &mut Store, runs: usize, epochs: u32) -> Result<(), StoreError> {
    bench_fill_with(store, runs, epochs, &|i| {
        let lr = 0.001 * (1 + i % 100) as f64;
        let config = serde_json::json!({
            "model": {"kind": "convnext", "preset": "atto", "drop_path": (i % 3) as f64 * 0.1},
            "optimizer": {"kind": "sgd", "lr": lr, "momentum": 0.9},
            "train": {"epochs": epochs, "seed": i % 5},
        });
        (config, serde_json::json!({"optimizer.lr": lr}))
    })
}

/// The configuration and swept values of synthetic run i.
pub type BenchConfig<'a> = dyn Fn(usize) -> (serde_json::Value, serde_json::Value) + 'a;

/// `bench_fill` with the runs' configurations and swept values from `config` (the learning
/// rate in the metric curves is the config's `optimizer.lr`, else 0.001).
pub fn bench_fill_with(
    store: &mut Store,
    runs: usize,
    epochs: u32,
    config: &BenchConfig,
) -> Result<(), StoreError> {
    store.write(|tx| {
        let mut run = tx.prepare(
            "INSERT INTO runs (key, recipe, config, overrides, status, created, host, version)
             VALUES (?1, 'bench.toml', ?2, ?3, 'done', ?4, 'bench', 'bench')",
        )?;
        let mut ep = tx.prepare(
            "INSERT INTO epochs (run_id, epoch, lr, train_loss, train_acc, val_loss, val_acc, images_per_sec, seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 100.0, 1.0)",
        )?;
        // as `keep_best = 1, keep_last = 1` leaves them: a row per epoch, two kept
        let mut ck = tx.prepare(
            "INSERT INTO checkpoints (run_id, epoch, path, metric_name, metric, kept, created)
             VALUES (?1, ?2, ?3, 'val_acc', ?4, ?5, ?6)",
        )?;
        let created = now();
        for i in 0..runs {
            let (config, overrides) = config(i);
            let lr = config["optimizer"]["lr"].as_f64().unwrap_or(0.001);
            run.execute(params![format!("{i:016x}"), config.to_string(), overrides.to_string(), created])?;
            let id = tx.last_insert_rowid();
            let x = |e: u32| ((i * 7919 + e as usize * 104_729) % 1000) as f64 / 1000.0;
            let best = (1..=epochs).max_by(|a, b| x(*a).total_cmp(&x(*b)).then(b.cmp(a)));
            for e in 1..=epochs {
                let x = x(e);
                ep.execute(params![id, e, lr, 2.0 - x, x * 0.9, 2.1 - x, x * 0.85])?;
                let kept = Some(e) == best || e == epochs;
                let path = format!("runs/{i:016x}/run-{id}/epoch-{e:04}.safetensors");
                ck.execute(params![id, e, path, x * 0.85, kept as i64, created])?;
                if Some(e) == best {
                    bench_details(tx, id, e, (i as u64) << 32 | e as u64)?;
                }
            }
        }
        Ok(())
    })
}

/// Course-sized face-task details at a run's best epoch, as a real run records them: a score
/// distribution of 1,000 unknown faces against 200 identities and the predictions of 1,000 dev
/// images of 200 classes (generated numbers, for `runner bench report`).
fn bench_details(
    tx: &rusqlite::Transaction,
    run_id: i64,
    epoch: u32,
    seed: u64,
) -> rusqlite::Result<()> {
    use crate::verify::distribution::SCORE_BINS;
    use crate::verify::{ProbeTop1, ScoreDistribution};
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (probes, identities, classes, dev) = (1000usize, 200usize, 200u32, 1000usize);
    let mut genuine = vec![0u32; SCORE_BINS];
    let mut impostor = vec![0u32; SCORE_BINS];
    let bin = |s: f64| (((s + 1.0) / 2.0 * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
    let mut top = Vec::with_capacity(probes);
    for p in 0..probes {
        let known = p % 3 != 0;
        let g = 0.35 + 0.4 * uniform();
        if known {
            genuine[bin(g)] += 1;
        }
        let mut best = if known { g } else { -1.0 };
        for _ in 0..identities - known as usize {
            let s = 0.5 * uniform() - 0.1;
            impostor[bin(s)] += 1;
            best = f64::max(best, s);
        }
        top.push(ProbeTop1 {
            score: best as f32,
            correct: known && best == g,
            known,
        });
    }
    super::details::record_score_distribution_tx(
        tx,
        &super::ScoreDistributionRecord {
            run_id,
            epoch,
            split: "verify-dev".into(),
            distribution: ScoreDistribution {
                lo: -1.0,
                hi: 1.0,
                genuine,
                impostor,
                probes: top,
                probes_total: probes,
                score_threshold: 0.4,
                wrong: Vec::new(),
                wrong_total: 0,
            },
        },
    )?;
    let names: Vec<String> = (1..=classes).map(|c| format!("n{c:06}")).collect();
    let truth: Vec<u32> = (0..dev as u32).map(|i| i % classes).collect();
    let predicted: Vec<u32> = truth
        .iter()
        .map(|&t| {
            if uniform() < 0.8 {
                t
            } else {
                (uniform() * classes as f64) as u32 % classes
            }
        })
        .collect();
    let paths: Vec<String> = (0..dev).map(|i| format!("dev/{i:06}.jpg")).collect();
    let p = super::DevPredictions::capped(epoch, names, &paths, &truth, &predicted);
    super::details::record_dev_predictions_tx(tx, run_id, &p)
}
