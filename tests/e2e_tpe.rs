//! TPE sweeps (`sweep.mode = "tpe"`), through the real binary: the same seed proposes the same
//! trials; a sweep stopped after trial 7 of 12 (by `--max-runs`, or by kill -9) goes on with
//! the same trials 8-12 as an uninterrupted one; raising `trials` continues the same study;
//! a study keeps its batch size; halving under TPE is decided in trial order. (On Slurm, one
//! array per batch: tests/e2e_slurm.rs.)

mod common;

use common::{assert_invalid, epoch_metrics, s, Env};

const TPE: &str = r#"
[sweep]
mode = "tpe"
trials = 12
startup_trials = 4
seed = 3

[sweep.params]
"optimizer.lr" = { loguniform = [0.001, 0.3] }
"optimizer.momentum" = { uniform = [0.5, 0.95] }
"train.seed" = [1, 2]
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

/// The trials of the store's study, by number: (params as JSON text, run key).
fn trials(env: &Env) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let mut st = c
        .prepare("SELECT params, run_key FROM trials ORDER BY study_id, number")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn sweep(env: &Env, r: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sweep", s(r), "--set", "train.epochs=1"];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// Same trials, same runs, same metrics (ids and timings aside).
fn assert_same_study(a: &Env, b: &Env) {
    assert_eq!(trials(a), trials(b));
    let (sa, sb) = (shows(a), shows(b));
    assert_eq!(sa.len(), sb.len());
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(x["key"], y["key"]);
        assert_eq!(x["status"], y["status"], "{}", x["key"]);
        assert_eq!(epoch_metrics(x), epoch_metrics(y), "{}", x["key"]);
    }
}

