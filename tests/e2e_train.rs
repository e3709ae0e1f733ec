//! End-to-end training through the CLI: a run, exact resume after SIGTERM-style interruption
//! and after `kill -9`, divergence handling, and random kills that never corrupt anything.

mod common;

use common::{checkpoint_weights, epoch_metrics, last_checkpoint, s, Env};
use std::time::{Duration, Instant};

#[test]
fn a_run_trains_records_and_is_not_repeated() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let out = env.json(&["run", s(&r), "--format", "json"]);
    assert_eq!(out["status"], "done");
    let id = out["id"].as_i64().unwrap().to_string();
    let show = env.json(&["show", &id, "--format", "json"]);
    let epochs = show["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"].as_u64().unwrap() as usize, i + 1);
        for k in [
            "lr",
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "images_per_sec",
            "seconds",
        ] {
            assert!(e[k].as_f64().unwrap().is_finite(), "{k} in {e}");
        }
    }
    // Where each epoch's time went: verification only where it was scored (the last epoch),
    // checkpoint files written every epoch (the policy saves, then deletes older ones).
    common::assert_phase_seconds(&show);
    for (i, e) in epochs.iter().enumerate() {
        let verify = e["phase_seconds"]["verify"].as_f64().unwrap();
        assert_eq!(verify > 0.0, i == 2, "{e}");
        assert!(
            e["phase_seconds"]["checkpoint"].as_f64().unwrap() > 0.0,
            "{e}"
        );
        assert!(e["phase_seconds"]["store"].as_f64().unwrap() > 0.0, "{e}");
    }
    let text = String::from_utf8(env.run(&["show", &id]).stdout).unwrap();
    assert!(text.contains("phase seconds:"), "{text}");
    assert!(text.contains("loader_wait"), "{text}");
    // Verification scored at the end, on unknown_dev.
    let last = &epochs[2];
    assert!(last["verify_acc"].as_f64().is_some(), "{last}");
    assert_eq!(show["verification"].as_array().unwrap().len(), 1);
    // Checkpoints: the policy keeps the best and the last two.
    let kept = show["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kept"] == true)
        .count();
    assert!((1..=3).contains(&kept), "{}", show["checkpoints"]);
    for c in show["checkpoints"].as_array().unwrap() {
        let exists = std::path::Path::new(c["path"].as_str().unwrap()).exists();
        assert_eq!(exists, c["kept"] == true, "{c}");
    }
    // Same key again: nothing is trained, the same run is reported.
    let again = env.json(&["run", s(&r), "--format", "json"]);
    assert_eq!(again["id"], out["id"]);
    let runs = env.json(&["runs", "--format", "json"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
}

fn straight_run(env: &Env, name: &str, epochs: u32) -> serde_json::Value {
    let r = env.recipe(name, "");
    let out = env.json(&[
        "run",
        s(&r),
        "--set",
        &format!("train.epochs={epochs}"),
        "--format",
        "json",
    ]);
    assert_eq!(out["status"], "done");
    env.json(&["show", &out["id"].to_string(), "--format", "json"])
}

/// Polls the env's store until `ready` holds for its first run (2 minutes at most).
fn wait_for(env: &Env, what: &str, ready: impl Fn(&runner::store::Store, i64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if let Ok(store) = runner::store::Store::open(&env.db()) {
            let first = store.runs(None).ok().and_then(|r| r.first().map(|r| r.id));
            if first.is_some_and(|id| ready(&store, id)) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} did not happen in time");
    }
}

/// Asserts that a run has bitwise the per-epoch metrics and final weights of a straight one.
fn assert_same_as_straight(show: &serde_json::Value, straight: &serde_json::Value) {
    assert_eq!(epoch_metrics(show), epoch_metrics(straight));
    assert_eq!(
        checkpoint_weights(&last_checkpoint(show)),
        checkpoint_weights(&last_checkpoint(straight))
    );
}

#[test]
fn resuming_an_interrupted_run_gives_bitwise_the_same_weights_and_metrics() {
    let straight_env = Env::new();
    let straight = straight_run(&straight_env, "r.toml", 4);

    let env = Env::new();
    let r = env.recipe("r.toml", "");
    // Stop mid-epoch 2 (as Ctrl-C / SIGTERM does, deterministically placed): 3 steps an epoch
    // (30 training images, batches of 8, the last partial one dropped), so 5 steps = 1 2/3.
    let out = env
        .cmd()
        .args(["run", s(&r), "--set", "train.epochs=4", "--format", "json"])
        .env("RUNNER_STOP_AFTER_STEPS", "5")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["status"], "interrupted");
    let interrupted = env.json(&["show", &j["id"].to_string(), "--format", "json"]);
    assert!(
        interrupted["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["metric_name"] == "interrupt" && c["kept"] == true),
        "a mid-epoch checkpoint: {}",
        interrupted["checkpoints"]
    );
    assert_eq!(interrupted["epochs"].as_array().unwrap().len(), 1);
    // Running the same recipe resumes it (same run id).
    let resumed = env.json(&["run", s(&r), "--set", "train.epochs=4", "--format", "json"]);
    assert_eq!(resumed["status"], "done");
    assert_eq!(resumed["id"], j["id"]);
    let show = env.json(&["show", &resumed["id"].to_string(), "--format", "json"]);
    assert_same_as_straight(&show, &straight);
}

#[test]
fn sigterm_interrupts_cleanly_and_the_run_resumes_to_the_same_result() {
    let straight_env = Env::new();
    let straight = straight_run(&straight_env, "r.toml", 4);
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let mut child = env
        .cmd()
        .args(["run", s(&r), "--set", "train.epochs=4"])
        .spawn()
        .unwrap();
    // Wait for the first epoch to be recorded, then send SIGTERM.
    wait_for(&env, "a recorded epoch", |store, id| {
        store.epochs(id).map(|e| !e.is_empty()).unwrap_or(false)
    });
    unsafe_kill(child.id(), 15);
    let status = child.wait().unwrap();
    let store = runner::store::Store::open(&env.db()).unwrap();
    let run = store.runs(None).unwrap().remove(0);
    if run.status == "done" {
        // The signal landed after the last step: nothing to resume; still a clean exit.
        assert!(status.success());
    } else {
        assert_eq!(run.status, "interrupted", "exit {status:?}");
        assert_eq!(status.code(), Some(130), "an interrupted command exits 130");
        let resumed = env.json(&["run", s(&r), "--set", "train.epochs=4", "--format", "json"]);
        assert_eq!(resumed["status"], "done");
    }
    let show = env.json(&["show", &run.id.to_string(), "--format", "json"]);
    assert_same_as_straight(&show, &straight);
}

fn unsafe_kill(pid: u32, sig: i32) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[test]
fn kill_9_after_a_checkpoint_resumes_from_it_to_the_same_result() {
    let straight_env = Env::new();
    let straight = straight_run(&straight_env, "r.toml", 8);
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    // 8 epochs: the kill after epoch 2's checkpoint lands well before the end.
    let mut child = env
        .cmd()
        .args(["run", s(&r), "--set", "train.epochs=8"])
        .spawn()
        .unwrap();
    wait_for(&env, "an epoch-2 checkpoint", |store, id| {
        store
            .checkpoints(id)
            .map(|c| c.iter().any(|c| c.epoch >= 2))
            .unwrap_or(false)
    });
    unsafe_kill(child.id(), 9);
    let _ = child.wait();
    let store = runner::store::Store::open(&env.db()).unwrap();
    let run = store.runs(None).unwrap().remove(0);
    assert_eq!(
        run.status, "running",
        "the kill must land before the run ends, or this tests nothing"
    );
    let resumed = env.json(&["run", s(&r), "--set", "train.epochs=8", "--format", "json"]);
    assert_eq!(resumed["status"], "done");
    let show = env.json(&["show", &resumed["id"].to_string(), "--format", "json"]);
    assert_same_as_straight(&show, &straight);
}

#[test]
fn twenty_random_kills_never_corrupt_the_store_or_a_checkpoint_and_the_run_finishes() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let args = ["run", s(&r), "--set", "train.epochs=300"];
    // Generate the data once so that kills land in training, not in generation.
    let preview = env.path("preview.png");
    assert!(env
        .run(&["data", "preview", s(&r), "--out", s(&preview)])
        .status
        .success());
    assert!(std::fs::read_dir(env.path("data")).unwrap().count() == 1);
    let mut delays_ms: u64 = 137;
    let mut kills = 0;
    let mut recorded_before = 0;
    for i in 0..20 {
        // Each step sleeps 5 ms more, so that the 300 epochs outlast the 20 kills however fast
        // training gets (the sleep changes no number).
        let mut child = env
            .cmd()
            .args(args)
            .env("RUNNER_STEP_DELAY_MS", "5")
            .spawn()
            .unwrap();
        // A spread of moments: pseudo-random, reproducible.
        delays_ms = (delays_ms * 7919 + 311) % 400 + 30;
        std::thread::sleep(Duration::from_millis(delays_ms));
        let _ = child.kill();
        let _ = child.wait();
        let mut store =
            runner::store::Store::open(&env.db()).unwrap_or_else(|e| panic!("kill {i}: {e}"));
        let ok: String = store
            .connection()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "kill {i}");
        for run in store.runs(None).unwrap() {
            for c in store
                .checkpoints(run.id)
                .unwrap()
                .into_iter()
                .filter(|c| c.kept)
            {
                if std::path::Path::new(&c.path).exists() {
                    runner::train::checkpoint::read_checkpoint(std::path::Path::new(&c.path))
                        .unwrap_or_else(|e| panic!("kill {i}: corrupt checkpoint {}: {e}", c.path));
                }
            }
        }
        assert!(
            store.runs(None).unwrap().len() <= 1,
            "kill {i}: a restart must resume the same run"
        );
        // A restart resumes from the newest checkpoint: it redoes at most the epoch recorded
        // just before a kill cut its checkpoint short (a restart from scratch would drop all).
        let recorded = match store.runs(None).unwrap().first() {
            Some(run) => store.epochs(run.id).unwrap().len(),
            None => 0,
        };
        assert!(
            recorded + 1 >= recorded_before,
            "kill {i}: {recorded} epochs recorded, {recorded_before} before"
        );
        recorded_before = recorded;
        kills += 1;
        if store.runs(None).unwrap().iter().any(|r| r.status == "done") {
            break;
        }
    }
    assert!(
        kills >= 20,
        "the run finished before 20 kills: make it longer"
    );
    let out = env.json(&[
        "run",
        s(&r),
        "--set",
        "train.epochs=300",
        "--format",
        "json",
    ]);
    assert_eq!(out["status"], "done");
    let runs = env.json(&["runs", "--format", "json"]);
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "always the same run, resumed"
    );
    let show = env.json(&["show", &out["id"].to_string(), "--format", "json"]);
    assert_eq!(show["epochs"].as_array().unwrap().len(), 300);
    // And every resume was exact: the same as 300 epochs straight.
    let straight_env = Env::new();
    let straight = straight_run(&straight_env, "r.toml", 300);
    assert_same_as_straight(&show, &straight);
}

