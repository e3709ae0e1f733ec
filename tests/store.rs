//! The experiment store: migrations from an older schema, concurrent writers, run claims.

use std::process::Command;
use std::time::Duration;

use runner::store::{
    migrations, CheckpointRecord, Claim, EpochMetrics, NewRun, PhaseSeconds, RecordOp, RunStatus,
    Store, Submit,
};

fn new_run(key: &str) -> NewRun {
    NewRun {
        key: key.to_string(),
        recipe: "recipes/x.toml".into(),
        config: serde_json::json!({"optimizer": {"lr": 0.1}}),
        overrides: serde_json::json!({"optimizer.lr": 0.1}),
        data_fingerprint: "fp".into(),
        sweep_id: None,
        parent_id: None,
        resumed_from: None,
    }
}

#[test]
fn a_version_one_store_is_migrated_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(migrations::V1).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        conn.execute(
            "INSERT INTO runs (key, recipe, config, status, created) VALUES ('k1', 'r.toml', '{\"a\":1}', 'done', '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO epochs (run_id, epoch, lr, train_loss, train_acc, val_loss, val_acc, images_per_sec, seconds) VALUES (1, 1, 0.1, 2.0, 0.3, 2.1, 0.25, 100.0, 3.0)",
            [],
        )
        .unwrap();
    }
    let mut store = Store::open(&db).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::SCHEMA_VERSION);
    let run = store.run(1).unwrap();
    assert_eq!(run.key, "k1");
    assert_eq!(run.status(), Some(RunStatus::Done));
    assert_eq!(run.parent_id, None);
    let epochs = store.epochs(1).unwrap();
    assert_eq!(epochs.len(), 1);
    assert_eq!(epochs[0].val_acc, Some(0.25));
    assert_eq!(epochs[0].verify_acc, None);
    // The new tables work.
    store
        .record_verification(&runner::store::VerificationRecord {
            run_id: 1,
            epoch: 1,
            split: "verify-dev".into(),
            metric: "cosine".into(),
            threshold: Some(0.5),
            accuracy: 0.6,
            accuracy_known: Some(0.7),
            impostor_rejection: Some(0.4),
            distribution: None,
        })
        .unwrap();
    assert_eq!(store.epochs(1).unwrap()[0].verify_acc, Some(0.6));
    // Opening again is a no-op.
    drop(store);
    let store = Store::open(&db).unwrap();
    assert_eq!(store.runs(None).unwrap().len(), 1);
}

#[test]
fn a_store_from_a_newer_runner_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = Store::open(&db).err().expect("must refuse");
    assert!(err.to_string().contains("newer"), "{err}");
}

const CHILD_ENV: &str = "RUNNER_STORE_WRITER_DB";
const WRITES: usize = 150;

/// Not a test of its own: the body of a writer process spawned by the test below.
#[test]
fn store_writer_child() {
    let Ok(db) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tag = std::env::var("RUNNER_STORE_WRITER_TAG").unwrap();
    let mut store = Store::open(std::path::Path::new(&db)).unwrap();
    for i in 0..WRITES {
        let id = store.insert_run(&new_run(&format!("{tag}-{i}"))).unwrap();
        store
            .record_epoch(
                id,
                &EpochMetrics {
                    epoch: 1,
                    lr: 0.1,
                    train_loss: 1.0,
                    train_acc: 0.5,
                    val_loss: Some(1.0),
                    val_acc: Some(0.5),
                    verify_acc: None,
                    images_per_sec: 10.0,
                    seconds: 1.0,
                    phase_seconds: None,
                },
            )
            .unwrap();
    }
}

