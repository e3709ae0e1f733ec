//! The leaderboard and the run lifecycle, through the real binary: one leaderboard row = one
//! epoch = the checkpoint `eval` / `export` / `resume` / `best` use; differing keys shown;
//! `resume` idempotent with its own key; no run stranded in `running` (broken pipes, dead
//! processes, reused pids); interrupts as a shell sends them (exit 130); two stores never
//! sharing run folders; quoted keys in `--set`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{code, s, stderr, Env};

/// Six epochs, verification every epoch, the best and the last checkpoint kept: the
/// per-metric extremes over epochs come from different epochs, and most epochs' checkpoints
/// are deleted.
const SIX_EPOCHS: &str = r#"
[verification]
every = 1
"#;

fn recipe(env: &Env, name: &str, extra: &str) -> std::path::PathBuf {
    let r = env.recipe(name, extra);
    let text = std::fs::read_to_string(&r)
        .unwrap()
        .replace("epochs = 3", "epochs = 6")
        .replace("keep_last = 2", "keep_last = 1");
    std::fs::write(&r, text).unwrap();
    r
}

/// Generates the recipe's synthetic data set with a throwaway store, so that a timed test
/// starts training at once.
fn warm_data(env: &Env, r: &std::path::Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.path("warm.db")), "--quiet", "run", s(r)])
        .args(["--set", "train.epochs=1"])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_leaderboard_row_is_one_epoch_and_the_checkpoint_eval_scores() {
    let env = Env::new();
    let r = recipe(
        &env,
        "lb.toml",
        &format!("{SIX_EPOCHS}\n[sweep]\nmode = \"grid\"\n[sweep.params]\n\"optimizer.lr\" = [0.05, 0.2]\n"),
    );
    env.json(&["sweep", s(&r), "--format", "json"]);
    for (metric, split) in [("val_acc", "dev"), ("verify_acc", "verify-dev")] {
        let lb = env.json(&["leaderboard", "--metric", metric, "--format", "json"]);
        let lb = lb.as_array().unwrap();
        assert_eq!(lb.len(), 2, "{lb:?}");
        for row in lb {
            let id = row["id"].to_string();
            let epoch = row["epoch"].as_u64().expect("an epoch column");
            let checkpoint = row["checkpoint"].as_str().expect("a checkpoint path");
            // every metric of the row is that epoch's
            let show = env.json(&["show", &id, "--format", "json"]);
            let at = show["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["epoch"] == epoch)
                .unwrap()
                .clone();
            for m in [
                "train_loss",
                "train_acc",
                "val_loss",
                "val_acc",
                "verify_acc",
            ] {
                assert_eq!(
                    row[m], at[m],
                    "run {id} {m}: the row's value is epoch {epoch}'s"
                );
            }
            // the epoch is the best by the metric among the epochs with a kept checkpoint
            let kept: Vec<u64> = show["checkpoints"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["kept"] == true)
                .map(|c| c["epoch"].as_u64().unwrap())
                .collect();
            assert!(kept.contains(&epoch), "{kept:?} {epoch}");
            let best_kept = show["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| kept.contains(&e["epoch"].as_u64().unwrap()))
                .map(|e| f(&e[metric]))
                .fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(f(&row[metric]), best_kept);
            // and it is what `eval --metric` scores, on that same checkpoint
            let ev = env.json(&[
                "eval", &id, "--split", split, "--metric", metric, "--format", "json",
            ]);
            assert_eq!(ev["checkpoint"], checkpoint, "{ev}");
            assert_eq!(ev["epoch"], epoch);
            assert_eq!(
                f(&ev["accuracy"]),
                f(&row[metric]),
                "run {id}: leaderboard {metric} against eval --split {split}"
            );
        }
        // `best` is the leaderboard's top row
        let best = env.json(&["best", "--metric", metric, "--format", "json"]);
        assert_eq!(best["id"], lb[0]["id"]);
        assert_eq!(best["leaderboard"]["epoch"], lb[0]["epoch"]);
        assert_eq!(best["leaderboard"]["checkpoint"], lb[0]["checkpoint"]);
    }
    // `--where` filters on the row's epoch
    let lb = env.json(&["leaderboard", "--format", "json"]);
    let first = &lb[0];
    let filter = format!("epoch = {} and id = {}", first["epoch"], first["id"]);
    let only = env.json(&["leaderboard", "--where", &filter, "--format", "json"]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    // the per-metric extremes stay available, labelled so
    let over = env.json(&["leaderboard", "--best-over-epochs", "--format", "json"]);
    let over0 = &over[0]["best_over_epochs"];
    assert!(
        over0["val_acc"].is_number() && over[0].get("val_acc").is_none(),
        "{over}"
    );
    let table = env.run(&["leaderboard", "--best-over-epochs"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("best_over_epochs.val_acc"), "{text}");
    // export and resume --from best take the same checkpoint
    let id = lb[0]["id"].to_string();
    let out = env.path("w.safetensors");
    let ex = env.run(&["export", &id, "--out", s(&out), "--metric", "val_acc"]);
    assert_eq!(code(&ex), Some(0), "{}", stderr(&ex));
    let resumed = env.json(&[
        "resume", &id, "--metric", "val_acc", "--epochs", "8", "--format", "json",
    ]);
    let show = env.json(&["show", &resumed["id"].to_string(), "--format", "json"]);
    assert_eq!(show["resumed_from"], lb[0]["checkpoint"]);
}

#[test]
fn a_run_without_a_kept_checkpoint_shows_its_last_epoch_without_one() {
    let env = Env::new();
    let r = recipe(&env, "none.toml", "");
    env.json(&["run", s(&r), "--format", "json"]);
    // the checkpoint files are gone and so marked
    let db = rusqlite::Connection::open(env.db()).unwrap();
    db.execute("UPDATE checkpoints SET kept = 0", []).unwrap();
    drop(db);
    let lb = env.json(&["leaderboard", "--format", "json"]);
    assert_eq!(lb[0]["epoch"], 6);
    assert!(lb[0]["checkpoint"].is_null(), "{lb}");
    let ev = env.run(&["eval", "1", "--split", "dev"]);
    assert_eq!(code(&ev), Some(2));
    assert!(
        stderr(&ev).contains("kept no checkpoint"),
        "{}",
        stderr(&ev)
    );
}

#[test]
fn runs_that_differ_only_by_seed_show_the_seed_and_real_values() {
    let env = Env::new();
    let r = recipe(&env, "seeds.toml", "");
    for seed in ["1", "2"] {
        let set = format!("train.seed={seed}");
        env.json(&[
            "run",
            s(&r),
            "--set",
            &set,
            "--set",
            "optimizer.lr=0.002",
            "--format",
            "json",
        ]);
    }
    let lb = env.json(&["leaderboard", "--format", "json"]);
    let lb = lb.as_array().unwrap();
    let seeds: Vec<&serde_json::Value> = lb.iter().map(|r| &r["differs"]["train.seed"]).collect();
    assert!(
        seeds.contains(&&serde_json::json!(1)) && seeds.contains(&&serde_json::json!(2)),
        "{lb:?}"
    );
    // the same lr for both: not a difference
    assert!(
        lb.iter()
            .all(|r| r["differs"].get("optimizer.lr").is_none()),
        "{lb:?}"
    );
    let table = env.run(&["leaderboard"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().next().unwrap().contains("train.seed"),
        "{text}"
    );
    // a third run with another lr: the column shows every run's real lr, never `-`
    env.json(&["run", s(&r), "--set", "train.seed=3", "--format", "json"]);
    let lb = env.json(&["leaderboard", "--format", "json"]);
    let lrs: Vec<f64> = lb
        .as_array()
        .unwrap()
        .iter()
        .map(|r| f(&r["differs"]["optimizer.lr"]))
        .collect();
    assert!(lrs.contains(&0.002) && lrs.contains(&0.05), "{lrs:?}");
}

#[test]
fn resume_is_idempotent_and_keyed_apart_from_a_fresh_run() {
    let env = Env::new();
    let r = recipe(&env, "resume.toml", "");
    env.json(&["run", s(&r), "--format", "json"]);
    let first = env.json(&["resume", "1", "--epochs", "8", "--format", "json"]);
    assert_eq!(first["status"], "done");
    // the same resume again: that run, nothing trained
    let again = env.json(&["resume", "1", "--epochs", "8", "--format", "json"]);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(common::runs_in_store(&env), 2);
    // a fresh run of the same configuration is not the resumed one
    let fresh = env.json(&["run", s(&r), "--set", "train.epochs=8", "--format", "json"]);
    assert_ne!(fresh["id"], first["id"]);
    assert_ne!(fresh["key"], first["key"]);
    assert_eq!(common::runs_in_store(&env), 3);
    // --force makes a new one
    let forced = env.json(&[
        "resume", "1", "--epochs", "8", "--force", "--format", "json",
    ]);
    assert_ne!(forced["id"], first["id"]);
    assert_eq!(forced["key"], first["key"]);
    // an interrupted resume is continued by the same command
    let out = env
        .cmd()
        .args(["resume", "1", "--epochs", "9", "--format", "json"])
        .env("RUNNER_STOP_AFTER_STEPS", "5")
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(130), "{}", stderr(&out));
    let n = common::runs_in_store(&env);
    let done = env.json(&["resume", "1", "--epochs", "9", "--format", "json"]);
    assert_eq!(done["status"], "done");
    assert_eq!(common::runs_in_store(&env), n, "continued, not a new run");
    let show = env.json(&["show", &done["id"].to_string(), "--format", "json"]);
    let from = show["resumed_from"].as_str().unwrap();
    let start: u64 = from[from.len() - "0000.safetensors".len()..][..4]
        .parse()
        .unwrap();
    let epochs: Vec<u64> = show["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (start + 1..=9).collect::<Vec<_>>(), "from {from}");
}

/// Reads `child`'s stderr until a line contains `needle` (or it ends).
fn wait_for_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, needle: &str) {
    for line in lines.by_ref() {
        if line.unwrap().contains(needle) {
            return;
        }
    }
    panic!("no line with `{needle}`");
}

fn status_of(env: &Env, id: &str) -> String {
    env.json(&["show", id, "--format", "json"])["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_closed_output_pipe_checkpoints_the_run_as_interrupted() {
    let env = Env::new();
    let r = recipe(&env, "pipe.toml", "");
    warm_data(&env, &r);
    // `runner run ... 2>&1 | head -1`: the reader goes away after the first progress line
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.db()), "run", s(&r)])
        .current_dir(env.dir.path())
        .env("RUNNER_STEP_DELAY_MS", "40")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    wait_for_line(&mut lines, "epoch");
    drop(lines);
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(status_of(&env, "1"), "interrupted");
    let show = env.json(&["show", "1", "--format", "json"]);
    assert!(
        show["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kept"] == true),
        "{show}"
    );
    // the next run continues it
    let done = env.json(&["run", s(&r), "--format", "json"]);
    assert_eq!(
        (done["id"].as_i64(), done["status"].as_str()),
        (Some(1), Some("done"))
    );
}

#[test]
fn a_run_whose_process_is_gone_reads_as_stale_and_is_continued() {
    let env = Env::new();
    let r = recipe(&env, "stale.toml", "");
    let mut child = env
        .cmd()
        .args(["run", s(&r)])
        .env("RUNNER_STEP_DELAY_MS", "40")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // killed after its first epoch is recorded
    let t = Instant::now();
    loop {
        let out = env.run(&["show", "1", "--format", "json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if !v["epochs"].as_array().unwrap().is_empty() {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no epoch recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let db = rusqlite::Connection::open(env.db()).unwrap();
    let raw: String = db
        .query_row("SELECT status FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(raw, "running", "what a killed process leaves");
    // reading commands show it as stale, without writing
    assert_eq!(status_of(&env, "1"), "interrupted (stale)");
    let runs = env.json(&["runs", "--format", "json"]);
    assert_eq!(runs[0]["status"], "interrupted (stale)");
    let lb = env.json(&["leaderboard", "--format", "json"]);
    assert_eq!(lb[0]["status"], "interrupted (stale)");
    let raw: String = db
        .query_row("SELECT status FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(raw, "running");
    // a live pid that is not the claimant's process (a reused pid) is stale too
    db.execute(
        "UPDATE runs SET pid = ?1, pid_start = 1, heartbeat = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        [std::process::id() as i64],
    )
    .unwrap();
    assert_eq!(status_of(&env, "1"), "interrupted (stale)");
    drop(db);
    // the next run continues it
    let done = env.json(&["run", s(&r), "--format", "json"]);
    assert_eq!(
        (done["id"].as_i64(), done["status"].as_str()),
        (Some(1), Some("done"))
    );
}

#[test]
fn an_interrupt_sent_to_process_and_group_checkpoints_once_and_exits_130() {
    let env = Env::new();
    let r = recipe(&env, "sig.toml", "");
    warm_data(&env, &r);
    // as a shell's `timeout -s INT`: the signal goes to runner and to its process group
    // (`setsid`: a group of its own, away from the test harness)
    if std::process::Command::new("setsid")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no setsid");
        return;
    }
    let out = std::process::Command::new("setsid")
        .args(["--wait", "timeout", "--preserve-status", "-s", "INT", "3"])
        .arg(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.db()), "--quiet", "run", s(&r)])
        .current_dir(env.dir.path())
        .env("RUNNER_STEP_DELAY_MS", "200")
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(130), "{}", stderr(&out));
    assert_eq!(status_of(&env, "1"), "interrupted");
    let show = env.json(&["show", "1", "--format", "json"]);
    assert!(
        show["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kept"] == true),
        "checkpointed: {show}"
    );
    let done = env.json(&["run", s(&r), "--format", "json"]);
    assert_eq!(
        (done["id"].as_i64(), done["status"].as_str()),
        (Some(1), Some("done"))
    );
}

#[test]
fn two_stores_in_one_folder_never_share_run_folders() {
    let env = Env::new();
    let r = recipe(&env, "two.toml", "");
    let a = env.json(&["run", s(&r), "--format", "json"]);
    let show_a = env.json(&["show", "1", "--format", "json"]);
    let files_a: Vec<(String, Vec<u8>)> = show_a["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kept"] == true)
        .map(|c| {
            let p = c["path"].as_str().unwrap().to_string();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert!(!files_a.is_empty());
    // a second store, same folder, same recipe: same key, run id 1 again
    let other = env.path("fresh.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "--db",
            s(&other),
            "--quiet",
            "run",
            s(&r),
            "--format",
            "json",
        ])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (a["id"].clone(), a["key"].clone()),
        (b["id"].clone(), b["key"].clone())
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&other), "show", "1", "--format", "json"])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let show_b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(show_a["dir"], show_b["dir"]);
    for c in show_b["checkpoints"].as_array().unwrap() {
        assert!(files_a
            .iter()
            .all(|(p, _)| p != c["path"].as_str().unwrap()));
    }
    // the first store's checkpoints are untouched
    for (p, bytes) in &files_a {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{p}");
    }
}

