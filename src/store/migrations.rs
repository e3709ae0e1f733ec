//! Schema versions of the store and the migrations between them (`PRAGMA user_version`).

use rusqlite::Connection;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 11;

/// Version 1: the first release (runs, epochs, checkpoints; no sweeps, no verification table,
/// no lineage or heartbeat columns). Kept so tests can build an old store.
pub const V1: &str = "
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    recipe TEXT NOT NULL,
    config TEXT NOT NULL,
    overrides TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    error TEXT,
    host TEXT,
    version TEXT,
    data_fingerprint TEXT
);
CREATE INDEX runs_key ON runs(key);
CREATE TABLE epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    lr REAL, train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL,
    images_per_sec REAL, seconds REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    path TEXT NOT NULL,
    metric REAL,
    kept INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL
);
";

/// Version 1 -> 2: sweeps (and which runs each planned), lineage (parent, resumed_from), process claim (pid, heartbeat),
/// verify_acc per epoch, the monitored metric's name on checkpoints, verification results.
pub const V1_TO_V2: &str = "
CREATE TABLE sweeps (
    id INTEGER PRIMARY KEY,
    recipe TEXT NOT NULL,
    created TEXT NOT NULL,
    planned INTEGER NOT NULL
);
ALTER TABLE runs ADD COLUMN sweep_id INTEGER REFERENCES sweeps(id);
ALTER TABLE runs ADD COLUMN parent_id INTEGER REFERENCES runs(id);
ALTER TABLE runs ADD COLUMN resumed_from TEXT;
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN heartbeat TEXT;
ALTER TABLE epochs ADD COLUMN verify_acc REAL;
ALTER TABLE checkpoints ADD COLUMN metric_name TEXT;
CREATE TABLE verification (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    split TEXT NOT NULL,
    metric TEXT NOT NULL,
    threshold REAL,
    accuracy REAL NOT NULL,
    accuracy_known REAL,
    impostor_rejection REAL,
    created TEXT NOT NULL
);
CREATE TABLE sweep_runs (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
    run_id INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (sweep_id, run_id)
);
CREATE INDEX runs_status ON runs(status);
CREATE INDEX checkpoints_run ON checkpoints(run_id);
CREATE INDEX verification_run ON verification(run_id);
";

/// Version 2 -> 3: images a run skipped as unreadable (`data.on_bad_image = "skip"`), each
/// once, with the error and the epoch it was first met in.
pub const V2_TO_V3: &str = "
CREATE TABLE skipped_images (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    path TEXT NOT NULL,
    error TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (run_id, path)
);
";

/// Version 3 -> 4: pipelines. The run whose checkpoint a run started from
/// (`model.init_from = { recipe = ... }`) and that checkpoint's path.
pub const V3_TO_V4: &str = "
ALTER TABLE runs ADD COLUMN init_from_run INTEGER REFERENCES runs(id);
ALTER TABLE runs ADD COLUMN init_from_checkpoint TEXT;
";

/// Version 4 -> 5: Slurm. A sweep's job id; a run's job and array task, the task's output
/// file, the sweep that submitted it, and the record log in the run's folder with how much of
/// it was imported (`runner collect` resumes there, so importing twice adds nothing). Status
/// `submitted` needs no schema change.
pub const V4_TO_V5: &str = "
ALTER TABLE sweeps ADD COLUMN slurm_job_id INTEGER;
ALTER TABLE runs ADD COLUMN slurm_job_id INTEGER;
ALTER TABLE runs ADD COLUMN slurm_task_id INTEGER;
ALTER TABLE runs ADD COLUMN slurm_log TEXT;
ALTER TABLE runs ADD COLUMN records_path TEXT;
ALTER TABLE runs ADD COLUMN records_offset INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN slurm_sweep_id INTEGER REFERENCES sweeps(id);
";

/// Version 5 -> 6: where each epoch's wall time went (`PhaseSeconds` as a JSON object).
pub const V5_TO_V6: &str = "
ALTER TABLE epochs ADD COLUMN phase_seconds TEXT;
";

/// Version 6 -> 7: two stores never share files. The store's own id (`store_meta`), each
/// run's folder in its row (`runs.dir`: new runs get `<checkpoint.dir>/<key>/run-<id>-<first 8
/// of the store id>`), and the start time of the process that claimed a running run
/// (`runs.pid_start`, so a reused pid is not taken for the run's process). Existing runs keep
/// their folders: `fill_run_dirs` records where their files are.
pub const V6_TO_V7: &str = "
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO store_meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
ALTER TABLE runs ADD COLUMN dir TEXT;
ALTER TABLE runs ADD COLUMN pid_start INTEGER;
CREATE INDEX checkpoints_kept ON checkpoints(run_id, epoch, metric_name) WHERE kept = 1;
";

/// Version 7 -> 8: adaptive sweeps. One row per run and rung of a pruned sweep: the epoch of
/// the rung, the metric and the run's value there, and the decision (`promoted`, `pruned`).
/// Statuses `paused` and `pruned` need no schema change.
pub const V7_TO_V8: &str = "
CREATE TABLE rungs (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    sweep_id INTEGER REFERENCES sweeps(id),
    rung INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    decision TEXT NOT NULL,
    decided TEXT NOT NULL,
    PRIMARY KEY (run_id, rung)
);
";

