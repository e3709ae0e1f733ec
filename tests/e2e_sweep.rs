//! End-to-end sweeps: leaderboard, best, resume --best, no re-runs, killed sweeps resumed,
//! two concurrent sweeps, `--where` safety, the watch folder, the HTML report.

mod common;

use common::{code, s, Env};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SWEEP: &str = r#"
[sweep]
mode = "grid"

[sweep.params]
"optimizer.lr" = [0.05, 0.01]
"train.seed" = [1, 2]
"#;

#[test]
fn a_sweep_runs_ranks_and_continues_the_winner() {
    let env = Env::new();
    let r = env.recipe("sweep.toml", SWEEP);
    let rows = env.json(&["sweep", s(&r), "--format", "json"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "done" && r["action"] == "trained"),
        "{rows:?}"
    );

    let lb = env.json(&["leaderboard", "--metric", "val_acc", "--format", "json"]);
    let lb = lb.as_array().unwrap();
    assert_eq!(lb.len(), 4);
    let vals: Vec<f64> = lb.iter().map(|r| r["val_acc"].as_f64().unwrap()).collect();
    assert!(
        vals.windows(2).all(|w| w[0] >= w[1]),
        "ordered best first: {vals:?}"
    );
    for r in lb {
        assert!(r["overrides"]["optimizer.lr"].is_number());
    }
    // Losses rank ascending.
    let lb_loss = env.json(&["leaderboard", "--metric", "val_loss", "--format", "json"]);
    let losses: Vec<f64> = lb_loss
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["val_loss"].as_f64().unwrap())
        .collect();
    assert!(losses.windows(2).all(|w| w[0] <= w[1]), "{losses:?}");

    let best = env.json(&["best", "--metric", "val_acc", "--format", "json"]);
    assert_eq!(best["id"], lb[0]["id"]);
    assert!(best["epochs"].as_array().unwrap().len() == 3);

    // Continue the winner from its best checkpoint to 5 epochs in total, as a linked run.
    let resumed = env.json(&["resume", "--best", "--epochs", "5", "--format", "json"]);
    assert_eq!(resumed["status"], "done");
    let show = env.json(&["show", &resumed["id"].to_string(), "--format", "json"]);
    assert_eq!(show["parent"], best["id"]);
    let epochs: Vec<u64> = show["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    let best_ck = best["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kept"] == true)
        .max_by(|a, b| {
            a["metric"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["metric"].as_f64().unwrap())
        })
        .unwrap()["epoch"]
        .as_u64()
        .unwrap();
    let expected: Vec<u64> = (best_ck + 1..=5).collect();
    assert_eq!(
        epochs, expected,
        "starts after the parent's best checkpoint (epoch {best_ck})"
    );
    assert_eq!(show["config"]["train"]["epochs"], 5);

    // A second sweep of the same recipe trains nothing.
    let again = env.json(&["sweep", s(&r), "--format", "json"]);
    assert!(
        again
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] == "skipped (done)"),
        "{again}"
    );
    let runs = env.json(&["runs", "--format", "json"]);
    assert_eq!(runs.as_array().unwrap().len(), 5);
    // The second sweep trained nothing, so it recorded no sweep of its own: it reports sweep 1,
    // which planned the same 4 runs; the recipe has 5 (with the resumed one).
    assert!(
        again.as_array().unwrap().iter().all(|r| r["sweep_id"] == 1),
        "{again}"
    );
    let lb2 = env.json(&["leaderboard", "--sweep", "1", "--format", "json"]);
    assert_eq!(lb2.as_array().unwrap().len(), 4);
    assert_eq!(code(&env.run(&["leaderboard", "--sweep", "2"])), Some(2));
    // --max-runs 0 reports the done runs as done, not as not started
    let zero = env.json(&["sweep", s(&r), "--max-runs", "0", "--format", "json"]);
    assert!(
        zero.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "done" && r["action"] == "skipped (done)"),
        "{zero}"
    );
    let lbr = env.json(&["leaderboard", "--recipe", s(&r), "--format", "json"]);
    assert_eq!(lbr.as_array().unwrap().len(), 5);

    // Filters and grouping.
    let f = env.json(&[
        "leaderboard",
        "--where",
        "optimizer.lr < 0.02 and train.seed = 1",
        "--format",
        "json",
    ]);
    assert_eq!(f.as_array().unwrap().len(), 1, "{f}");
    let g = env.json(&[
        "leaderboard",
        "--group-by",
        "optimizer.lr",
        "--format",
        "json",
    ]);
    let g = g.as_array().unwrap();
    assert!(g.iter().any(|x| x["runs"] == 2), "{g:?}");

    // Malformed and SQL-looking filters are errors; the store is intact afterwards.
    for bad in [
        "1; DROP TABLE runs",
        "optimizer.lr <",
        "(val_acc > 0.1",
        "model.kind = 'x",
        "val_acc >> 1",
    ] {
        let out = env.run(&["leaderboard", "--where", bad]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--where"),
            "{bad}"
        );
    }
    let runs = env.json(&["runs", "--format", "json"]);
    assert_eq!(runs.as_array().unwrap().len(), 5);

    // The HTML report is self-contained.
    let report = env.path("report.html");
    assert!(env.run(&["report", "--out", s(&report)]).status.success());
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains(r#"id="leaderboard""#) && html.contains("echarts"));
    assert!(!html.contains("<script src") && !html.contains("<link"));
    assert_eq!(
        common::report_data(&html)["runs"].as_array().unwrap().len(),
        5
    );
}

