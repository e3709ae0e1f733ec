//! Pruned sweeps (`[sweep.prune]`), through the real binary: synchronous successive halving
//! trains 9x1 + 3x2 + 1x6 = 21 epochs of a 9-run, 9-epoch grid instead of 81, promotes the
//! best third at each rung, ends with a run bitwise equal to the same point trained straight,
//! continues itself after a kill, and leaves `paused` / `pruned` runs that `run` prints
//! instead of retraining.

mod common;

use common::{assert_invalid, epoch_metrics, s, Env};

const GRID: &str = r#"
[sweep]
mode = "grid"

[sweep.params]
"optimizer.lr" = [0.01, 0.05, 0.2]
"train.seed" = [1, 2, 3]

[sweep.prune]
kind = "halving"
grace_epochs = 1
reduction_factor = 3
"#;

fn shows(env: &Env) -> Vec<serde_json::Value> {
    let runs = env.json(&["runs", "--format", "json"]);
    let mut out: Vec<serde_json::Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| env.json(&["show", &r["id"].to_string(), "--format", "json"]))
        .collect();
    out.sort_by_key(|r| r["id"].as_i64().unwrap());
    out
}

fn epochs_trained(shows: &[serde_json::Value]) -> usize {
    shows
        .iter()
        .map(|r| r["epochs"].as_array().unwrap().len())
        .sum()
}

