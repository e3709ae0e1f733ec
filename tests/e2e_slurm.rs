//! A sweep on a real Slurm cluster: a one-node cluster started by `scripts/slurm-local.sh`
//! (or the one `SLURM_CONF` names), the real binary, tiny recipes. A job array equals the
//! same sweep run locally; a second submission submits nothing; a task cancelled mid-run
//! resumes from its checkpoint when submitted again; SIGUSR1 checkpoints, requeues and
//! finishes; collecting twice and while tasks run keeps the store consistent, and a local
//! sweep meanwhile trains nothing; a pipeline's child waits for its parent; a halving sweep
//! runs as one array per rung and ends where the local one ends; bad input exits 2 and submits
//! nothing.
//!
//! Without a cluster (no Slurm installed, not root) the cluster tests skip with one line,
//! unless RUNNER_REQUIRE_SLURM=1 (as `.ci/run` sets), which makes that a failure.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::{s, Env};

/// A 4-run grid.
const GRID: &str = r#"
[sweep]
mode = "grid"

[sweep.params]
"optimizer.lr" = [0.05, 0.01]
"train.seed" = [1, 2]
"#;

struct Cluster {
    conf: PathBuf,
    /// The folder of a cluster these tests started (stopped at exit).
    started: Option<PathBuf>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
/// The cluster tests run one at a time (they share the node's 2 CPUs and its queue).
static SERIAL: Mutex<()> = Mutex::new(());

fn sinfo_answers(conf: &Path) -> bool {
    Command::new("sinfo")
        .arg("-h")
        .env("SLURM_CONF", conf)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

extern "C" fn stop_cluster() {
    if let Some(Ok(Cluster {
        started: Some(dir), ..
    })) = CLUSTER.get()
    {
        let _ = Command::new("bash")
            .args(["scripts/slurm-local.sh", "stop"])
            .env("RUNNER_SLURM_DIR", dir)
            .env("RUNNER_SLURM_PORT", port().to_string())
            .output();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// slurmctld's port for a cluster these tests start (slurmd the next): away from the default
/// 6817, which a cluster `.ci/run` or a developer started may hold.
fn port() -> u16 {
    17000 + (std::process::id() % 500) as u16 * 2
}

fn start_cluster() -> Result<Cluster, String> {
    if let Some(conf) = std::env::var_os("SLURM_CONF").map(PathBuf::from) {
        if sinfo_answers(&conf) {
            return Ok(Cluster {
                conf,
                started: None,
            });
        }
    }
    if !on_path("slurmctld") || !on_path("sbatch") {
        return Err("Slurm is not installed: `sudo scripts/slurm-local.sh install`, or export SLURM_CONF of a running cluster".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "starting a test cluster needs root; or export SLURM_CONF of a running cluster".into(),
        );
    }
    let dir = std::env::temp_dir().join(format!("runner-slurm-test-{}", std::process::id()));
    let out = Command::new("bash")
        .args(["scripts/slurm-local.sh", "start"])
        .env("RUNNER_SLURM_DIR", &dir)
        .env("RUNNER_SLURM_PORT", port().to_string())
        .output()
        .map_err(|e| format!("scripts/slurm-local.sh: {e}"))?;
    let cluster = Cluster {
        conf: dir.join("slurm.conf"),
        started: Some(dir),
    };
    // SAFETY: registers a plain function to run at exit.
    unsafe {
        libc::atexit(stop_cluster);
    }
    if !out.status.success() {
        return Err(format!(
            "scripts/slurm-local.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(cluster)
}

/// The cluster and the lock of the tests that use it; None (after one line saying why) when
/// there is none and RUNNER_REQUIRE_SLURM is not 1.
fn cluster() -> Option<(&'static Cluster, MutexGuard<'static, ()>)> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    match CLUSTER.get_or_init(start_cluster) {
        Ok(c) => Some((c, guard)),
        Err(why) if std::env::var("RUNNER_REQUIRE_SLURM").as_deref() == Ok("1") => {
            panic!("RUNNER_REQUIRE_SLURM=1, but no Slurm cluster: {why}")
        }
        Err(why) => {
            eprintln!("skipped: no Slurm cluster ({why})");
            None
        }
    }
}

/// `runner` in `env` with the cluster's SLURM_CONF and one thread (the same as the local
/// runs these tests compare with).
fn cmd(env: &Env, c: &Cluster) -> Command {
    let mut cmd = env.cmd();
    cmd.env("SLURM_CONF", &c.conf).env("RAYON_NUM_THREADS", "1");
    cmd
}

fn run_ok(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{cmd:?}: not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `runner sweep RECIPE --executor slurm ARGS --format json`.
fn submit(env: &Env, c: &Cluster, recipe: &Path, args: &[&str]) -> serde_json::Value {
    run_ok(
        cmd(env, c)
            .args([
                "sweep",
                s(recipe),
                "--executor",
                "slurm",
                "--cpus-per-run",
                "1",
            ])
            .args(args)
            .args(["--format", "json"]),
    )
}

fn status(env: &Env, c: &Cluster) -> Vec<serde_json::Value> {
    run_ok(cmd(env, c).args(["status", "--format", "json"]))
        .as_array()
        .unwrap()
        .clone()
}

fn collect(env: &Env, c: &Cluster) {
    run_ok(cmd(env, c).args(["collect", "--format", "json"]));
}

/// Collects until no run is submitted (or fails after `secs`).
fn wait_settled(env: &Env, c: &Cluster, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        collect(env, c);
        let st = status(env, c);
        if st.iter().all(|r| r["status"] != "submitted") {
            return;
        }
        assert!(
            Instant::now() < end,
            "runs still submitted after {secs} s: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The records a run's log holds.
fn log_events(env: &Env, run_id: u64) -> Vec<serde_json::Value> {
    let show = env.json(&["show", &run_id.to_string(), "--format", "json"]);
    let path = Path::new(show["dir"].as_str().unwrap()).join("records.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until a run's log has recorded `epochs` epochs (the task runs).
fn wait_for_epochs(env: &Env, run_id: u64, epochs: usize, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while log_events(env, run_id)
        .iter()
        .filter(|e| e["event"] == "epoch")
        .count()
        < epochs
    {
        assert!(
            Instant::now() < end,
            "run {run_id}: fewer than {epochs} epochs after {secs} s: {:?}",
            log_events(env, run_id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Per run key: its epochs without timings, its verification, its last checkpoint's weights.
type Outcomes = BTreeMap<
    String,
    (
        Vec<serde_json::Value>,
        serde_json::Value,
        BTreeMap<String, Vec<f32>>,
    ),
>;

fn results(env: &Env) -> Outcomes {
    let runs = env.json(&["runs", "--format", "json"]);
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let show = env.json(&["show", &r["id"].to_string(), "--format", "json"]);
            assert_eq!(show["status"], "done", "{show}");
            // imported from the task's record log like the rest of the epoch
            common::assert_phase_seconds(&show);
            let details = detail_rows(&env.db(), r["id"].as_i64().unwrap());
            (
                r["key"].as_str().unwrap().to_string(),
                (
                    common::epoch_metrics(&show),
                    serde_json::json!({"scores": show["verification"], "details": details}),
                    common::checkpoint_weights(&common::last_checkpoint(&show)),
                ),
            )
        })
        .collect()
}

/// A run's verification score distributions and dev predictions as the store holds them
/// (image paths as file names: the data folders of two envs differ).
fn detail_rows(db: &Path, run_id: i64) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT epoch, split, lo, hi, genuine, impostor, probe_scores, probe_flags, probes_total,
                score_threshold, wrong, wrong_total FROM verification_scores WHERE run_id = ?1
         ORDER BY epoch, split",
        "SELECT epoch, classes, truth, predicted, images_total, misclassified, misclassified_total
         FROM dev_predictions WHERE run_id = ?1 ORDER BY epoch",
    ] {
        let mut st = conn.prepare(sql).unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([run_id], |r| {
                use rusqlite::types::ValueRef;
                let vals: Vec<String> = (0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        ValueRef::Null => "NULL".to_string(),
                        ValueRef::Integer(v) => v.to_string(),
                        ValueRef::Real(v) => format!("{v:?}"),
                        ValueRef::Text(t) => {
                            let text = String::from_utf8_lossy(t).into_owned();
                            // wrong decisions and misclassified images: paths as file names
                            match serde_json::from_str::<serde_json::Value>(&text) {
                                Ok(serde_json::Value::Array(mut items)) => {
                                    for it in &mut items {
                                        if let Some(p) = it.get_mut("path") {
                                            let name = Path::new(p.as_str().unwrap())
                                                .file_name()
                                                .unwrap()
                                                .to_string_lossy()
                                                .into_owned();
                                            *p = name.into();
                                        }
                                    }
                                    serde_json::Value::Array(items).to_string()
                                }
                                _ => text,
                            }
                        }
                        ValueRef::Blob(b) => format!("{b:?}"),
                    })
                    .collect();
                Ok(vals.join(" | "))
            })
            .unwrap();
        out.extend(rows.map(|r| r.unwrap()));
    }
    out
}

/// The same recipe swept locally, one thread, in a fresh env.
fn local_reference(extra: &str, sets: &[&str]) -> Outcomes {
    let env = Env::new();
    let r = env.recipe("r.toml", extra);
    let out = env
        .cmd()
        .env("RAYON_NUM_THREADS", "1")
        .args(["sweep", s(&r)])
        .args(sets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    results(&env)
}

fn squeue_jobs(c: &Cluster) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i"])
        .env("SLURM_CONF", &c.conf)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scancel(c: &Cluster, args: &[&str]) {
    let out = Command::new("scancel")
        .args(args)
        .env("SLURM_CONF", &c.conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scancel {args:?}: {}",
        common::stderr(&out)
    );
}

/// A 9-run grid under halving (factor 3, grace 1): with 9 epochs, rungs at 1 and 3.
const HALVING: &str = r#"
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

#[test]
fn a_halving_sweep_runs_as_three_arrays_of_9_3_and_1_for_21_epochs_and_ends_as_locally() {
    let Some((c, _serial)) = cluster() else {
        return;
    };
    let t0 = Instant::now();
    let env = Env::new();
    let r = env.recipe("r.toml", HALVING);
    let sets = ["--set", "train.epochs=9"];
    // without --wait: one rung's array per call; the next call decides the rung when its
    // tasks have ended
    let first = submit(
        &env,
        c,
        &r,
        &[&["--max-parallel", "3"][..], &sets[..]].concat(),
    );
    let arrays = first["arrays"].as_array().unwrap();
    assert_eq!(arrays.len(), 1, "{first}");
    assert_eq!(arrays[0]["runs"].as_array().unwrap().len(), 9, "{first}");
    assert_eq!(arrays[0]["until_epoch"], 1, "{first}");
    assert_eq!(first["finished"], false);
    // then --wait takes it through the other rungs
    let rest = submit(
        &env,
        c,
        &r,
        &[&["--max-parallel", "3", "--wait"][..], &sets[..]].concat(),
    );
    assert_eq!(rest["finished"], true, "{rest}");
    let sizes: Vec<usize> = rest["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["runs"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![3, 1], "{rest}");
    let ends: Vec<serde_json::Value> = rest["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["until_epoch"].clone())
        .collect();
    assert_eq!(ends, vec![serde_json::json!(3), serde_json::Value::Null]);
    // 9 x 1 + 3 x 2 + 1 x 6 epochs, and the same decisions and winner as the local sweep
    let shows = |env: &Env| -> BTreeMap<String, serde_json::Value> {
        env.json(&["runs", "--format", "json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let show = env.json(&["show", &r["id"].to_string(), "--format", "json"]);
                (show["key"].as_str().unwrap().to_string(), show)
            })
            .collect()
    };
    let slurm = shows(&env);
    let epochs: usize = slurm
        .values()
        .map(|r| r["epochs"].as_array().unwrap().len())
        .sum();
    assert_eq!(epochs, 21);
    let local_env = Env::new();
    let lr = local_env.recipe("r.toml", HALVING);
    let out = local_env
        .cmd()
        .env("RAYON_NUM_THREADS", "1")
        .args(["sweep", s(&lr)])
        .args(sets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let local = shows(&local_env);
    assert_eq!(
        slurm.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>()
    );
    let decisions = |r: &serde_json::Value| -> Vec<(u64, u64, String)> {
        r["rungs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["rung"].as_u64().unwrap(),
                    d["epoch"].as_u64().unwrap(),
                    d["decision"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    for (key, l) in &local {
        let sl = &slurm[key];
        assert_eq!(sl["status"], l["status"], "{key}");
        assert_eq!(decisions(sl), decisions(l), "{key}");
        assert_eq!(common::epoch_metrics(sl), common::epoch_metrics(l), "{key}");
        if l["status"] == "done" {
            // the winner: bit for bit the local winner
            assert_eq!(
                common::checkpoint_weights(&common::last_checkpoint(sl)),
                common::checkpoint_weights(&common::last_checkpoint(l)),
                "{key}"
            );
        }
    }
    assert_eq!(local.values().filter(|r| r["status"] == "done").count(), 1);
    eprintln!("halving on Slurm: {:.1} s", t0.elapsed().as_secs_f64());
}

/// A TPE search on a cluster: one array per batch of `--max-parallel` trials, and the same
/// trials and results as the same study trained locally with `--jobs` of that size.
#[test]
fn a_tpe_search_runs_batch_by_batch_as_arrays_and_equals_the_local_one() {
    let Some((c, _serial)) = cluster() else {
        return;
    };
    const TPE: &str = r#"
[sweep]
mode = "tpe"
trials = 6
startup_trials = 2
seed = 5

[sweep.params]
"optimizer.lr" = { loguniform = [0.001, 0.3] }
"train.seed" = [1, 2]
"#;
    let env = Env::new();
    let r = env.recipe("r.toml", TPE);
    let sets = ["--set", "train.epochs=2"];
    let out = submit(
        &env,
        c,
        &r,
        &[&["--max-parallel", "3", "--wait"][..], &sets[..]].concat(),
    );
    assert_eq!(out["finished"], true, "{out}");
    let arrays = out["arrays"].as_array().unwrap();
    let trials: Vec<serde_json::Value> = arrays.iter().map(|a| a["trials"].clone()).collect();
    assert_eq!(
        trials,
        vec![serde_json::json!([0, 1, 2]), serde_json::json!([3, 4, 5])]
    );
    // another batch size for the same study: refused
    let again = cmd(&env, c)
        .args(["sweep", s(&r), "--executor", "slurm", "--max-parallel", "2"])
        .args(sets)
        .output()
        .unwrap();
    common::assert_invalid(&again, &["batches of 3", "--max-parallel 3"]);
    let study = |db: &Path| -> Vec<(String, String)> {
        let c = rusqlite::Connection::open(db).unwrap();
        let mut st = c
            .prepare("SELECT params, run_key FROM trials ORDER BY number")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let local = Env::new();
    let lr = local.recipe("r.toml", TPE);
    let out = local
        .cmd()
        .args(["sweep", s(&lr), "--jobs", "3", "--threads-per-run", "1"])
        .args(sets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(study(&env.db()), study(&local.db()));
    let (slurm, here) = (results(&env), results(&local));
    assert_eq!(
        slurm.keys().collect::<Vec<_>>(),
        here.keys().collect::<Vec<_>>()
    );
    for (key, (epochs, _, weights)) in &here {
        assert_eq!(&slurm[key].0, epochs, "{key}");
        assert!(&slurm[key].2 == weights, "{key}: weights differ");
    }
}

#[test]
fn a_sweep_as_a_job_array_equals_the_local_sweep_and_is_not_submitted_twice() {
    let Some((c, _serial)) = cluster() else {
        return;
    };
    let t0 = Instant::now();
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let sets = ["--set", "train.epochs=2"];
    let out = submit(
        &env,
        c,
        &r,
        &[&["--max-parallel", "2", "--wait"][..], &sets[..]].concat(),
    );
    assert_eq!(out["submitted"].as_array().unwrap().len(), 4, "{out}");
    assert!(out["job_id"].is_i64(), "{out}");
    assert!(
        out["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "done"),
        "{out}"
    );
    // the script and each task's log are where the store says
    let st = status(&env, c);
    assert_eq!(st.len(), 4);
    for row in &st {
        assert_eq!(row["status"], "done");
        assert_eq!(row["job_id"], out["job_id"]);
        assert_eq!(row["last_epoch"], 2);
        let log = Path::new(row["log"].as_str().unwrap());
        assert!(log.is_file(), "{row}");
        // the sweep's folder is this store's own: `sweep-<id>-<first 8 of the store id>`
        let store_id: String = rusqlite::Connection::open(env.db())
            .unwrap()
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'store_id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let folder = log.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert_eq!(
            folder,
            format!("sweep-{}-{}", out["sweep_id"], &store_id[..8])
        );
    }
    let slurm = results(&env);
    let local = local_reference(GRID, &sets);
    assert_eq!(
        slurm.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>()
    );
    for (key, (epochs, verification, weights)) in &local {
        let (e, v, w) = &slurm[key];
        // the score distributions and dev predictions came through the tasks' record logs
        assert!(
            !v["details"].as_array().unwrap().is_empty(),
            "run {key}: no verification or dev details"
        );
        assert_eq!(e, epochs, "run {key}: epochs differ from the local sweep");
        assert_eq!(v, verification, "run {key}: verification differs");
        assert!(
            w == weights,
            "run {key}: weights differ from the local sweep"
        );
    }
    // a second submission submits nothing
    let again = submit(&env, c, &r, &sets);
    assert_eq!(again["submitted"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 4, "{again}");
    assert!(again["job_id"].is_null(), "{again}");
    eprintln!("a 4-run job array: {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn a_task_cancelled_mid_run_resumes_from_its_checkpoint_when_submitted_again() {
    let Some((c, _serial)) = cluster() else {
        return;
    };
    let t0 = Instant::now();
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let sets = ["--set", "train.epochs=4"];
    let out = run_ok(
        cmd(&env, c)
            .env("RUNNER_STEP_DELAY_MS", "150")
            .args(["sweep", s(&r), "--executor", "slurm", "--cpus-per-run", "1"])
            .args(sets)
            .args(["--format", "json"]),
    );
    let job = out["job_id"].as_i64().unwrap();
    wait_for_epochs(&env, 1, 2, 60);
    scancel(c, &[&format!("{job}_0")]);
    wait_settled(&env, c, 60);
    let show = env.json(&["show", "1", "--format", "json"]);
    assert_eq!(show["status"], "interrupted", "{show}");
    let trained_before = show["epochs"].as_array().unwrap().len();
    assert!((2..4).contains(&trained_before), "{show}");
    // submitted again: it resumes from its checkpoint
    let again = submit(&env, c, &r, &[&sets[..], &["--wait"]].concat());
    assert_eq!(again["submitted"].as_array().unwrap().len(), 1, "{again}");
    let events = log_events(&env, 1);
    let starts: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "start").collect();
    assert_eq!(starts.len(), 2, "{events:?}");
    let from = starts[1]["from_epoch"].as_u64().unwrap();
    assert!(
        from as usize >= trained_before,
        "resumed from epoch {from}: {events:?}"
    );
    // the second task trained only the epochs after its checkpoint
    let second = events.iter().rposition(|e| e["event"] == "start").unwrap();
    let epochs_after: Vec<u64> = events[second..]
        .iter()
        .filter(|e| e["event"] == "epoch")
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs_after, ((from + 1)..=4).collect::<Vec<_>>());
    // and ends where an uninterrupted run ends
    let slurm = results(&env);
    let local = local_reference("", &sets);
    assert_eq!(slurm.len(), 1);
    for (key, (epochs, _, weights)) in &local {
        assert_eq!(&slurm[key].0, epochs);
        assert!(
            &slurm[key].2 == weights,
            "final weights differ from an uninterrupted run's"
        );
    }
    eprintln!("scancel and resume: {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn sigusr1_checkpoints_requeues_and_the_task_finishes() {
    let Some((c, _serial)) = cluster() else {
        return;
    };
    let t0 = Instant::now();
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let sets = ["--set", "train.epochs=4"];
    let out = run_ok(
        cmd(&env, c)
            .env("RUNNER_STEP_DELAY_MS", "100")
            .args(["sweep", s(&r), "--executor", "slurm", "--cpus-per-run", "1"])
            .args(sets)
            .args(["--format", "json"]),
    );
    let job = out["job_id"].as_i64().unwrap();
    wait_for_epochs(&env, 1, 1, 60);
    // as Slurm does before the time limit (--signal=B:USR1@120), to the batch shell: runner
    scancel(c, &["--batch", "--signal=USR1", &format!("{job}_0")]);
    wait_settled(&env, c, 120);
    let show = env.json(&["show", "1", "--format", "json"]);
    assert_eq!(show["status"], "done", "{show}");
    let events = log_events(&env, 1);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let requeue = events
        .iter()
        .find(|e| e["event"] == "requeue")
        .unwrap_or_else(|| panic!("no requeue: {kinds:?}"));
    assert_eq!(requeue["ok"], true, "{requeue}");
    let finishes: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "finish")
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(finishes, ["interrupted", "done"], "{kinds:?}");
    let starts: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "start").collect();
    assert_eq!(starts.len(), 2, "{kinds:?}");
    assert_eq!(starts[1]["restart"], 1, "{}", starts[1]);
    assert!(
        starts[1]["from_epoch"].as_u64().unwrap() >= 1,
        "{}",
        starts[1]
    );
    let local = local_reference("", &sets);
    let slurm = results(&env);
    for (key, (epochs, _, weights)) in &local {
        assert_eq!(&slurm[key].0, epochs);
        assert!(
            &slurm[key].2 == weights,
            "final weights differ from an uninterrupted run's"
        );
    }
    eprintln!("USR1, requeue, finish: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Every row of the store's record tables, without the times a row was written.
fn store_rows(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut out = Vec::new();
    for (table, cols) in [
        (
            "runs",
            "id, key, status, error, host, slurm_job_id, slurm_task_id, slurm_log, records_path, records_offset, init_from_run",
        ),
        (
            "epochs",
            "run_id, epoch, lr, train_loss, train_acc, val_loss, val_acc, verify_acc, images_per_sec, seconds",
        ),
        // (row ids of these two follow the order the runs were imported in)
        ("checkpoints", "run_id, epoch, path, metric_name, metric, kept"),
        (
            "verification",
            "run_id, epoch, split, metric, threshold, accuracy, accuracy_known, impostor_rejection",
        ),
        ("skipped_images", "run_id, path, error, epoch"),
        (
            "verification_scores",
            "run_id, epoch, split, lo, hi, genuine, impostor, probe_scores, probe_flags, probes_total, score_threshold, wrong, wrong_total",
        ),
        (
            "dev_predictions",
            "run_id, epoch, classes, truth, predicted, images_total, misclassified, misclassified_total",
        ),
    ] {
        let mut st = conn
            .prepare(&format!("SELECT {cols} FROM {table} ORDER BY {cols}"))
            .unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                use rusqlite::types::ValueRef;
                let vals: Vec<String> = (0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        ValueRef::Null => "NULL".to_string(),
                        ValueRef::Integer(v) => v.to_string(),
                        // {:?} of an f64 is exact (it reads back to the same bits)
                        ValueRef::Real(v) => format!("{v:?}"),
                        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
                        ValueRef::Blob(b) => format!("{b:?}"),
                    })
                    .collect();
                Ok(format!("{table}: {}", vals.join(" | ")))
            })
            .unwrap();
        out.extend(rows.map(|r| r.unwrap()));
    }
    out
}

#[test]
fn collecting_twice_and_while_tasks_run_keeps_the_store_consistent() {
    let Some((c, _serial)) = cluster() else {
        return;
    };
    let t0 = Instant::now();
    let env = Env::new();
    let r = env.recipe(
        "r.toml",
        "[sweep]\nmode = \"grid\"\n\n[sweep.params]\n\"train.seed\" = [1, 2]\n",
    );
    let out = run_ok(
        cmd(&env, c)
            .env("RUNNER_STEP_DELAY_MS", "100")
            .args(["sweep", s(&r), "--executor", "slurm", "--cpus-per-run", "1"])
            .args(["--max-parallel", "2", "--format", "json"]),
    );
    assert_eq!(out["submitted"].as_array().unwrap().len(), 2, "{out}");
    // a copy of the store as submitted, to be collected once at the end
    let once = env.path("once.db");
    rusqlite::Connection::open(env.db())
        .unwrap()
        .execute_batch(&format!("VACUUM INTO '{}'", once.display()))
        .unwrap();
    wait_for_epochs(&env, 1, 1, 60);
    // while the tasks run: collect, and a local sweep of the same recipe trains nothing
    collect(&env, c);
    let during = store_rows(&env.db());
    assert!(
        during
            .iter()
            .any(|r| r.starts_with("runs:") && r.contains("\"submitted\"")),
        "the tasks ended before the test could collect during them: {during:?}"
    );
    let local = env.json(&["sweep", s(&r), "--format", "json"]);
    for row in local.as_array().unwrap() {
        assert_eq!(row["action"], "skipped (submitted to Slurm)", "{local}");
    }
    collect(&env, c);
    wait_settled(&env, c, 120);
    let after = store_rows(&env.db());
    collect(&env, c);
    assert_eq!(
        store_rows(&env.db()),
        after,
        "a second collect changed the store"
    );
    // what was collected during the run is all still there (epochs, checkpoints by id)
    for row in during.iter().filter(|r| r.starts_with("epochs:")) {
        assert!(after.contains(row), "lost or changed: {row}");
    }
    // collecting many times gives the rows collecting once gives
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&once), "--quiet", "collect"])
        .current_dir(env.dir.path())
        .env("SLURM_CONF", &c.conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let many: Vec<String> = after
        .iter()
        .filter(|r| !r.starts_with("runs:"))
        .cloned()
        .collect();
    let single: Vec<String> = store_rows(&once)
        .into_iter()
        .filter(|r| !r.starts_with("runs:"))
        .collect();
    assert_eq!(many, single, "collected during the run vs once at the end");
    for r in after.iter().filter(|r| r.starts_with("runs:")) {
        assert!(r.contains("\"done\""), "{r}");
    }
    eprintln!(
        "collect during and after: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_pipeline_child_waits_for_its_parent_array_and_starts_from_its_checkpoint() {
    let Some((c, _serial)) = cluster() else {
        return;
    };
    let env = Env::new();
    env.recipe("parent.toml", "");
    let child = env.recipe(
        "child.toml",
        "[model.init_from]\nrecipe = \"parent.toml\"\npick = \"last\"\n\n[sweep]\nmode = \"grid\"\n\n[sweep.params]\n\"train.seed\" = [5, 6]\n",
    );
    let out = submit(&env, c, &child, &["--wait"]);
    assert_eq!(out["submitted"].as_array().unwrap().len(), 3, "{out}");
    let runs = out["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["status"] == "done"), "{out}");
    let st = status(&env, c);
    let parent_job = st[0]["job_id"].as_i64().unwrap();
    assert!(st[1]["job_id"].as_i64().unwrap() > parent_job, "{st:?}");
    for child_id in [2, 3] {
        let show = env.json(&["show", &child_id.to_string(), "--format", "json"]);
        assert_eq!(show["init_from_run"]["id"], 1, "{show}");
    }
    // the same pipeline swept locally trains the same children
    let local_env = Env::new();
    local_env.recipe("parent.toml", "");
    let local_child = local_env.recipe(
        "child.toml",
        "[model.init_from]\nrecipe = \"parent.toml\"\npick = \"last\"\n\n[sweep]\nmode = \"grid\"\n\n[sweep.params]\n\"train.seed\" = [5, 6]\n",
    );
    let o = local_env
        .cmd()
        .env("RAYON_NUM_THREADS", "1")
        .args(["sweep", s(&local_child)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let (a, b) = (results(&env), results(&local_env));
    for (key, v) in &b {
        assert_eq!(a[key].0, v.0, "run {key}");
    }
}

#[test]
fn bad_input_on_a_cluster_exits_2_and_submits_nothing() {
    let Some((c, _serial)) = cluster() else {
        return;
    };
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let jobs_before = squeue_jobs(c);
    let out = cmd(&env, c)
        .args(["sweep", s(&r), "--executor", "slurm", "--partition", "nope"])
        .output()
        .unwrap();
    common::assert_invalid(
        &out,
        &["unknown Slurm partition `nope`", "debug", "--partition"],
    );
    let out = cmd(&env, c)
        .args(["sweep", s(&r), "--executor", "slurm", "--mem", "900000T"])
        .output()
        .unwrap();
    common::assert_invalid(&out, &["sbatch refuses the job array"]);
    // a checkpoint folder under a file: the run folders cannot be written
    std::fs::write(env.path("afile"), "x").unwrap();
    let out = cmd(&env, c)
        .args(["sweep", s(&r), "--executor", "slurm"])
        .args([
            "--set",
            &format!("checkpoint.dir=\"{}\"", env.path("afile/runs").display()),
        ])
        .output()
        .unwrap();
    common::assert_invalid(&out, &["cannot write run folders under", "checkpoint.dir"]);
    assert_eq!(common::runs_in_store(&env), 0);
    assert!(!env.db().exists(), "no store is created");
    assert_eq!(squeue_jobs(c), jobs_before, "nothing submitted");
}

#[test]
fn without_sbatch_a_slurm_sweep_exits_2_and_the_dry_run_still_prints_the_script() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let empty = env.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env
        .cmd()
        .env("PATH", &empty)
        .args(["sweep", s(&r), "--executor", "slurm", "--max-parallel", "2"])
        .output()
        .unwrap();
    common::assert_invalid(
        &out,
        &["`sbatch` is not on PATH", "login node", "--dry-run"],
    );
    assert!(!env.db().exists(), "nothing recorded");
    let out = env
        .cmd()
        .env("PATH", &empty)
        .args([
            "sweep",
            s(&r),
            "--executor",
            "slurm",
            "--max-parallel",
            "2",
            "--dry-run",
        ])
        .args(["--cpus-per-run", "2", "--time", "1:00:00"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    for want in [
        "#SBATCH --array=0-3%2",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=1:00:00",
        "#SBATCH --signal=B:USR1@120",
        "exec ",
        " exec ",
        "--index \"$SLURM_ARRAY_TASK_ID\"",
    ] {
        assert!(script.contains(want), "{want} not in:\n{script}");
    }
    assert!(!env.db().exists(), "a dry run records nothing");
    // Slurm options need the Slurm executor; a bad [slurm] value is a recipe error
    let out = env.run(&["sweep", s(&r), "--partition", "gpu"]);
    common::assert_invalid(&out, &["--partition needs --executor slurm"]);
    let bad = env.recipe("bad.toml", "[slurm]\ntime = \"soon\"\ncpus_per_run = 0\n");
    let out = env.run(&["sweep", s(&bad), "--executor", "slurm", "--dry-run"]);
    common::assert_invalid(&out, &["slurm.time", "slurm.cpus_per_run"]);
}
