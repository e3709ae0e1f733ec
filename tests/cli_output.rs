//! What commands print and write, through the real binary: one learning-rate format
//! everywhere, MACs with a unit, a synthetic folder not called the built-in set, exported
//! weights readable like checkpoints.

mod common;

use common::{code, s, stderr, Env};

#[test]
fn the_learning_rate_has_one_format_in_progress_summary_and_show() {
    let env = Env::new();
    let r = env.recipe("lr.toml", "");
    // not --quiet: the epoch lines and the summary line on stderr
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.db()), "run", s(&r)])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let epoch_lines: Vec<&str> = err.lines().filter(|l| l.contains(" epoch ")).collect();
    assert_eq!(epoch_lines.len(), 3, "{err}");
    assert!(
        epoch_lines.iter().all(|l| l.contains("lr 5.000e-2")),
        "{err}"
    );
    let summary = err
        .lines()
        .find(|l| l.contains("done:"))
        .expect("a summary line");
    assert!(summary.contains("lr 5.000e-2"), "{summary}");
    let show = env.run(&["show", "1"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("5.000e-2"), "{text}");
}

#[test]
fn inspect_gives_macs_a_unit() {
    let env = Env::new();
    let r = env.recipe("m.toml", "");
    let out = env.run(&["inspect", s(&r)]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("MACs/image"))
        .expect("a MACs line");
    let value = line.split("MACs/image ").nth(1).unwrap();
    let unit = value.split_whitespace().nth(1).unwrap();
    assert!(["k", "M", "G"].contains(&unit), "{line}");
    // JSON keeps the exact count
    let json = env.json(&["inspect", s(&r), "--format", "json"]);
    assert!(json["macs"].as_u64().unwrap() > 1000);
}

#[test]
fn data_synth_into_a_folder_is_not_called_the_built_in_set() {
    let env = Env::new();
    let dir = env.path("faces");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["data", "synth", "--out", s(&dir), "--identities", "3"])
        .args([
            "--images-per-identity",
            "3",
            "--verify-identities",
            "2",
            "--impostors",
            "1",
        ])
        .args(["--size", "16"])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("built-in"), "{err}");
    assert!(
        err.contains(&format!("wrote a synthetic data set to {}", dir.display())),
        "{err}"
    );
}

#[test]
fn exported_weights_are_readable_like_checkpoints() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let r = env.recipe("x.toml", "");
    env.json(&["run", s(&r), "--format", "json"]);
    let out_file = env.path("w.safetensors");
    let out = env.run(&["export", "1", "--out", s(&out_file)]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "{mode:o}");
}