fn val_acc_at(run: &serde_json::Value, epoch: u64) -> f64 {
    run["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["epoch"] == epoch)
        .and_then(|e| e["val_acc"].as_f64())
        .unwrap()
}

/// The runs that went on from `rung`, by plan order among `entered` (the best third by
/// val_acc, ties to the lower plan index), as the pruner's rule says.
fn best_third(entered: &[&serde_json::Value], epoch: u64) -> Vec<i64> {
    let mut order: Vec<&serde_json::Value> = entered.to_vec();
    // plan order is id order here (the runs were created in plan order)
    order.sort_by(|a, b| {
        val_acc_at(b, epoch)
            .total_cmp(&val_acc_at(a, epoch))
            .then(a["id"].as_i64().cmp(&b["id"].as_i64()))
    });
    let keep = (entered.len() / 3).max(1);
    let mut ids: Vec<i64> = order[..keep]
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

#[test]
fn halving_trains_21_of_81_epochs_promotes_the_best_third_and_ends_as_trained_straight() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let sweep = ["sweep", s(&r), "--set", "train.epochs=9"];
    let out = env.run(&sweep);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let runs = shows(&env);
    assert_eq!(runs.len(), 9);
    assert_eq!(epochs_trained(&runs), 9 + 3 * 2 + 6, "9x1 + 3x2 + 1x6");

    // rung 1 (epoch 1): all nine entered, the best three went on
    let promoted = |rung: u64| -> Vec<i64> {
        runs.iter()
            .filter(|r| {
                r["rungs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["rung"] == rung && d["decision"] == "promoted")
            })
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let all: Vec<&serde_json::Value> = runs.iter().collect();
    assert_eq!(promoted(0), best_third(&all, 1));
    let second: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|r| promoted(0).contains(&r["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(promoted(1), best_third(&second, 3));
    // every decision recorded the value it was made on, at the rung's epoch
    for r in &runs {
        for d in r["rungs"].as_array().unwrap() {
            assert_eq!(d["metric"], "val_acc");
            let epoch = d["epoch"].as_u64().unwrap();
            assert_eq!(d["value"].as_f64().unwrap(), val_acc_at(r, epoch), "{d}");
        }
    }
    let status = |st: &str| runs.iter().filter(|r| r["status"] == st).count();
    assert_eq!((status("done"), status("pruned")), (1, 8));
    // the pruned runs keep their rung checkpoints, whatever keep_last says
    for r in runs.iter().filter(|r| r["status"] == "pruned") {
        let last = r["epochs"].as_array().unwrap().len() as u64;
        let rung_ck = r["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["metric_name"] == "rung" && c["epoch"] == last && c["kept"] == true);
        let path = rung_ck.unwrap_or_else(|| panic!("no rung checkpoint: {r}"))["path"]
            .as_str()
            .unwrap();
        assert!(std::path::Path::new(path).is_file(), "{path}");
    }

    // the winner, trained straight through in another store, is the same run bit for bit
    let winner = runs.iter().find(|r| r["status"] == "done").unwrap();
    let lr = winner["overrides"]["optimizer.lr"].to_string();
    let seed = winner["overrides"]["train.seed"].to_string();
    let straight_db = env.path("straight.db");
    let other_store = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_runner"));
        c.args(["--db", s(&straight_db), "--quiet"])
            .current_dir(env.dir.path());
        c
    };
    let out = other_store()
        .args(["run", s(&r), "--set", "train.epochs=9"])
        .args(["--set", &format!("optimizer.lr={lr}")])
        .args(["--set", &format!("train.seed={seed}"), "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let straight: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let straight = other_store()
        .arg("show")
        .arg(straight["id"].to_string())
        .args(["--format", "json"])
        .output()
        .unwrap();
    let straight: serde_json::Value = serde_json::from_slice(&straight.stdout).unwrap();
    assert_eq!(
        straight["key"], winner["key"],
        "the same point, the same key"
    );
    let (a, b) = (epoch_metrics(winner), epoch_metrics(&straight));
    assert_eq!(a.len(), 9);
    assert_eq!(
        a, b,
        "promoted through two rungs == trained straight, bit for bit"
    );

    // the leaderboard: one row per run at its kept checkpoint's epoch, with the rung reached
    let board = env.json(&["leaderboard", "--format", "json"]);
    let board = board.as_array().unwrap();
    assert_eq!(board.len(), 9);
    for row in board {
        let run = runs.iter().find(|r| r["id"] == row["id"]).unwrap();
        let reached = run["rungs"].as_array().unwrap().len() as u64;
        assert_eq!(row["rung"].as_u64(), Some(reached), "{row}");
        assert!(row["checkpoint"].as_str().is_some(), "{row}");
    }
    assert_eq!(board[0]["id"], winner["id"], "the finished run leads");
    let text = env.run(&["leaderboard"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("rung"));

    // the same command again trains nothing and decides the same
    let out = env.run(&sweep);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let again = shows(&env);
    assert_eq!(epochs_trained(&again), 21);
    for (x, y) in runs.iter().zip(&again) {
        assert_eq!(x["rungs"], y["rungs"]);
        assert_eq!(x["status"], y["status"]);
    }

    // `run` of a pruned point prints it and trains nothing
    let pruned = runs.iter().find(|r| r["status"] == "pruned").unwrap();
    let out = env.run(&[
        "run",
        s(&r),
        "--set",
        "train.epochs=9",
        "--set",
        &format!("optimizer.lr={}", pruned["overrides"]["optimizer.lr"]),
        "--set",
        &format!("train.seed={}", pruned["overrides"]["train.seed"]),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["id"], pruned["id"]);
    assert_eq!(printed["status"], "pruned");
    assert_eq!(epochs_trained(&shows(&env)), 21, "nothing retrained");

    // `resume` continues a pruned run from its rung checkpoint, as a linked run
    let id = pruned["id"].to_string();
    let resumed = env.json(&["resume", &id, "--format", "json"]);
    let resumed = env.json(&["show", &resumed["id"].to_string(), "--format", "json"]);
    assert_eq!(resumed["parent"], pruned["id"]);
    let first = pruned["epochs"].as_array().unwrap().len() as u64 + 1;
    let epochs: Vec<u64> = resumed["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (first..=9).collect::<Vec<_>>());

    // a sweep without [sweep.prune] continues the pruned runs to train.epochs
    let out = env.run(&[
        "sweep",
        s(&r),
        "--set",
        "train.epochs=9",
        "--set",
        "sweep.prune.kind=\"none\"",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    for r in shows(&env).iter().filter(|r| r["parent"].is_null()) {
        assert_eq!(r["status"], "done", "{}", r["key"]);
        assert_eq!(r["epochs"].as_array().unwrap().len(), 9, "{}", r["key"]);
    }
}

#[test]
fn a_sweep_killed_during_a_rung_continues_to_the_same_decisions() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let args = ["sweep", s(&r), "--set", "train.epochs=9"];
    // kill -9 once the first rung's decision is recorded and the second rung is training
    let mut child = env.cmd().args(args).spawn().unwrap();
    let db = env.db();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no rung decision in time"
        );
        if let Ok(c) = rusqlite::Connection::open(&db) {
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM epochs e JOIN rungs g ON g.run_id = e.run_id
                     WHERE g.rung = 0 AND g.decision = 'promoted' AND e.epoch = 2",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            if n >= 1 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = env.run(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let killed = shows(&env);

    let clean = Env::new();
    let r2 = clean.recipe("r.toml", GRID);
    let out = clean.run(&["sweep", s(&r2), "--set", "train.epochs=9"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let straight = shows(&clean);
    assert_eq!(killed.len(), straight.len());
    for (a, b) in killed.iter().zip(&straight) {
        assert_eq!(a["key"], b["key"]);
        assert_eq!(a["status"], b["status"], "{}", a["key"]);
        // ids aside: the second call records its own sweep
        let decisions = |r: &serde_json::Value| {
            let mut d = r["rungs"].clone();
            for x in d.as_array_mut().unwrap() {
                x.as_object_mut().unwrap().remove("sweep_id");
            }
            d
        };
        assert_eq!(decisions(a), decisions(b), "{}", a["key"]);
        assert_eq!(epoch_metrics(a), epoch_metrics(b), "{}", a["key"]);
    }
}

#[test]
fn bad_prune_settings_exit_2_naming_the_key() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    for (set, needles) in [
        (
            "sweep.prune.metric=val_accuracy",
            &["sweep.prune.metric", "unknown metric", "val_acc"][..],
        ),
        (
            "sweep.prune.reduction_factor=1",
            &["sweep.prune.reduction_factor", ">= 2"][..],
        ),
        (
            "sweep.prune.grace_epochs=3",
            &["sweep.prune.grace_epochs", "below train.epochs (3)"][..],
        ),
    ] {
        for cmd in ["validate", "sweep"] {
            let out = env.run(&[cmd, s(&r), "--set", set]);
            assert_invalid(&out, needles);
        }
    }
    // --max-runs does not combine with it, nor median stopping with Slurm, in this version
    let out = env.run(&["sweep", s(&r), "--max-runs", "1"]);
    assert_invalid(&out, &["--max-runs", "[sweep.prune]"]);
    let out = env.run(&[
        "sweep",
        s(&r),
        "--executor",
        "slurm",
        "--set",
        "sweep.prune.kind=\"median\"",
    ]);
    assert_invalid(&out, &["median", "local executor"]);
    let out = env.run(&["sweep", s(&r), "--executor", "slurm", "--max-runs", "1"]);
    assert_invalid(&out, &["--max-runs", "halving"]);
    assert_eq!(common::runs_in_store(&env), 0);
}

#[test]
fn a_grace_shorter_than_the_warm_up_is_warned_about() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let out = env
        .cmd()
        .args([
            "sweep",
            s(&r),
            "--dry-run",
            "--set",
            "scheduler.warmup_epochs=2",
        ])
        .output()
        .unwrap();
    // a dry run plans only; the warning comes with the sweep itself
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.db())])
        .args(["sweep", s(&r), "--set", "scheduler.warmup_epochs=2"])
        .args([
            "--set",
            "train.epochs=3",
            "--set",
            "sweep.params.\"train.seed\"=[1]",
        ])
        .args(["--set", "sweep.params.\"optimizer.lr\"=[0.05]"])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("shorter than the warm-up (2 epochs)"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn sweeps_from_the_command_line_add_or_replace_grid_axes() {
    let env = Env::new();
    let plain = env.recipe("plain.toml", "");
    let swept = |recipe: &std::path::Path, extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["plan", s(recipe), "--format", "json"];
        args.extend_from_slice(extra);
        let j = env.json(&args);
        j.as_array()
            .unwrap()
            .iter()
            .map(|r| r["overrides"].clone())
            .collect()
    };
    // two axes on a recipe without [sweep]: a 2 x 2 grid
    let runs = swept(
        &plain,
        &[
            "--sweep",
            "optimizer.lr=0.01,0.05",
            "--sweep",
            "model.drop_path=0,0.1",
        ],
    );
    assert_eq!(runs.len(), 4, "{runs:?}");
    for lr in [0.01, 0.05] {
        for dp in [0.0, 0.1] {
            assert!(
                runs.iter()
                    .any(|o| o["optimizer.lr"] == lr && o["model.drop_path"] == dp),
                "{lr} {dp}: {runs:?}"
            );
        }
    }
    // an axis the recipe has is replaced; text values and lists (commas inside brackets)
    let grid = env.recipe("grid.toml", GRID);
    let runs = swept(&grid, &["--sweep", "optimizer.lr=0.1"]);
    assert_eq!(runs.len(), 3, "the seed axis stays: {runs:?}");
    assert!(runs.iter().all(|o| o["optimizer.lr"] == 0.1));
    let runs = swept(
        &plain,
        &[
            "--set",
            "optimizer.kind=adamw",
            "--sweep",
            "optimizer.betas=[0.9, 0.99],[0.8, 0.9]",
        ],
    );
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1]["optimizer.betas"], serde_json::json!([0.8, 0.9]));
    let runs = swept(&plain, &["--sweep", "loss.kind=cross_entropy,arcface"]);
    assert_eq!(runs.len(), 2, "{runs:?}");
    // validate checks each value; sweep trains them
    let out = env.run(&["validate", s(&plain), "--sweep", "model.drop_path=0,1.5"]);
    assert_invalid(&out, &["model.drop_path", "1.5"]);
    let out = env.run(&["validate", s(&plain), "--sweep", "optimizer.lr="]);
    assert_invalid(&out, &["--sweep optimizer.lr=", "no values"]);
    let out = env.run(&[
        "sweep",
        s(&plain),
        "--sweep",
        "optimizer.lr=0.01,0.05",
        "--set",
        "train.epochs=1",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::runs_in_store(&env), 2);
}

const MEDIAN: &str = r#"
[sweep]
mode = "grid"

[sweep.params]
"optimizer.lr" = [0.01, 0.02, 0.03, 0.04, 0.05, 0.5]

[sweep.prune]
kind = "median"
metric = "val_loss"
grace_epochs = 1
startup_runs = 5
"#;

#[test]
fn median_stopping_stops_a_clearly_worse_run_at_its_grace_epoch() {
    let env = Env::new();
    let r = env.recipe("r.toml", MEDIAN);
    let out = env.run(&["sweep", s(&r), "--set", "train.epochs=4"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let runs = shows(&env);
    assert_eq!(runs.len(), 6);
    for r in &runs[..5] {
        assert_eq!(r["status"], "done", "{}", r["key"]);
        assert_eq!(r["epochs"].as_array().unwrap().len(), 4);
    }
    // lr = 0.5: stopped after epoch 1 (its grace epoch), worse than the median of the five
    let worse = &runs[5];
    assert_eq!(worse["overrides"]["optimizer.lr"], 0.5);
    assert_eq!(worse["status"], "pruned");
    assert_eq!(worse["epochs"].as_array().unwrap().len(), 1);
    let d = &worse["rungs"][0];
    assert_eq!(
        (d["epoch"].as_u64(), d["decision"].as_str()),
        (Some(1), Some("pruned"))
    );
    let reference_losses: Vec<f64> = runs[..5]
        .iter()
        .map(|r| r["epochs"][0]["val_loss"].as_f64().unwrap())
        .collect();
    let mut sorted = reference_losses.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(
        d["value"].as_f64().unwrap() > sorted[2],
        "{d} vs {sorted:?}"
    );
    // its reference runs are stored with it: the five done when it was claimed
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let stored: String = c
        .query_row(
            "SELECT prune_reference FROM runs WHERE id = ?1",
            [worse["id"].as_i64().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    let ids: Vec<i64> = runs[..5]
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(serde_json::from_str::<Vec<i64>>(&stored).unwrap(), ids);
    // the same command again leaves it stopped
    let out = env.run(&["sweep", s(&r), "--set", "train.epochs=4"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(epochs_trained(&shows(&env)), 5 * 4 + 1);

    // with fewer done runs than startup_runs, nothing stops
    let env = Env::new();
    let r = env.recipe("r.toml", MEDIAN);
    let out = env.run(&[
        "sweep",
        s(&r),
        "--set",
        "train.epochs=2",
        "--set",
        "sweep.prune.startup_runs=6",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(shows(&env).iter().all(|r| r["status"] == "done"));
}

#[test]
fn plan_cost_prices_runs_from_earlier_runs_of_the_same_shape() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    // nothing to compare with yet
    let j = env.json(&["plan", s(&r), "--cost", "--format", "json"]);
    assert_eq!(j["runs"].as_array().unwrap().len(), 9);
    assert!(j["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["source"] == "unknown"));
    assert_eq!(j["devices"][0]["epochs"], 27, "9 runs x 3 epochs");
    // halving's schedule next to the full grid's: 9x1 + 3x2 = 15 of 27 epochs
    assert_eq!(j["halving"]["epochs_full"], 27);
    assert_eq!(j["halving"]["epochs"], 15);
    assert_eq!(j["halving"]["rungs"], serde_json::json!([1]));
    // --measure: a short benchmark where nothing matches
    let m = env.json(&["plan", s(&r), "--cost", "--measure", "--format", "json"]);
    assert!(
        m["runs"][0]["source"]["measured"]["steps"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(m["devices"][0]["hours"].as_f64().unwrap() > 0.0);

    // after a sweep of the same shape, its epochs price the next: 4 epochs instead of 3 is
    // a new plan (new keys) of the same model, size, batch size and precision
    let out = env.run(&[
        "sweep",
        s(&r),
        "--set",
        "sweep.prune.kind=\"none\"",
        "--sweep",
        "optimizer.lr=0.05",
        "--sweep",
        "train.seed=1,2",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let (device, threads): (String, i64) = c
        .query_row("SELECT device, threads FROM runs LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(device.starts_with("cpu ("), "{device}");
    assert!(threads >= 1);
    // the expected rate: the median over those runs' epochs of (all phases) / (images trained)
    let mut per_image = Vec::new();
    for run in shows(&env) {
        for e in run["epochs"].as_array().unwrap() {
            let p = &e["phase_seconds"];
            let total: f64 = [
                "train",
                "loader_wait",
                "eval",
                "verify",
                "checkpoint",
                "store",
            ]
            .iter()
            .map(|k| p[*k].as_f64().unwrap())
            .sum();
            per_image.push(
                total / (e["images_per_sec"].as_f64().unwrap() * p["train"].as_f64().unwrap()),
            );
        }
    }
    per_image.sort_by(f64::total_cmp);
    let median = (per_image[2] + per_image[3]) / 2.0;
    let j = env.json(&[
        "plan",
        s(&r),
        "--cost",
        "--set",
        "train.epochs=4",
        "--format",
        "json",
    ]);
    let first = &j["runs"][0];
    assert_eq!(
        first["source"]["earlier_runs"],
        serde_json::json!({"runs": 2, "epochs": 6})
    );
    let spi = first["seconds_per_image"].as_f64().unwrap();
    assert!(
        (spi - median).abs() <= 1e-12 * median.max(1.0),
        "{spi} vs {median}"
    );
    let images = first["train_images"].as_f64().unwrap();
    assert_eq!(images, 6.0 * 5.0, "6 identities x 5 training images of 8");
    assert!((first["seconds"].as_f64().unwrap() - spi * images * 4.0).abs() < 1e-9);
    // another model is another shape: unknown again
    let j = env.json(&[
        "plan",
        s(&r),
        "--cost",
        "--set",
        "model.dims=[8, 16, 24, 40]",
        "--format",
        "json",
    ]);
    assert_eq!(j["runs"][0]["source"], "unknown");
    // the table, and sweep --dry-run shows it too
    let out = env.run(&["sweep", s(&r), "--dry-run", "--set", "train.epochs=4"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rate from") && text.contains("earlier run(s)"),
        "{text}"
    );
    assert!(
        text.contains("with halving (rungs at epochs 1, 3)"),
        "{text}"
    );
}

#[test]
fn watch_honours_a_recipes_sweep_prune() {
    let env = Env::new();
    let queue = env.path("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let r = env.recipe("grid.toml", GRID);
    std::fs::copy(&r, queue.join("grid.toml")).unwrap();
    let mut child = env
        .cmd()
        .args(["watch", "queue"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let settled = loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        if let Ok(store) = runner::store::Store::open(&env.db()) {
            let runs = store.runs(None).unwrap();
            let done = runs.iter().filter(|r| r.status == "done").count();
            let pruned = runs.iter().filter(|r| r.status == "pruned").count();
            if done + pruned == 9 {
                break (done, pruned);
            }
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break (0, 0);
        }
    };
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait_with_output().unwrap();
    // 3 epochs: one rung at epoch 1, the best three of nine go on
    assert_eq!(settled, (3, 6));
    assert_eq!(epochs_trained(&shows(&env)), 9 + 3 * 2);
}

#[test]
fn clean_pruned_deletes_the_pruned_runs_checkpoints_and_keeps_their_records() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let out = env.run(&["sweep", s(&r), "--set", "train.epochs=9"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let before = shows(&env);
    let kept_files = |run: &serde_json::Value| -> Vec<String> {
        run["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kept"] == true)
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect()
    };
    let pruned_files: Vec<String> = before
        .iter()
        .filter(|r| r["status"] == "pruned")
        .flat_map(kept_files)
        .collect();
    assert!(!pruned_files.is_empty());
    let j = env.json(&[
        "sweep",
        s(&r),
        "--set",
        "train.epochs=9",
        "--clean-pruned",
        "--format",
        "json",
    ]);
    assert_eq!(j["runs"].as_array().unwrap().len(), 8, "{j}");
    let unique: std::collections::BTreeSet<&String> = pruned_files.iter().collect();
    assert_eq!(j["files"].as_u64().unwrap() as usize, unique.len(), "{j}");
    for f in &pruned_files {
        assert!(!std::path::Path::new(f).exists(), "{f}");
    }
    let after = shows(&env);
    for (a, b) in before.iter().zip(&after) {
        // records stay; only the files (and their kept flags) go
        assert_eq!(a["epochs"], b["epochs"]);
        assert_eq!(a["rungs"], b["rungs"]);
        if b["status"] == "pruned" {
            assert!(kept_files(b).is_empty(), "{}", b["key"]);
        } else {
            assert_eq!(
                kept_files(a),
                kept_files(b),
                "the finished run is untouched"
            );
            assert!(kept_files(b)
                .iter()
                .all(|f| std::path::Path::new(f).exists()));
        }
    }
    // a cleaned run cannot be resumed, and says so
    let id = after.iter().find(|r| r["status"] == "pruned").unwrap()["id"].to_string();
    let out = env.run(&["resume", &id]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("checkpoint"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn a_rung_waits_for_a_run_that_trains_elsewhere() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let plan = env.json(&["plan", s(&r), "--set", "train.epochs=9", "--format", "json"]);
    let key = plan[4]["key"].as_str().unwrap().to_string();
    // another live process (this test) holds one of the nine runs
    let mut store = runner::store::Store::open(&env.db()).unwrap();
    let claim = store
        .claim_key(
            &runner::store::NewRun {
                key: key.clone(),
                recipe: s(&r).into(),
                config: serde_json::json!({}),
                overrides: serde_json::json!({}),
                data_fingerprint: "fp".into(),
                sweep_id: None,
                parent_id: None,
                resumed_from: None,
            },
            std::time::Duration::from_secs(3600),
            false,
            false,
        )
        .unwrap();
    assert!(matches!(claim, runner::store::Claim::Claimed { .. }));
    let out = env
        .cmd()
        .args(["sweep", s(&r), "--set", "train.epochs=9"])
        .output()
        .unwrap();
    let stderr = common::stderr(&out);
    // the other eight reach the first rung, and nothing is decided without the ninth
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let decided: i64 = c
        .query_row("SELECT COUNT(*) FROM rungs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(decided, 0, "{stderr}");
    let paused: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE status = 'paused'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(paused, 8);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("training elsewhere"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