#[test]
fn an_absurd_lr_diverges_or_rolls_back_never_a_crash_or_a_nan_model() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let out = env.run(&[
        "run",
        s(&r),
        "--set",
        "optimizer.lr=1e12",
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["status"], "diverged");
    let show = env.json(&["show", &j["id"].to_string(), "--format", "json"]);
    let err = show["error"].as_str().unwrap();
    assert!(err.contains("epoch") && err.contains("step"), "{err}");
    // Rollback: a NaN injected at step 7 (epoch 2) reloads the epoch-1 checkpoint with the
    // lr scaled down, and the run finishes with finite metrics.
    let rollback_run = |env: &Env, read_every: &str| {
        let r = env.recipe("r.toml", "");
        let rb = env
            .cmd()
            .args([
                "run",
                s(&r),
                "--set",
                "train.on_divergence=\"rollback\"",
                "--set",
                "train.rollback_factor=0.5",
                "--format",
                "json",
            ])
            .env("RUNNER_INJECT_NAN_AT_STEP", "7")
            .env("RUNNER_READ_EVERY", read_every)
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&rb.stdout).unwrap();
        assert_eq!(
            j["status"],
            "done",
            "{}",
            String::from_utf8_lossy(&rb.stderr)
        );
        env.json(&["show", &j["id"].to_string(), "--format", "json"])
    };
    let show = rollback_run(&env, "1");
    // Reading the steps' numbers every 4 steps (a CUDA run's way: steps 8 to 11 are applied
    // before step 7 is judged) rolls back to the same checkpoint and trains the same epochs.
    let deferred = rollback_run(&Env::new(), "4");
    let numbers = |show: &serde_json::Value| -> Vec<[serde_json::Value; 4]> {
        show["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| ["train_loss", "val_loss", "val_acc", "lr"].map(|k| e[k].clone()))
            .collect()
    };
    assert_eq!(numbers(&deferred), numbers(&show));
    let epochs = show["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for e in epochs {
        assert!(
            e["train_loss"].as_f64().is_some_and(f64::is_finite),
            "no NaN epoch is recorded: {e}"
        );
    }
    // The epochs after the rollback ran at half the lr (step 7 falls in epoch 2 or 3).
    let lrs: Vec<f64> = epochs.iter().map(|e| e["lr"].as_f64().unwrap()).collect();
    assert_eq!(lrs[0], 0.05);
    assert_eq!(lrs[2], 0.025, "{lrs:?}");
}

