//! Recipes that build on runs (`model.init_from = { recipe = ... }`), through the real binary:
//! the parent is planned and trained first, once; its key is part of the child's, so changing
//! it retrains both and nothing else; a cycle, a missing parent and a parent with a sweep are
//! invalid; a parent that does not finish leaves its children not started; a fine-tune with a
//! moving average and a frozen-backbone phase resumes bitwise.

mod common;

use common::{epoch_metrics, last_checkpoint, s, Env};

/// `base.toml` (the tiny env recipe), `parent.toml` (it, plus `parent_extra`) and
/// `child.toml`: other synthetic identities (5, seed 9), starting from the parent's run.
fn pipeline(env: &Env, parent_extra: &str, child_extra: &str) -> std::path::PathBuf {
    env.recipe("base.toml", "");
    std::fs::write(
        env.path("parent.toml"),
        format!("use = [\"base.toml\"]\n{parent_extra}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(env.path("fine")).unwrap();
    let child = env.path("fine/child.toml");
    std::fs::write(
        &child,
        format!(
            "use = [\"../base.toml\"]\n\n[data.synth]\nidentities = 5\nseed = 9\n\n\
             [model]\ninit_from = {{ recipe = \"../parent.toml\", pick = \"best\" }}\n{child_extra}\n"
        ),
    )
    .unwrap();
    child
}

fn sweep(env: &Env, recipe: &std::path::Path) -> Vec<serde_json::Value> {
    env.json(&["sweep", s(recipe), "--format", "json"])
        .as_array()
        .unwrap()
        .clone()
}

fn actions(rows: &[serde_json::Value]) -> Vec<(bool, String)> {
    rows.iter()
        .map(|r| {
            (
                r["parent"].as_bool().unwrap(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_parent_trains_first_once_and_a_change_to_it_retrains_both_and_nothing_else() {
    let env = Env::new();
    let child = pipeline(&env, "", "");

    let plan = env.json(&["plan", s(&child), "--format", "json"]);
    let plan = plan.as_array().unwrap();
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert_eq!(plan[0]["parent"], true);
    assert_eq!(plan[1]["init_from"], plan[0]["key"]);

    let rows = sweep(&env, &child);
    assert_eq!(
        actions(&rows),
        [(true, "trained".into()), (false, "trained".into())]
    );
    let parent = env.json(&["show", &rows[0]["run_id"].to_string(), "--format", "json"]);
    let kid = env.json(&["show", &rows[1]["run_id"].to_string(), "--format", "json"]);
    assert_eq!(parent["key"], plan[0]["key"]);
    assert_eq!(kid["key"], plan[1]["key"]);
    // the parent finished before the child started, and the child started from it
    assert!(parent["finished"].as_str().unwrap() <= kid["started"].as_str().unwrap());
    assert_eq!(kid["init_from_run"]["id"], parent["id"]);
    let ck = kid["init_from_run"]["checkpoint"].as_str().unwrap();
    assert!(
        parent["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == ck),
        "{ck} is one of the parent's checkpoints"
    );
    assert_eq!(
        kid["parent"],
        serde_json::Value::Null,
        "parent keeps its meaning"
    );

    // again: nothing to train
    let again = sweep(&env, &child);
    assert_eq!(
        actions(&again),
        [
            (true, "skipped (done)".into()),
            (false, "skipped (done)".into())
        ]
    );

    // one key of the parent changes: the parent and the child are new runs, nothing else
    std::fs::write(
        env.path("parent.toml"),
        "use = [\"base.toml\"]\n\n[optimizer]\nlr = 0.02\n",
    )
    .unwrap();
    let changed = sweep(&env, &child);
    assert_eq!(
        actions(&changed),
        [(true, "trained".into()), (false, "trained".into())]
    );
    assert_ne!(changed[0]["key"], rows[0]["key"]);
    assert_ne!(changed[1]["key"], rows[1]["key"]);
    let runs = env.json(&["runs", "--format", "json"]);
    assert_eq!(runs.as_array().unwrap().len(), 4, "two old runs, two new");
}

#[test]
fn runner_run_of_a_child_trains_the_parent_then_the_child() {
    let env = Env::new();
    let child = pipeline(&env, "", "");
    let out = env.json(&["run", s(&child), "--format", "json"]);
    assert_eq!(out["status"], "done");
    let runs = env.json(&["runs", "--format", "json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs[0]["recipe"].as_str().unwrap().ends_with("parent.toml"));
    assert_eq!(runs[1]["id"], out["id"]);
}

#[test]
fn a_cycle_a_missing_parent_and_a_swept_parent_are_invalid_input() {
    let env = Env::new();
    env.recipe("base.toml", "");
    let a = env.path("a.toml");
    let b = env.path("b.toml");
    std::fs::write(
        &a,
        "use = [\"base.toml\"]\n\n[model]\ninit_from = { recipe = \"b.toml\" }\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "use = [\"base.toml\"]\n\n[model]\ninit_from = { recipe = \"a.toml\" }\n",
    )
    .unwrap();
    for cmd in ["validate", "plan", "sweep", "run"] {
        let out = env.run(&[cmd, s(&a)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("cycle"), "{err}");
        assert!(err.contains("model.init_from.recipe"), "{err}");
        assert!(
            err.contains("b.toml:4:"),
            "located in the file that closes it: {err}"
        );
    }
    assert!(!env.db().exists(), "nothing recorded");

    std::fs::write(
        &a,
        "use = [\"base.toml\"]\n\n[model]\ninit_from = { recipe = \"nope.toml\" }\n",
    )
    .unwrap();
    let out = env.run(&["plan", s(&a)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nope.toml") && err.contains("does not exist"),
        "{err}"
    );

    std::fs::write(
        &b,
        "use = [\"base.toml\"]\n\n[sweep.params]\n\"optimizer.lr\" = [0.1, 0.2]\n",
    )
    .unwrap();
    std::fs::write(
        &a,
        "use = [\"base.toml\"]\n\n[model]\ninit_from = { recipe = \"b.toml\" }\n",
    )
    .unwrap();
    let out = env.run(&["plan", s(&a)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("[sweep]"), "{err}");
}

#[test]
fn a_parent_that_diverges_leaves_its_child_not_started() {
    let env = Env::new();
    let child = pipeline(&env, "", "");
    let out = env
        .cmd()
        .args(["sweep", s(&child), "--format", "json"])
        .env("RUNNER_INJECT_NAN_AT_STEP", "0")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["status"], "diverged");
    let action = rows[1]["action"].as_str().unwrap();
    assert!(
        action.starts_with("not started (parent run") && action.contains("diverged"),
        "{action}"
    );
    assert_eq!(
        rows[1]["run_id"],
        serde_json::Value::Null,
        "no child run recorded"
    );
}

/// The child's final weights, moving average included.
fn final_tensors(show: &serde_json::Value) -> Vec<(String, Vec<f32>)> {
    let ck = runner::train::checkpoint::read_checkpoint(&last_checkpoint(show)).unwrap();
    let mut out = Vec::new();
    for (section, map) in [("model", &ck.model), ("ema", &ck.ema)] {
        for (k, t) in map {
            let v = t
                .flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            out.push((format!("{section}.{k}"), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_fine_tune_with_ema_and_a_frozen_backbone_resumes_bitwise() {
    // 30 training images of the child's 5 identities x 8 (6 train each), batches of 8: 3 steps
    // an epoch; epoch 1 is the frozen phase.
    let extra = "\n[optimizer]\nbackbone_lr_scale = 0.5\n\n[train]\nepochs = 3\n\
                 freeze_backbone_epochs = 1\nema = 0.9\n";
    let straight_env = Env::new();
    let child = pipeline(&straight_env, "", extra);
    let straight = straight_env.json(&["run", s(&child), "--format", "json"]);
    assert_eq!(straight["status"], "done");
    let straight = straight_env.json(&["show", &straight["id"].to_string(), "--format", "json"]);

    let env = Env::new();
    let child = pipeline(&env, "", extra);
    // the parent first, so that the stops below land in the child
    assert_eq!(
        env.json(&["run", s(&env.path("parent.toml")), "--format", "json"])["status"],
        "done"
    );
    // stop in the frozen epoch (step 2), then in epoch 2 (step 2 + 3 = 5), then finish
    for stop_after in ["2", "3"] {
        let out = env
            .cmd()
            .args(["run", s(&child), "--format", "json"])
            .env("RUNNER_STOP_AFTER_STEPS", stop_after)
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            j["status"],
            "interrupted",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let done = env.json(&["run", s(&child), "--format", "json"]);
    assert_eq!(done["status"], "done");
    let show = env.json(&["show", &done["id"].to_string(), "--format", "json"]);
    assert_eq!(epoch_metrics(&show), epoch_metrics(&straight));
    let (a, b) = (final_tensors(&show), final_tensors(&straight));
    assert!(
        a.iter().any(|(k, _)| k.starts_with("ema.")),
        "the average is kept"
    );
    assert_eq!(a, b);
}

#[test]
fn a_frozen_epoch_leaves_the_backbone_as_the_parent_left_it() {
    let env = Env::new();
    let child = pipeline(
        &env,
        "",
        "\n[train]\nepochs = 2\nfreeze_backbone_epochs = 1\n\n[checkpoint]\nkeep_last = 2\nkeep_best = 0\n",
    );
    let rows = sweep(&env, &child);
    let kid = env.json(&["show", &rows[1]["run_id"].to_string(), "--format", "json"]);
    let start = runner::train::checkpoint::read_checkpoint(std::path::Path::new(
        kid["init_from_run"]["checkpoint"].as_str().unwrap(),
    ))
    .unwrap();
    let epoch1 = kid["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["epoch"] == 1)
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let after = runner::train::checkpoint::read_checkpoint(std::path::Path::new(&epoch1)).unwrap();
    let flat = |t: &candle_core::Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let mut backbone = 0;
    for (name, t) in &after.model {
        if runner::model::is_classifier(runner::recipe::ModelKind::Convnext, name) {
            assert_ne!(
                start.model.get(name).map(|s| s.dims().to_vec()),
                Some(t.dims().to_vec()),
                "{name}: 6 classes in the parent, 5 here"
            );
            continue;
        }
        backbone += 1;
        assert_eq!(
            flat(t),
            flat(&start.model[name]),
            "{name} moved while frozen"
        );
    }
    assert!(backbone > 10);
    // and the second epoch trains it
    let last = runner::train::checkpoint::read_checkpoint(&last_checkpoint(&kid)).unwrap();
    assert!(last
        .model
        .iter()
        .any(|(n, t)| !n.contains("running") && flat(t) != flat(&after.model[n])));
}
