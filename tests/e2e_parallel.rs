//! Parallel trials (`runner sweep --jobs N --devices ... --threads-per-run T`), through the
//! real binary: child processes on device slots train the same runs, bit for bit, as a
//! sequential sweep at the same per-run thread count; an interrupt reaches every child, and
//! the next call resumes them; bad options exit 2.

mod common;

use common::{assert_invalid, epoch_metrics, s, Env};

const GRID: &str = r#"
[sweep]
mode = "grid"

[sweep.params]
"optimizer.lr" = [0.01, 0.05]
"train.seed" = [1, 2]
"#;

/// Every run of the store, keyed, with its epochs' metrics (timings aside).
fn by_key(env: &Env, db: &std::path::Path) -> Vec<(String, Vec<serde_json::Value>)> {
    let cmd = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["--db", s(db), "--quiet"])
            .args(args)
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let mut out: Vec<(String, Vec<serde_json::Value>)> = cmd(&["runs", "--format", "json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let show = cmd(&["show", &r["id"].to_string(), "--format", "json"]);
            (r["key"].as_str().unwrap().to_string(), epoch_metrics(&show))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn sequential_one_thread(
    env: &Env,
    recipe: &std::path::Path,
    extra: &[&str],
) -> std::path::PathBuf {
    let db = env.path("sequential.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&db), "--quiet", "sweep", s(recipe)])
        .args(extra)
        .env("RAYON_NUM_THREADS", "1")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    db
}

#[test]
fn two_jobs_on_cpu_slots_equal_a_sequential_one_thread_sweep_bit_for_bit() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let out = env.run(&[
        "sweep",
        s(&r),
        "--jobs",
        "2",
        "--devices",
        "cpu,cpu",
        "--threads-per-run",
        "1",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "done"),
        "{rows}"
    );
    let sweep = rows[0]["sweep_id"].to_string();
    // every run recorded one thread on the CPU, and the sweep lists all four
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let threads: Vec<(String, i64)> = c
        .prepare("SELECT device, threads FROM runs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(threads.len(), 4);
    assert!(
        threads.iter().all(|(d, t)| d.starts_with("cpu") && *t == 1),
        "{threads:?}"
    );
    let board = env.json(&["leaderboard", "--sweep", &sweep, "--format", "json"]);
    assert_eq!(board.as_array().unwrap().len(), 4);

    let seq = sequential_one_thread(&env, &r, &[]);
    let (a, b) = (by_key(&env, &env.db()), by_key(&env, &seq));
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "parallel == sequential, bit for bit");

    // the same command again trains nothing
    let again = env.json(&["sweep", s(&r), "--jobs", "2", "--format", "json"]);
    assert!(again
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["action"] == "skipped (done)"));
}

#[test]
fn an_interrupt_reaches_every_child_and_the_next_call_resumes_them() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    let args = [
        "sweep",
        s(&r),
        "--set",
        "train.epochs=40",
        "--jobs",
        "2",
        "--threads-per-run",
        "1",
    ];
    let mut parent = env.cmd().args(args).spawn().unwrap();
    // wait until both children have recorded an epoch, then interrupt the parent alone
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(std::time::Instant::now() < deadline, "no epochs in time");
        let n: i64 = rusqlite::Connection::open(env.db())
            .and_then(|c| {
                c.query_row("SELECT COUNT(DISTINCT run_id) FROM epochs", [], |r| {
                    r.get(0)
                })
            })
            .unwrap_or(0);
        if n >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our child's pid.
    unsafe {
        libc::kill(parent.id() as libc::pid_t, libc::SIGINT);
    }
    let status = parent.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let interrupted: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE status = 'interrupted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let done: i64 = c
        .query_row("SELECT COUNT(*) FROM runs WHERE status = 'done'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(interrupted >= 1, "the children stopped with checkpoints");
    assert!(interrupted + done <= 4);
    let out = env.run(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let seq = sequential_one_thread(&env, &r, &["--set", "train.epochs=40"]);
    assert_eq!(by_key(&env, &env.db()), by_key(&env, &seq));
}

#[test]
fn bad_parallel_options_exit_2() {
    let env = Env::new();
    let r = env.recipe("r.toml", GRID);
    for (extra, needles) in [
        (&["--jobs", "0"][..], &["--jobs", "at least 1"][..]),
        (
            &["--jobs", "3", "--devices", "cpu,cpu"][..],
            &["--devices lists 2", "--jobs 3"][..],
        ),
        (
            &["--jobs", "2", "--threads-per-run", "0"][..],
            &["--threads-per-run"][..],
        ),
        (
            &["--jobs", "2", "--executor", "slurm"][..],
            &["--jobs", "--max-parallel"][..],
        ),
        (
            &["--jobs", "2", "--set", "sweep.prune.kind=\"halving\""][..],
            &["--jobs", "[sweep.prune]"][..],
        ),
    ] {
        let mut args = vec!["sweep", s(&r)];
        args.extend_from_slice(extra);
        assert_invalid(&env.run(&args), needles);
    }
    assert_eq!(common::runs_in_store(&env), 0);
}