#[test]
fn two_processes_writing_at_once_neither_lock_out_nor_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    // The store does not exist yet: both processes create and migrate it at once.
    let db = dir.path().join("shared.db");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|tag| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "store_writer_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_ENV, &db)
                .env("RUNNER_STORE_WRITER_TAG", tag)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "a writer failed (database is locked?)");
    }
    let mut store = Store::open(&db).unwrap();
    assert_eq!(store.runs(None).unwrap().len(), 2 * WRITES);
    let ok: String = store
        .connection()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn a_run_is_claimed_by_one_process_and_a_stale_claim_can_be_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("claim.db");
    let mut a = Store::open(&db).unwrap();
    let mut b = Store::open(&db).unwrap();
    let id = a.insert_run(&new_run("k")).unwrap();
    assert!(a.claim_run(id, Duration::from_secs(60)).unwrap());
    assert!(
        !b.claim_run(id, Duration::from_secs(60)).unwrap(),
        "held by a live claimant"
    );
    // With no heartbeat for longer than the staleness window, another process may take it.
    std::thread::sleep(Duration::from_millis(30));
    assert!(b.claim_run(id, Duration::from_millis(10)).unwrap());
    a.finish_run(id, RunStatus::Done, None).unwrap();
    assert!(
        !b.claim_run(id, Duration::from_millis(10)).unwrap(),
        "done runs are not claimable"
    );
    assert_eq!(b.status_of_key("k").unwrap(), Some(RunStatus::Done));
}

#[test]
fn an_infinite_verification_threshold_survives_the_store_and_prints_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let id = store.insert_run(&new_run("k")).unwrap();
    for (epoch, t) in [(1, f64::INFINITY), (2, f64::NEG_INFINITY), (3, 0.25)] {
        store
            .record_verification(&runner::store::VerificationRecord {
                run_id: id,
                epoch,
                split: "verify-dev".into(),
                metric: "cosine".into(),
                threshold: Some(t),
                accuracy: 0.5,
                accuracy_known: None,
                impostor_rejection: None,
                distribution: None,
            })
            .unwrap();
    }
    let v = store.verification(id).unwrap();
    let thresholds: Vec<Option<f64>> = v.iter().map(|r| r.threshold).collect();
    assert_eq!(
        thresholds,
        [Some(f64::INFINITY), Some(f64::NEG_INFINITY), Some(0.25)],
        "accept-all and reject-all stay distinct (not both NULL)"
    );
    let json: Vec<serde_json::Value> = v.iter().map(|r| serde_json::to_value(r).unwrap()).collect();
    assert_eq!(json[0]["threshold"], "inf");
    assert_eq!(json[1]["threshold"], "-inf");
    assert_eq!(json[2]["threshold"], 0.25);
}

#[test]
fn an_epochs_details_are_kept_exactly_and_go_with_its_checkpoint_or_a_truncation() {
    use runner::store::DevPredictions;
    use runner::verify::{ProbeTop1, ScoreDistribution};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let id = store.insert_run(&new_run("k")).unwrap();
    let dist = |e: u32| ScoreDistribution {
        lo: -1.0,
        hi: 1.0,
        genuine: vec![e, 0, 1],
        impostor: vec![0, 7, 0],
        probes: vec![ProbeTop1 {
            score: 0.1 * e as f32,
            correct: true,
            known: true,
        }],
        probes_total: 1,
        score_threshold: f64::NEG_INFINITY,
        wrong: Vec::new(),
        wrong_total: 0,
    };
    let classes = vec!["a".to_string(), "b".to_string()];
    let paths = ["1.jpg".to_string(), "2.jpg".to_string()];
    for e in 1..=3 {
        store.record_epoch(id, &epoch(e)).unwrap();
        store
            .record_verification(&runner::store::VerificationRecord {
                run_id: id,
                epoch: e,
                split: "verify-dev".into(),
                metric: "cosine".into(),
                threshold: Some(f64::INFINITY),
                accuracy: 0.5,
                accuracy_known: None,
                impostor_rejection: None,
                distribution: Some(dist(e)),
            })
            .unwrap();
        store
            .record_checkpoint(&CheckpointRecord {
                run_id: id,
                epoch: e,
                path: format!("epoch-{e}.safetensors"),
                metric_name: Some("val_acc".into()),
                metric: Some(0.5),
                kept: true,
            })
            .unwrap();
        let p = DevPredictions::capped(e, classes.clone(), &paths, &[0, 1], &[0, e % 2]);
        store.record_dev_predictions(id, &p).unwrap();
    }
    let got: Vec<ScoreDistribution> = store
        .score_distributions(id, "verify-dev")
        .unwrap()
        .into_iter()
        .map(|r| r.distribution)
        .collect();
    assert_eq!(got, vec![dist(1), dist(2), dist(3)]);
    let p2 = store.dev_predictions(id, 2).unwrap().unwrap();
    assert_eq!(
        (p2.truth.clone(), p2.predicted.clone()),
        (vec![0, 1], vec![0, 0])
    );
    assert_eq!(p2.misclassified[0].path, "2.jpg");
    // the checkpoint of epoch 1 deleted: its predictions go with it, its scores stay
    store.mark_checkpoint_deleted(id, 1).unwrap();
    assert_eq!(store.dev_prediction_epochs(id).unwrap(), vec![2, 3]);
    assert_eq!(
        store.score_distributions(id, "verify-dev").unwrap().len(),
        3
    );
    // a resume from epoch 2 recomputes epoch 3: its details go
    store.truncate_epochs(id, 2).unwrap();
    assert_eq!(store.dev_prediction_epochs(id).unwrap(), vec![2]);
    assert_eq!(
        store.score_distributions(id, "verify-dev").unwrap().len(),
        2
    );
}