#[test]
fn a_version_six_store_keeps_its_run_folders() {
    let env = Env::new();
    let db = env.db();
    let conn = rusqlite::Connection::open(&db).unwrap();
    use runner::store::migrations as m;
    for step in [
        m::V1,
        m::V1_TO_V2,
        m::V2_TO_V3,
        m::V3_TO_V4,
        m::V4_TO_V5,
        m::V5_TO_V6,
    ] {
        conn.execute_batch(step).unwrap();
    }
    conn.execute_batch("PRAGMA user_version = 6").unwrap();
    let config = r#"{"checkpoint": {"dir": "old-runs"}}"#;
    for key in ["k1", "k2"] {
        conn.execute(
            "INSERT INTO runs (key, recipe, config, status, created) VALUES (?1, 'r.toml', ?2, 'done', '2026-01-01T00:00:00.000Z')",
            [key, config],
        )
        .unwrap();
    }
    // run 1 has a checkpoint where version 6 put it; run 2 has none
    let ck = env.path("old-runs/k1/run-1/epoch-0001.safetensors");
    conn.execute(
        "INSERT INTO checkpoints (run_id, epoch, path, metric, kept, created) VALUES (1, 1, ?1, 0.5, 1, '2026-01-01T00:00:00.000Z')",
        [s(&ck)],
    )
    .unwrap();
    drop(conn);
    let one = env.json(&["show", "1", "--format", "json"]);
    assert_eq!(one["dir"], s(&env.path("old-runs/k1/run-1")));
    let two = env.json(&["show", "2", "--format", "json"]);
    let cwd = std::fs::canonicalize(env.dir.path()).unwrap();
    let two_dir = two["dir"].as_str().unwrap();
    assert!(
        two_dir == s(&env.path("old-runs/k2/run-2"))
            || two_dir == s(&cwd.join("old-runs/k2/run-2")),
        "{two_dir}"
    );
}

#[test]
fn a_quoted_sweep_key_can_be_set_from_the_command_line() {
    let env = Env::new();
    let r = recipe(&env, "quoted.toml", "");
    let plan = env.json(&[
        "plan",
        s(&r),
        "--set",
        r#"sweep.params."optimizer.lr"=[0.01,0.02]"#,
        "--format",
        "json",
    ]);
    let lrs: Vec<f64> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|p| f(&p["overrides"]["optimizer.lr"]))
        .collect();
    assert_eq!(lrs, vec![0.01, 0.02]);
}