#[test]
fn a_tpe_sweep_stopped_after_trial_7_goes_on_with_the_same_trials_as_an_uninterrupted_one() {
    let straight = Env::new();
    let r = straight.recipe("r.toml", TPE);
    let out = sweep(&straight, &r, &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let t = trials(&straight);
    assert_eq!(t.len(), 12);
    // every trial is a run of its own here (continuous parameters)
    assert_eq!(shows(&straight).len(), 12);

    let stopped = Env::new();
    let r2 = stopped.recipe("r.toml", TPE);
    let out = sweep(&stopped, &r2, &["--max-runs", "7"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(trials(&stopped).len(), 7, "trials 0-6 proposed, no more");
    assert_eq!(trials(&stopped)[..], t[..7]);
    let out = sweep(&stopped, &r2, &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_same_study(&straight, &stopped);

    // the same command again trains nothing
    let out = sweep(&stopped, &r2, &["--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["action"] == "skipped (done)"));

    // another seed, other trials
    let other = Env::new();
    let r3 = other.recipe("r.toml", TPE);
    let out = sweep(
        &other,
        &r3,
        &["--set", "sweep.seed=4", "--set", "sweep.trials=3"],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_ne!(trials(&other)[..], t[..3]);
}

#[test]
fn a_tpe_sweep_killed_mid_trial_continues_to_the_same_trials_and_metrics() {
    let straight = Env::new();
    let r = straight.recipe("r.toml", TPE);
    let args = [
        "sweep",
        s(&r),
        "--set",
        "train.epochs=2",
        "--set",
        "sweep.trials=9",
    ];
    let out = straight.run(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));

    let killed = Env::new();
    let r2 = killed.recipe("r.toml", TPE);
    let args = [
        "sweep",
        s(&r2),
        "--set",
        "train.epochs=2",
        "--set",
        "sweep.trials=9",
    ];
    let mut child = killed.cmd().args(args).spawn().unwrap();
    // kill -9 once trial 6 (past the random start) has trained an epoch
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "trial 6 never started"
        );
        if let Ok(c) = rusqlite::Connection::open(killed.db()) {
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM epochs e JOIN runs r ON r.id = e.run_id
                     JOIN trials t ON t.run_key = r.key WHERE t.number = 6",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            if n >= 1 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = killed.run(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_same_study(&straight, &killed);
}

#[test]
fn raising_trials_continues_the_study_and_its_batch_size_is_kept() {
    let env = Env::new();
    let r = env.recipe("r.toml", TPE);
    let out = sweep(&env, &r, &["--set", "sweep.trials=5"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let first = trials(&env);
    let out = sweep(&env, &r, &["--set", "sweep.trials=7"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let more = trials(&env);
    assert_eq!(more.len(), 7);
    assert_eq!(more[..5], first[..]);
    // one study
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let (studies, batch): (i64, i64) = c
        .query_row("SELECT COUNT(*), MAX(batch) FROM studies", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((studies, batch), (1, 1));
    // continued with another batch size: refused, nothing trained
    let out = sweep(&env, &r, &["--set", "sweep.trials=9", "--jobs", "2"]);
    assert_invalid(&out, &["batches of 1", "without --jobs"]);
    assert_eq!(trials(&env).len(), 7);
}

#[test]
fn tpe_with_jobs_proposes_in_batches_and_each_child_trains_its_trial() {
    let env = Env::new();
    let r = env.recipe("r.toml", TPE);
    let out = sweep(
        &env,
        &r,
        &[
            "--set",
            "sweep.trials=6",
            "--jobs",
            "2",
            "--threads-per-run",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let t = trials(&env);
    assert_eq!(t.len(), 6);
    let runs = shows(&env);
    assert_eq!(runs.len(), 6);
    for run in &runs {
        assert_eq!(run["status"], "done");
        // the child recorded the trial's values as the run's overrides
        assert!(
            run["overrides"]["optimizer.lr"].is_number(),
            "{}",
            run["overrides"]
        );
    }
    let keys: std::collections::BTreeSet<String> = runs
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert!(t.iter().all(|(_, k)| keys.contains(k)));
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let batch: i64 = c
        .query_row("SELECT batch FROM studies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(batch, 2);
}

/// Halving under TPE: at each rung epoch a trial goes on only when its value there is among
/// the best floor(n / factor) (at least one) of its own and the earlier trials' values there.
#[test]
fn halving_under_tpe_is_decided_in_trial_order() {
    let env = Env::new();
    let extra = format!(
        "{TPE}\n[sweep.prune]\nkind = \"halving\"\ngrace_epochs = 1\nreduction_factor = 2\n"
    );
    let r = env.recipe("r.toml", &extra);
    let out = env.run(&[
        "sweep",
        s(&r),
        "--set",
        "train.epochs=4",
        "--set",
        "sweep.trials=8",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let mut st = c
        .prepare("SELECT run_key FROM trials ORDER BY number")
        .unwrap();
    let order: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let runs = shows(&env);
    let by_key = |k: &str| runs.iter().find(|r| r["key"] == k).unwrap();
    let value_at = |run: &serde_json::Value, epoch: u64| -> Option<f64> {
        run["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["epoch"] == epoch)
            .and_then(|e| e["val_acc"].as_f64())
    };
    let mut pruned = 0;
    for (k, key) in order.iter().enumerate() {
        let run = by_key(key);
        let last = run["epochs"].as_array().unwrap().len() as u64;
        for rung in [1u64, 2] {
            let Some(own) = value_at(run, rung) else {
                break;
            };
            let mut competing: Vec<f64> = order[..k]
                .iter()
                .filter_map(|e| value_at(by_key(e), rung))
                .collect();
            competing.push(own);
            competing.sort_by(|a, b| b.total_cmp(a));
            let keep = (competing.len() / 2).max(1);
            let goes_on = own >= competing[keep - 1];
            if goes_on {
                assert!(
                    last > rung,
                    "trial {k} should have gone on past epoch {rung}"
                );
            } else {
                assert_eq!(last, rung, "trial {k} should have stopped at epoch {rung}");
                assert_eq!(run["status"], "pruned");
                let rungs = run["rungs"].as_array().unwrap();
                assert_eq!(rungs.last().unwrap()["epoch"], rung);
                pruned += 1;
            }
        }
    }
    assert!(pruned >= 1, "nothing pruned: the test shows nothing");
    assert_eq!(
        by_key(&order[0])["status"],
        "done",
        "the first trial always goes on"
    );
}

#[test]
fn bad_tpe_settings_exit_2_naming_the_key() {
    let env = Env::new();
    let r = env.recipe("r.toml", TPE);
    let out = env.run(&["sweep", s(&r), "--set", "sweep.trials=0"]);
    assert_invalid(&out, &["sweep.trials"]);
    let grid = env.recipe(
        "g.toml",
        "[sweep]\nstartup_trials = 3\n[sweep.params]\n\"optimizer.lr\" = [0.1, 0.2]\n",
    );
    let out = env.run(&["validate", s(&grid)]);
    assert_invalid(&out, &["sweep.startup_trials", "mode `tpe`"]);
    // with pruning it runs here only, in this version
    let out = env.run(&[
        "sweep",
        s(&r),
        "--executor",
        "slurm",
        "--set",
        "sweep.prune.kind=\"median\"",
    ]);
    assert_invalid(&out, &["tpe", "[sweep.prune]", "local executor"]);
    assert!(!env.db().exists() || common::runs_in_store(&env) == 0);
}