#[test]
fn a_killed_sweep_finishes_with_every_run_done_once_and_the_interrupted_run_resumed() {
    let env = Env::new();
    let r = env.recipe("sweep.toml", SWEEP);
    assert!(env.run(&["plan", s(&r)]).status.success());
    let mut child = env.cmd().args(["sweep", s(&r)]).spawn().unwrap();
    // Kill it once the second run has a checkpoint.
    let deadline = Instant::now() + Duration::from_secs(300);
    let killed_run = loop {
        std::thread::sleep(Duration::from_millis(20));
        let store = runner::store::Store::open(&env.db()).unwrap();
        let runs = store.runs(None).unwrap();
        if let Some(r) = runs.get(1) {
            if r.status == "running" && !store.checkpoints(r.id).unwrap().is_empty() {
                break r.id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "sweep did not reach its second run"
        );
    };
    let _ = child.kill();
    let _ = child.wait();
    let rows = env.json(&["sweep", s(&r), "--format", "json"]);
    let rows = rows.as_array().unwrap();
    let by_run: BTreeMap<i64, &serde_json::Value> = rows
        .iter()
        .map(|r| (r["run_id"].as_i64().unwrap(), r))
        .collect();
    assert_eq!(by_run[&killed_run]["action"], "resumed", "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == "done"));
    let runs = env.json(&["runs", "--format", "json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 4, "every run exactly once");
    let keys: std::collections::BTreeSet<_> =
        runs.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 4);
    let show = env.json(&["show", &killed_run.to_string(), "--format", "json"]);
    assert_eq!(show["epochs"].as_array().unwrap().len(), 3);
}

#[test]
fn two_concurrent_sweeps_share_the_work_and_never_run_a_run_twice() {
    let env = Env::new();
    let r = env.recipe("sweep.toml", SWEEP);
    assert!(env.run(&["plan", s(&r)]).status.success());
    let spawn = || {
        env.cmd()
            .args(["sweep", s(&r), "--format", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&oa, &ob] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let ja: serde_json::Value = serde_json::from_slice(&oa.stdout).unwrap();
    let jb: serde_json::Value = serde_json::from_slice(&ob.stdout).unwrap();
    let trained = |j: &serde_json::Value| -> Vec<i64> {
        j.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "trained" || r["action"] == "resumed")
            .map(|r| r["run_id"].as_i64().unwrap())
            .collect()
    };
    let mut all = trained(&ja);
    all.extend(trained(&jb));
    all.sort();
    let mut dedup = all.clone();
    dedup.dedup();
    assert_eq!(all, dedup, "a run was trained by both processes");
    let runs = env.json(&["runs", "--format", "json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 4);
    // A run skipped as busy by one process was finished by the other; finish anything left.
    let rows = env.json(&["sweep", s(&r), "--format", "json"]);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "done"),
        "{rows}"
    );
    let runs_after = env.json(&["runs", "--format", "json"]);
    assert_eq!(runs_after.as_array().unwrap().len(), 4);
}

#[test]
fn watch_runs_a_recipe_dropped_in_and_reports_a_broken_one() {
    let env = Env::new();
    let queue = env.path("queue");
    std::fs::create_dir_all(&queue).unwrap();
    // One recipe waits in the folder; the folder is named relative to the working directory.
    let good = env.recipe("good.toml", "");
    std::fs::copy(&good, queue.join("good.toml")).unwrap();
    let mut child = env
        .cmd()
        .args(["watch", "queue"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        queue.join("broken.toml"),
        "[data]\nroot = \"synth\"\n[model]\nkind = \"vit\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(store) = runner::store::Store::open(&env.db()) {
            if store.runs(None).unwrap().iter().any(|r| r.status == "done") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "watch did not run the recipe");
        assert!(child.try_wait().unwrap().is_none(), "the watcher stopped");
    }
    // Saving the recipe unchanged is not a change: no second sweep of it.
    std::fs::copy(&good, queue.join("good.toml")).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let sweeps: i64 = rusqlite::Connection::open(env.db())
        .unwrap()
        .query_row("SELECT COUNT(*) FROM sweeps", [], |r| r.get(0))
        .unwrap();
    // Stop it like Ctrl-C (before any assertion, so a failure leaves no watcher behind).
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(sweeps, 1, "the unchanged recipe was swept again");
    assert!(out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.toml"), "{stderr}");
}

#[test]
fn a_sweep_with_a_diverged_run_trains_the_rest_exits_1_and_groups_exact_values() {
    let env = Env::new();
    let r = env.recipe(
        "sweep.toml",
        r#"
[sweep]
mode = "grid"

[sweep.params]
"optimizer.lr" = [1e30, 0.00151, 0.00154]
"#,
    );
    let (code, err, rows) = one_epoch_sweep(&env, &r, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("1 run(s) failed or diverged"), "{err}");
    assert_eq!(
        column(&rows, "status"),
        ["diverged", "done", "done"],
        "{rows}"
    );
    // Two lrs that round to the same 4 decimals are two groups.
    let groups = env.json(&[
        "leaderboard",
        "--group-by",
        "optimizer.lr",
        "--format",
        "json",
    ]);
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    // The report lists the diverged run, which the metric cannot rank, with its error.
    // (into a folder that does not exist yet, created as the other --out options do)
    let report = env.path("reports/report.html");
    assert!(env.run(&["report", "--out", s(&report)]).status.success());
    let html = std::fs::read_to_string(&report).unwrap();
    let data = common::report_data(&html);
    let unranked = data["unranked"].as_array().unwrap();
    assert!(
        unranked
            .iter()
            .any(|r| r["status"] == "diverged" && r["error"].is_string()),
        "{unranked:?}"
    );
    // CSV headers are plain metric names (the table stars the ranking metric).
    let csv = env.run(&["leaderboard", "--format", "csv"]);
    let header = String::from_utf8_lossy(&csv.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(header.split(',').any(|h| h == "val_acc"), "{header}");
    assert!(!header.contains('*'), "{header}");
    // CSV values are exact (tables round to 4 digits): the swept lrs read back as written.
    let body = String::from_utf8_lossy(&csv.stdout).to_string();
    assert!(
        body.contains(",0.00151,") && body.contains(",0.00154,"),
        "{body}"
    );
    // JSON groups carry the value itself (a number here) under `value`.
    for g in groups.as_array().unwrap() {
        assert_eq!(g["group_by"], "optimizer.lr", "{g}");
        assert!(g["value"].is_number(), "{g}");
    }
    // Array elements are addressed by index, in the filter's and in --set's spelling.
    for f in ["model.dims.0 = 8", "model.dims[0] = 8"] {
        let dims = env.json(&["leaderboard", "--where", f, "--format", "json"]);
        assert_eq!(dims.as_array().unwrap().len(), 2, "{f}: {dims}");
    }
    // The recipe given relatively, or through another spelling, names the same runs.
    for spelling in ["sweep.toml", "./sweep.toml", s(&r)] {
        let by_recipe = env.json(&["leaderboard", "--recipe", spelling, "--format", "json"]);
        assert_eq!(by_recipe.as_array().unwrap().len(), 2, "{spelling}");
    }
    // Unknown keys, sweeps, recipes and an empty top are errors (status 2), not empty tables.
    for (args, needle) in [
        (
            vec!["leaderboard", "--where", "optimiser.lr < 1"],
            "did you mean `optimizer.lr`",
        ),
        (
            vec!["leaderboard", "--group-by", "optimizer.lrr"],
            "--group-by",
        ),
        (vec!["leaderboard", "--sweep", "999"], "no such sweep"),
        (vec!["leaderboard", "--recipe", "nope.toml"], "no such file"),
        (vec!["leaderboard", "--top", "0"], "--top"),
    ] {
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A filter that matches nothing says so.
    let none = env.run(&["leaderboard", "--where", "optimizer.lr > 1"]);
    assert!(none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("matches --where"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}

#[test]
fn fail_fast_stops_at_the_first_diverged_run_and_says_why_the_rest_did_not_start() {
    let env = Env::new();
    let r = env.recipe(
        "sweep.toml",
        r#"
[sweep]
mode = "zip"

[sweep.params]
"optimizer.lr" = [1e30, 0.01, 0.02]
"#,
    );
    let (code, err, rows) = one_epoch_sweep(&env, &r, &["--fail-fast"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--fail-fast"), "{err}");
    assert_eq!(
        column(&rows, "action"),
        [
            "trained",
            "not started (--fail-fast)",
            "not started (--fail-fast)"
        ],
        "{rows}"
    );
    assert_eq!(rows[0]["status"], "diverged", "{rows}");
    let runs = env.json(&["runs", "--format", "json"]);
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "nothing after the first run"
    );
}

/// `runner sweep RECIPE --set train.epochs=1 EXTRA... --format json`: exit status, stderr and
/// the summary rows.
fn one_epoch_sweep(
    env: &Env,
    recipe: &std::path::Path,
    extra: &[&str],
) -> (Option<i32>, String, serde_json::Value) {
    let mut args = vec![
        "sweep",
        s(recipe),
        "--set",
        "train.epochs=1",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    let rows = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        rows,
    )
}

/// One string field of every summary row.
fn column<'a>(rows: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    rows.as_array()
        .map(|a| a.iter().filter_map(|r| r[field].as_str()).collect())
        .unwrap_or_default()
}