/// A store as version `version` of the schema left it, with one run (`key`, `status`).
fn old_store(
    db: &std::path::Path,
    version: usize,
    key: &str,
    status: &str,
) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    let steps = [
        migrations::V1,
        migrations::V1_TO_V2,
        migrations::V2_TO_V3,
        migrations::V3_TO_V4,
        migrations::V4_TO_V5,
    ];
    for step in &steps[..version] {
        conn.execute_batch(step).unwrap();
    }
    conn.execute_batch(&format!("PRAGMA user_version = {version}"))
        .unwrap();
    conn.execute(
        "INSERT INTO runs (key, recipe, config, status, created) VALUES (?1, 'r.toml', '{}', ?2, '2026-01-01T00:00:00.000Z')",
        [key, status],
    )
    .unwrap();
    conn
}

#[test]
fn a_version_four_store_is_migrated_to_five_with_the_slurm_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v4.db");
    drop(old_store(&db, 4, "k4", "interrupted"));
    let mut store = Store::open(&db).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::SCHEMA_VERSION);
    let run = store.run(1).unwrap();
    assert_eq!((run.slurm_job_id, run.records_offset), (None, 0));
    // the interrupted run can be handed to Slurm
    match store
        .submit_key(&new_run("k4"), Duration::from_secs(60), false)
        .unwrap()
    {
        Submit::Submitted { id, previous } => {
            assert_eq!((id, previous), (1, Some(RunStatus::Interrupted)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.status_of_key("k4").unwrap(),
        Some(RunStatus::Submitted)
    );
}

#[test]
fn a_version_five_store_keeps_its_epochs_and_gains_phase_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v5.db");
    {
        let conn = old_store(&db, 5, "k5", "done");
        conn.execute(
            "INSERT INTO epochs (run_id, epoch, lr, train_loss, train_acc, images_per_sec, seconds) VALUES (1, 1, 0.1, 2.0, 0.5, 10.0, 3.0)",
            [],
        )
        .unwrap();
    }
    let mut store = Store::open(&db).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::SCHEMA_VERSION);
    let old = store.epochs(1).unwrap();
    assert_eq!((old[0].train_loss, old[0].phase_seconds), (2.0, None));
    // an old epoch's JSON has no phase_seconds key (not null)
    let json = serde_json::to_value(&old[0]).unwrap();
    assert!(json.get("phase_seconds").is_none(), "{json}");
    let phases = PhaseSeconds {
        train: 1.5,
        eval: 0.25,
        verify: 0.125,
        checkpoint: 0.0625,
        store: 0.03125,
        loader_wait: 1.0 / 3.0,
    };
    store.record_epoch(1, &epoch(2)).unwrap();
    store.record_phases(1, 2, &phases).unwrap();
    let got = store.epochs(1).unwrap();
    assert_eq!(got[1].phase_seconds, Some(phases), "stored exactly");
    assert_eq!(got[1].train_loss, epoch(2).train_loss);
    // phases of an epoch with no row change nothing
    store.record_phases(1, 9, &phases).unwrap();
    assert_eq!(store.epochs(1).unwrap().len(), 2);
}