#[test]
fn weights_blown_up_by_an_epochs_last_step_are_a_divergence_not_a_nan_model() {
    let env = Env::new();
    // One step an epoch (the 30 training images in one batch): the only step of the epoch
    // has a finite loss and gradient, and its update leaves infinite weights.
    let r = env.recipe("r.toml", "");
    let out = env.run(&[
        "run",
        s(&r),
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=64",
        "--set",
        "optimizer.lr=1e300",
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["status"], "diverged");
    let show = env.json(&["show", &j["id"].to_string(), "--format", "json"]);
    let err = show["error"].as_str().unwrap();
    assert!(
        err.contains("epoch 1") && err.contains("non-finite weights"),
        "{err}"
    );
    assert!(show["epochs"].as_array().unwrap().is_empty(), "{show}");
    assert!(show["checkpoints"].as_array().unwrap().is_empty(), "{show}");

    // With rollback: a warm-up epoch at a tiny lr, then epoch 2 at lr 1e300 blows the weights
    // up; the run reloads epoch 1 and reruns epoch 2 at lr 1e300 * 1e-302.
    let rb = env.run(&[
        "run",
        s(&r),
        "--set",
        "train.batch_size=64",
        "--set",
        "optimizer.lr=1e300",
        "--set",
        "scheduler.warmup_epochs=1",
        "--set",
        "scheduler.warmup_start_factor=1e-305",
        "--set",
        "train.on_divergence=\"rollback\"",
        "--set",
        "train.rollback_factor=1e-302",
        "--format",
        "json",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&rb.stdout).unwrap();
    assert_eq!(
        j["status"],
        "done",
        "{}",
        String::from_utf8_lossy(&rb.stderr)
    );
    let show = env.json(&["show", &j["id"].to_string(), "--format", "json"]);
    let epochs = show["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    let lr2 = epochs[1]["lr"].as_f64().unwrap();
    assert!((lr2 - 1e-2).abs() < 1e-12, "{lr2}");
    for e in epochs {
        assert!(
            e["val_loss"].as_f64().is_some_and(f64::is_finite),
            "no NaN epoch is recorded: {e}"
        );
    }
    let weights = checkpoint_weights(&last_checkpoint(&show));
    assert!(weights.values().flatten().all(|w| w.is_finite()));
}

#[test]
fn a_plateau_monitor_the_data_never_logs_is_a_clear_error_before_training() {
    let env = Env::new();
    let r = env.recipe("r.toml", "\n[scheduler]\nkind = \"plateau\"\n");
    // A generated set without its dev images: `val_loss` is never logged.
    let nodev = env.path("nodev");
    let synth = env.run(&[
        "data",
        "synth",
        "--out",
        s(&nodev),
        "--identities",
        "6",
        "--size",
        "32",
    ]);
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    let dev = nodev.join("classification/dev");
    std::fs::remove_dir_all(&dev).unwrap();
    std::fs::create_dir(&dev).unwrap();
    let text = std::fs::read_to_string(&r).unwrap();
    let r2 = env.path("nodev.toml");
    std::fs::write(
        &r2,
        text.replace(
            "root = \"synth\"",
            &format!("root = \"{}\"", nodev.display()),
        ),
    )
    .unwrap();
    let out = env.run(&["run", s(&r2)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scheduler.monitor = \"val_loss\"") && err.contains("no dev images"),
        "{err}"
    );
    let store = runner::store::Store::open(&env.db()).unwrap();
    let run = store.runs(None).unwrap().remove(0);
    assert!(
        store.epochs(run.id).unwrap().is_empty(),
        "nothing was trained"
    );
}

/// stderr of `runner --log-format json ...` (no --quiet), each line parsed as JSON.
fn json_log(env: &Env, args: &[&str]) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--db")
        .arg(env.db())
        .args(["--log-format", "json"])
        .args(args)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    (out.status.code(), events)
}

#[test]
fn log_format_json_writes_only_json_lines_on_stderr_errors_included() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let (code, events) = json_log(&env, &["run", s(&r), "--set", "train.epochs=2"]);
    assert_eq!(code, Some(0), "{events:?}");
    let epochs = events.iter().filter(|e| e["event"] == "epoch").count();
    assert_eq!(epochs, 2, "{events:?}");
    let end = events.last().unwrap();
    assert_eq!(end["event"], "run_finished", "{events:?}");
    assert_eq!(end["status"], "done");
    assert!(end["metrics"]["val_acc"].is_number(), "{end}");
    // A usage error (clap's) is an event too.
    let (code, events) = json_log(&env, &["eval", "1", "--split", "nope"]);
    assert_eq!(code, Some(2));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "error");
    assert!(events[0]["message"].as_str().unwrap().contains("nope"));
    // An error is an event too, with the exit status it ends in.
    let (code, events) = json_log(&env, &["run", "missing.toml"]);
    assert_eq!(code, Some(2));
    let end = events.last().unwrap();
    assert_eq!(end["event"], "error", "{events:?}");
    assert_eq!(end["code"], 2);
    assert!(
        end["message"].as_str().unwrap().contains("missing.toml"),
        "{end}"
    );
}
