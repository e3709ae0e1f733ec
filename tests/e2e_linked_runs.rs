//! `runner resume` of a finished run as a new linked run: ReduceLROnPlateau's state carries
//! over (or is replayed on the parent's metrics for a new lr), the new recipe's divergence
//! policy applies, and a run resumed from another directory keeps its checkpoints where they
//! were written.

mod common;

use common::{checkpoint_weights, epoch_metrics, last_checkpoint, s, Env};

/// Halves the lr after every epoch whose training loss is not a new maximum: with a falling
/// loss, from epoch 2 on, so the schedule's state matters at every epoch.
const PLATEAU: &str = r#"
[scheduler]
kind = "plateau"
monitor = "train_loss"
mode = "max"
patience = 0
factor = 0.5
"#;

fn run_json(env: &Env, recipe: &std::path::Path, sets: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", s(recipe), "--format", "json"];
    for kv in sets {
        args.extend(["--set", kv]);
    }
    env.json(&args)
}

fn show(env: &Env, id: &serde_json::Value) -> serde_json::Value {
    env.json(&["show", &id.to_string(), "--format", "json"])
}

fn lrs(show: &serde_json::Value) -> Vec<f64> {
    show["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["lr"].as_f64().unwrap())
        .collect()
}

/// The epochs of `show` numbered `from` and later, without timings or verification (scored
/// at a run's last epoch, which differs between a 2-epoch parent and a 4-epoch run).
fn epochs_from(show: &serde_json::Value, from: u64) -> Vec<serde_json::Value> {
    epoch_metrics(show)
        .into_iter()
        .filter(|e| e["epoch"].as_u64().unwrap() >= from)
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("verify_acc");
            e
        })
        .collect()
}

#[test]
fn resuming_a_plateau_run_to_more_epochs_continues_its_state_exactly() {
    let env = Env::new();
    let r = env.recipe("r.toml", PLATEAU);
    let straight = run_json(&env, &r, &["train.epochs=4"]);
    let straight = show(&env, &straight["id"]);
    let straight_lrs = lrs(&straight);
    assert_eq!(straight_lrs[0], 0.05);
    assert!(
        straight_lrs[3] < straight_lrs[1],
        "the plateau schedule must lower the lr in this test: {straight_lrs:?}"
    );

    let parent = run_json(&env, &r, &["train.epochs=2"]);
    assert_eq!(parent["status"], "done");
    let linked = env.json(&[
        "resume",
        &parent["id"].to_string(),
        "--from",
        "last",
        "--epochs",
        "4",
        "--format",
        "json",
    ]);
    assert_eq!(linked["status"], "done");
    let linked = show(&env, &linked["id"]);
    assert_eq!(linked["parent"], parent["id"]);
    assert_eq!(epochs_from(&linked, 3), epochs_from(&straight, 3));
    assert_eq!(
        checkpoint_weights(&last_checkpoint(&linked)),
        checkpoint_weights(&last_checkpoint(&straight))
    );
}

#[test]
fn a_new_lr_replays_the_plateau_schedule_on_the_parents_metrics() {
    let env = Env::new();
    // Watching the lr itself makes the reductions independent of training: a plateau of the
    // lr after epoch 2 halves it, and the halved lr is a new minimum.
    let r = env.recipe(
        "r.toml",
        &PLATEAU.replace("train_loss", "lr").replace("max", "min"),
    );
    let parent = run_json(&env, &r, &["train.epochs=2"]);
    let parent_show = show(&env, &parent["id"]);
    let linked = env.json(&[
        "resume",
        &parent["id"].to_string(),
        "--from",
        "last",
        "--epochs",
        "4",
        "--set",
        "optimizer.lr=0.02",
        "--format",
        "json",
    ]);
    assert_eq!(linked["status"], "done");
    let linked_lrs = lrs(&show(&env, &linked["id"]));
    // Replayed on the parent's recorded lrs (0.05, 0.05), the new schedule halves its lr after
    // epoch 2 as the parent's did: 0.02 becomes 0.01, then a new minimum, kept.
    assert_eq!(lrs(&parent_show), vec![0.05, 0.05]);
    assert_eq!(linked_lrs, vec![0.01, 0.01]);
}

#[test]
fn a_linked_run_follows_its_own_divergence_policy() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let parent = run_json(&env, &r, &["train.epochs=2"]);
    // 3 steps an epoch: steps count on from the parent, so step 10 is epoch 4's second.
    let out = env
        .cmd()
        .args([
            "resume",
            &parent["id"].to_string(),
            "--from",
            "last",
            "--epochs",
            "4",
            "--set",
            "train.on_divergence=\"rollback\"",
            "--set",
            "train.rollback_factor=0.5",
            "--format",
            "json",
        ])
        .env("RUNNER_INJECT_NAN_AT_STEP", "10")
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        j["status"],
        "done",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lrs = lrs(&show(&env, &j["id"]));
    assert_eq!(lrs, vec![0.05, 0.025], "epoch 4 reran at half the lr");
}

#[test]
fn a_run_resumed_from_another_directory_keeps_its_checkpoints_in_one_place() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    // A checkpoint dir relative to where the command runs.
    let text = std::fs::read_to_string(&r).unwrap();
    let abs = format!("dir = \"{}\"", env.path("runs").display());
    assert!(text.contains(&abs));
    std::fs::write(&r, text.replace(&abs, "dir = \"ck\"")).unwrap();
    let (a, b) = (env.path("a"), env.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let run_in = |dir: &std::path::Path, stop_after: Option<&str>| {
        let mut c = env.cmd();
        c.current_dir(dir)
            .args(["run", s(&r), "--set", "train.epochs=5", "--format", "json"]);
        if let Some(n) = stop_after {
            c.env("RUNNER_STOP_AFTER_STEPS", n);
        }
        let out = c.output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        })
    };
    // Interrupted at the end of epoch 3 (3 steps an epoch), in a/.
    let first = run_in(&a, Some("9"));
    assert_eq!(first["status"], "interrupted");
    let show1 = show(&env, &first["id"]);
    let run_dir = last_checkpoint(&show1).parent().unwrap().to_path_buf();
    assert!(run_dir.starts_with(&a), "{}", run_dir.display());
    // A checkpoint write that a crash cut short.
    let stale = run_dir.join("epoch-0004.safetensors.tmp");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    // Resumed in b/.
    let done = run_in(&b, None);
    assert_eq!(done["status"], "done");
    assert_eq!(done["id"], first["id"]);
    assert!(!stale.exists(), "the stale temporary file is removed");
    assert!(
        !b.join("ck").exists(),
        "nothing is written under the new directory"
    );
    let show2 = show(&env, &done["id"]);
    let checkpoints = show2["checkpoints"].as_array().unwrap();
    assert!(checkpoints.len() >= 5, "{checkpoints:?}");
    for c in checkpoints {
        let path = std::path::Path::new(c["path"].as_str().unwrap());
        assert!(path.starts_with(&run_dir), "{c}");
        assert_eq!(path.exists(), c["kept"] == true, "{c}");
    }
}