#[test]
fn show_and_best_print_the_configuration_status_lists_local_runs_and_plan_takes_dry_run() {
    let env = Env::new();
    let r = env.recipe("cfg.toml", "");
    env.json(&[
        "run",
        s(&r),
        "--set",
        "optimizer.lr=0.02",
        "--format",
        "json",
    ]);
    for args in [vec!["show", "1"], vec!["best"]] {
        let out = env.run(&args);
        assert_eq!(code(&out), Some(0), "{args:?}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("optimizer.lr = 0.02"), "{args:?}: {text}");
        assert!(text.contains("model.kind = convnext"), "{args:?}: {text}");
    }
    // `runner status` without Slurm: the local runs and their states
    let st = env.json(&["status", "--format", "json"]);
    let st = st.as_array().unwrap();
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(
        (
            st[0]["run_id"].as_i64(),
            st[0]["status"].as_str(),
            st[0]["slurm_state"].as_str()
        ),
        (Some(1), Some("done"), Some("local"))
    );
    assert_eq!(st[0]["last_epoch"], 3);
    // `plan --dry-run`: plan never trains, so the flag is accepted
    let plan = env.json(&["plan", s(&r), "--dry-run", "--format", "json"]);
    assert_eq!(plan.as_array().unwrap().len(), 1);
}

#[test]
fn the_sweep_bar_moves_while_a_run_trains() {
    // a terminal, as a user has one (`script` gives the command a pseudo-terminal)
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` (util-linux) for a pseudo-terminal");
        return;
    }
    let env = Env::new();
    let r = env.recipe("bar.toml", "");
    let runner = env!("CARGO_BIN_EXE_runner");
    let command = format!("{runner} --db {} sweep {}", s(&env.db()), s(&r));
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(env.dir.path())
        .env("RUNNER_STEP_DELAY_MS", "400")
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    // the sweep bar's renders before the run ended: `k/3 epochs  elapsed hh:mm:ss`
    let mut during = std::collections::BTreeSet::new();
    for line in screen.lines() {
        let Some(at) = line.find("/3 epochs  elapsed ") else {
            continue;
        };
        let done: u32 = line[..at]
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(3);
        let elapsed = &line[at + "/3 epochs  elapsed ".len()..][..8];
        if done < 3 {
            during.insert((done, elapsed.to_string()));
        }
    }
    let elapsed: std::collections::BTreeSet<&String> = during.iter().map(|(_, e)| e).collect();
    let positions: std::collections::BTreeSet<u32> = during.iter().map(|(d, _)| *d).collect();
    assert!(
        elapsed.len() >= 2 && positions.len() >= 2,
        "the bar's elapsed time and position move during the run: {during:?}\n{screen}"
    );
    // and the leaderboard's heading is a line of its own
    assert!(
        screen
            .lines()
            .any(|l| l.trim_end().ends_with("`runner leaderboard --sweep 1`):")),
        "{screen}"
    );
}

#[test]
fn data_synth_shows_its_progress() {
    let env = Env::new();
    let synth = |dir: &std::path::Path| -> Vec<String> {
        vec![
            "data".into(),
            "synth".into(),
            "--out".into(),
            s(dir).into(),
            "--identities".into(),
            "4".into(),
            "--images-per-identity".into(),
            "5".into(),
            "--size".into(),
            "16".into(),
        ]
    };
    // stderr not a terminal: a plain line at every tenth
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(synth(&env.path("a")))
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("data synth: "))
        .collect();
    assert!(lines.len() >= 5, "{err}");
    assert!(lines.last().unwrap().ends_with("images (100%)"), "{err}");
    // a terminal: a bar
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped the terminal half: no `script`");
        return;
    }
    let command = format!(
        "{} {}",
        env!("CARGO_BIN_EXE_runner"),
        synth(&env.path("b")).join(" ")
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0));
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("data synth") && screen.contains(" images  "),
        "{screen}"
    );
}

#[test]
fn eval_and_match_show_their_progress() {
    let env = Env::new();
    let r = env.recipe("p.toml", "");
    env.json(&["run", s(&r), "--format", "json"]);
    // not --quiet, stderr not a terminal: plain lines up to 100%
    let loud = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["--db", s(&env.db())])
            .args(args)
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert_eq!(code(&out), Some(0), "{args:?}: {}", stderr(&out));
        stderr(&out)
    };
    for (args, what) in [
        (vec!["eval", "1", "--split", "verify-dev"], "eval"),
        (vec!["eval", "1", "--split", "dev"], "eval"),
    ] {
        let err = loud(&args);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with(&format!("{what}: ")))
            .collect();
        assert!(!lines.is_empty(), "{args:?}: {err}");
        assert!(
            lines.last().unwrap().ends_with("images (100%)"),
            "{args:?}: {err}"
        );
    }
    // the built-in set the run generated (the recipe's cache_dir)
    let data = std::fs::read_dir(env.path("data"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let gallery = data.join("verification/known");
    let unknown = data.join("verification/unknown_dev");
    let err = loud(&["match", "1", "--gallery", s(&gallery), s(&unknown)]);
    assert!(
        err.lines()
            .any(|l| l.starts_with("match: ") && l.ends_with("images (100%)")),
        "{err}"
    );
}

#[test]
fn the_data_checks_show_their_progress() {
    let env = Env::new();
    let root = env.path("faces");
    common::synth_folder(&env, &root, 32);
    let r = common::folder_recipe(&env, "d.toml", &root, "", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.db()), "validate", s(&r)])
        .current_dir(env.dir.path())
        .env("XDG_CACHE_HOME", env.path("cache"))
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    for pass in [
        "data check: image headers: ",
        "data check: content hashes: ",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(pass) && l.ends_with("images (100%)")),
            "{pass}: {err}"
        );
    }
}