/// Version 8 -> 9: per run, the runs median stopping compared it with
/// (`runs.prune_reference`, a JSON list of ids, fixed when the run was first claimed), and the
/// device it trained on with its thread count (`runs.device`, `runs.threads`: `plan --cost`
/// matches earlier runs by them).
pub const V8_TO_V9: &str = "
ALTER TABLE runs ADD COLUMN prune_reference TEXT;
ALTER TABLE runs ADD COLUMN device TEXT;
ALTER TABLE runs ADD COLUMN threads INTEGER;
";

/// Version 9 -> 10: search sweeps (`sweep.mode = "tpe"`). A study is one search, found again by
/// its key (a hash of the config and of `[sweep]` without `trials`), with the batch size its
/// trials are proposed in; a trial is its number, its parameters as the sampler saw them (a
/// JSON list) and the run key they planned.
pub const V9_TO_V10: &str = "
CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    recipe TEXT NOT NULL,
    batch INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE trials (
    study_id INTEGER NOT NULL REFERENCES studies(id),
    number INTEGER NOT NULL,
    params TEXT NOT NULL,
    run_key TEXT NOT NULL,
    PRIMARY KEY (study_id, number)
);
";

/// The folder of each run that has none recorded (runs from before version 7): the folder of
/// its newest checkpoint, else of its Slurm record log, else where those versions put it
/// (`<checkpoint.dir>/<key>/run-<id>`, from the working directory).
fn fill_run_dirs(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    // (id, key, config, records_path, newest checkpoint path)
    type Row = (i64, String, String, Option<String>, Option<String>);
    let rows: Vec<Row> = {
        let mut st = tx.prepare(
            "SELECT r.id, r.key, r.config, r.records_path,
                    (SELECT c.path FROM checkpoints c WHERE c.run_id = r.id ORDER BY c.id DESC LIMIT 1)
             FROM runs r WHERE r.dir IS NULL",
        )?;
        let rows = st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let parent = |p: &str| {
        std::path::Path::new(p)
            .parent()
            .map(|d| d.display().to_string())
    };
    for (id, key, config, records, checkpoint) in rows {
        let dir = checkpoint
            .as_deref()
            .and_then(parent)
            .or_else(|| records.as_deref().and_then(parent))
            .unwrap_or_else(|| {
                let config: serde_json::Value =
                    serde_json::from_str(&config).unwrap_or(serde_json::Value::Null);
                super::checkpoint_base(&config)
                    .join(&key)
                    .join(format!("run-{id}"))
                    .display()
                    .to_string()
            });
        tx.execute(
            "UPDATE runs SET dir = ?2 WHERE id = ?1",
            rusqlite::params![id, dir],
        )?;
    }
    Ok(())
}

/// Version 10 -> 11: what the report draws beyond metrics: each verification's score
/// distribution (genuine and impostor histograms, per-probe top-1 results, wrong decisions) and
/// the dev predictions at epochs whose checkpoint is kept (arrays as little-endian blobs).
pub const V10_TO_V11: &str = "
CREATE TABLE verification_scores (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    split TEXT NOT NULL,
    lo REAL NOT NULL,
    hi REAL NOT NULL,
    genuine BLOB NOT NULL,
    impostor BLOB NOT NULL,
    probe_scores BLOB NOT NULL,
    probe_flags BLOB NOT NULL,
    probes_total INTEGER NOT NULL,
    score_threshold REAL,
    wrong TEXT NOT NULL,
    wrong_total INTEGER NOT NULL,
    PRIMARY KEY (run_id, epoch, split)
);
CREATE TABLE dev_predictions (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    classes TEXT NOT NULL,
    truth BLOB NOT NULL,
    predicted BLOB NOT NULL,
    images_total INTEGER NOT NULL,
    misclassified TEXT NOT NULL,
    misclassified_total INTEGER NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
";

/// Brings a store at any older version up to `SCHEMA_VERSION`, each step in one transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<i64> {
    let steps: [(i64, &str); 11] = [
        (1, V1),
        (2, V1_TO_V2),
        (3, V2_TO_V3),
        (4, V3_TO_V4),
        (5, V4_TO_V5),
        (6, V5_TO_V6),
        (7, V6_TO_V7),
        (8, V7_TO_V8),
        (9, V8_TO_V9),
        (10, V9_TO_V10),
        (11, V10_TO_V11),
    ];
    let mut version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (target, sql) in steps {
        if version < target {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Re-read inside the write lock: another process may have migrated meanwhile.
            let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if now < target {
                tx.execute_batch(sql)?;
                if target == 7 {
                    fill_run_dirs(&tx)?;
                }
                tx.execute_batch(&format!("PRAGMA user_version = {target}"))?;
            }
            tx.commit()?;
            version = target;
        }
    }
    Ok(version)
}