fn epoch(e: u32) -> EpochMetrics {
    EpochMetrics {
        epoch: e,
        lr: 0.1,
        train_loss: 1.0 / e as f64,
        train_acc: 0.5,
        val_loss: Some(1.0),
        val_acc: Some(0.25 * e as f64),
        verify_acc: None,
        images_per_sec: 10.0,
        seconds: 1.0,
        phase_seconds: None,
    }
}

#[test]
fn a_submitted_run_is_busy_for_claims_and_its_records_import_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let id = match store
        .submit_key(&new_run("k"), Duration::from_secs(60), false)
        .unwrap()
    {
        Submit::Submitted { id, previous: None } => id,
        other => panic!("{other:?}"),
    };
    // every other command sees it busy, however old (no heartbeat takeover)
    assert_eq!(
        store
            .claim_key(&new_run("k"), Duration::ZERO, true, false)
            .unwrap(),
        Claim::Submitted(id)
    );
    assert!(!store.claim_run(id, Duration::ZERO).unwrap());
    assert_eq!(
        store
            .submit_key(&new_run("k"), Duration::ZERO, true)
            .unwrap(),
        Submit::AlreadySubmitted(id)
    );
    store.set_records(id, "/x/records.jsonl", 100).unwrap();
    let ops = vec![
        RecordOp::Started {
            host: "node1".into(),
            at: "2026-12-01T00:00:00.000Z".into(),
        },
        RecordOp::Epoch(epoch(1)),
        RecordOp::Checkpoint(CheckpointRecord {
            run_id: 0,
            epoch: 1,
            path: "/x/epoch-0001.safetensors".into(),
            metric_name: Some("val_acc".into()),
            metric: Some(0.25),
            kept: true,
        }),
    ];
    assert!(store.apply_records(id, &ops, 100, 300).unwrap());
    // the same lines again (a second collect that read the old offset) are refused
    assert!(!store.apply_records(id, &ops, 100, 300).unwrap());
    assert!(store
        .apply_records(
            id,
            &[
                RecordOp::Epoch(epoch(2)),
                RecordOp::CheckpointDeleted { epoch: 1 }
            ],
            300,
            400
        )
        .unwrap());
    assert_eq!(store.epochs(id).unwrap(), vec![epoch(1), epoch(2)]);
    let cks = store.checkpoints(id).unwrap();
    assert_eq!((cks.len(), cks[0].kept, cks[0].run_id), (1, false, id));
    let run = store.run(id).unwrap();
    assert_eq!(
        (run.host.as_deref(), run.records_offset, run.status.as_str()),
        (Some("node1"), 400, "submitted")
    );
    // settled once; a run no longer submitted is left alone
    assert!(store.settle(id, RunStatus::Done, None).unwrap());
    assert!(!store
        .settle(id, RunStatus::Interrupted, Some("gone"))
        .unwrap());
    assert_eq!(store.run(id).unwrap().status, "done");
    assert_eq!(
        store
            .submit_key(&new_run("k"), Duration::ZERO, true)
            .unwrap(),
        Submit::Done(id)
    );
}

#[test]
fn a_submission_sbatch_refused_returns_the_run_to_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let Submit::Submitted { id, previous } = store
        .submit_key(&new_run("k"), Duration::from_secs(60), false)
        .unwrap()
    else {
        panic!()
    };
    store.unsubmit(id, previous, "sbatch: error").unwrap();
    let run = store.run(id).unwrap();
    assert_eq!(
        (run.status.as_str(), run.error.as_deref()),
        ("queued", Some("sbatch: error"))
    );
    // and a local sweep can claim it
    assert!(matches!(
        store
            .claim_key(&new_run("k"), Duration::from_secs(60), false, false)
            .unwrap(),
        Claim::Claimed { resumed: false, .. }
    ));
}
