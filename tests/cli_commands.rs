//! The remaining commands through the binary: data synth / stats / preview / baseline,
//! inspect, bench train, and the JSON shapes the contract fixes.

mod common;

use common::{code, s, Env};

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn data_synth_is_byte_identical_for_a_seed_and_stats_count_it() {
    let env = Env::new();
    let args = |out: &str, seed: &str| {
        vec![
            "data".to_string(),
            "synth".into(),
            "--out".into(),
            out.into(),
            "--identities".into(),
            "4".into(),
            "--images-per-identity".into(),
            "5".into(),
            "--verify-identities".into(),
            "3".into(),
            "--impostors".into(),
            "2".into(),
            "--size".into(),
            "32".into(),
            "--seed".into(),
            seed.into(),
        ]
    };
    let (a, b, c) = (env.path("a"), env.path("b"), env.path("c"));
    for (dir, seed) in [(&a, "5"), (&b, "5"), (&c, "6")] {
        let argv = args(s(dir), seed);
        let out = env.run(&argv.iter().map(|x| x.as_str()).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // the same set on one thread
    let one = env.path("one");
    let argv = args(s(&one), "5");
    let out = env
        .cmd()
        .env("RAYON_NUM_THREADS", "1")
        .args(&argv)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert!(!fa.is_empty());
    assert_eq!(fa, fb, "same seed, same bytes");
    assert_eq!(fa, files(&one), "one thread, same bytes");
    assert_ne!(fa, fc, "another seed, other faces");
    // Writing over an existing folder is refused.
    let argv = args(s(&a), "5");
    let out = env.run(&argv.iter().map(|x| x.as_str()).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(2));

    let stats = env.json(&["data", "stats", s(&a), "--format", "json"]);
    assert_eq!(stats["identities"], 4);
    assert_eq!(stats["known_identities"], 3);
    // CSV: a header and one row per split and identity
    let out = env.run(&["data", "stats", s(&a), "--format", "csv"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["split", "identity", "images"]);
    let count = |split: &str| -> u64 {
        rows[1..]
            .iter()
            .filter(|r| r[0] == split)
            .map(|r| r[2].parse::<u64>().unwrap())
            .sum()
    };
    for (split, key) in [
        ("train", "train_images"),
        ("dev", "dev_images"),
        ("test", "test_images"),
        ("known", "known_images"),
        ("unknown_dev", "unknown_dev_images"),
        ("unknown_test", "unknown_test_images"),
    ] {
        assert_eq!(count(split), stats[key].as_u64().unwrap(), "{split}");
    }
    let train: Vec<_> = rows.iter().filter(|r| r[0] == "train").collect();
    assert_eq!(train.len(), 4, "one train row per identity");
    assert!(rows
        .iter()
        .any(|r| r[0] == "unknown_dev" && r[1] == "n000000"));
    // --out is documented
    for sub in ["synth", "preview"] {
        let out = env.run(&["data", sub, "-h"]);
        let help = String::from_utf8_lossy(&out.stdout);
        // the option's line and its continuation lines, up to the next option
        let mut lines = help
            .lines()
            .map(str::trim)
            .skip_while(|l| !l.starts_with("--out"));
        let first = lines.next().unwrap_or_default();
        let rest: Vec<&str> = lines.take_while(|l| !l.starts_with('-')).collect();
        let text = format!(
            "{} {}",
            first.trim_start_matches("--out <OUT>"),
            rest.join(" ")
        );
        assert!(text.trim().len() > 10, "{sub}: --out has no help: {help}");
    }
    let png = env.path("grid.png");
    let r = env.recipe("r.toml", "");
    let out = env.run(&["data", "preview", s(&r), "--out", s(&png), "--count", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap();
    assert!(img.width() >= 32 && img.height() >= 32);
    let base = env.json(&["data", "baseline", s(&r), "--format", "json"]);
    for k in [
        "raw_pixel_nn_dev_accuracy",
        "raw_pixel_verification_accuracy",
        "all_no_match_verification_accuracy",
    ] {
        let v = base[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k}");
    }
}

#[test]
fn inspect_counts_parameters_like_torchvision() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let j = env.json(&[
        "inspect",
        s(&r),
        "--set",
        "model={ kind = \"resnet\", preset = \"18\" }",
        "--classes",
        "1000",
        "--set",
        "data.image_size=224",
        "--set",
        "data.synth.size=224",
        "--format",
        "json",
    ]);
    // torchvision's resnet18(num_classes=1000).
    assert_eq!(j["params_total"], 11_689_512);
    assert_eq!(j["params_trainable"], 11_689_512);
    assert!(j["macs"].as_u64().unwrap() > 1_700_000_000);
    assert!(!j["layers"].as_array().unwrap().is_empty());
}

#[test]
fn bench_train_reports_the_contract_fields() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let j = env.json(&["bench", "train", s(&r), "--steps", "2", "--format", "json"]);
    for k in [
        "images_per_sec",
        "forward_ms",
        "backward_ms",
        "step_ms",
        "peak_rss_mb",
    ] {
        assert!(j[k].as_f64().is_some_and(|v| v > 0.0), "{k} in {j}");
    }
    assert!(j["machine"].as_str().is_some());
    // --device is train.device; on the CPU there is no GPU memory to report
    let j = env.json(&[
        "bench",
        "train",
        s(&r),
        "--steps",
        "1",
        "--device",
        "cpu",
        "--format",
        "json",
    ]);
    assert_eq!(j["device"], "cpu");
    assert!(j.get("gpu_peak_mb").is_none(), "{j}");
}

/// `runner bench train --profile`: every operation of the timed steps, forward, backward and
/// optimizer, with the time outside them, adding up to the step.
#[test]
fn bench_train_profile_times_every_operation_of_the_step() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let j = env.json(&["bench", "train", s(&r), "--steps", "2", "--format", "json"]);
    assert!(j.get("ops").is_none(), "no table without --profile: {j}");
    let j = env.json(&[
        "bench",
        "train",
        s(&r),
        "--steps",
        "2",
        "--profile",
        "--format",
        "json",
    ]);
    let ops = j["ops"]
        .as_array()
        .unwrap_or_else(|| panic!("no ops in {j}"));
    let name = |o: &serde_json::Value| o["op"].as_str().unwrap().to_string();
    let names: Vec<String> = ops.iter().map(name).collect();
    assert_eq!(
        names.last().unwrap(),
        "(outside the operations)",
        "{names:?}"
    );
    // the forward's, the backward's and the optimizer's operations are all there
    assert!(
        names
            .iter()
            .any(|n| n.contains("bwd") || n.contains("backward")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n == "matmul" || n.starts_with("linear")),
        "{names:?}"
    );
    let share: f64 = ops.iter().map(|o| o["share"].as_f64().unwrap()).sum();
    assert!(
        (share - 1.0).abs() < 1e-6,
        "shares add up to {share}: {names:?}"
    );
    let ms: Vec<f64> = ops[..ops.len() - 1]
        .iter()
        .map(|o| o["ms_per_step"].as_f64().unwrap())
        .collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "longest first: {ms:?}");
    assert!(ops[..ops.len() - 1]
        .iter()
        .all(|o| o["calls_per_step"].as_f64().unwrap() >= 0.5));
    // the table form lists them too
    let out = env.run(&["bench", "train", s(&r), "--steps", "1", "--profile"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("operation") && text.contains("ms/step"),
        "{text}"
    );
}

/// `runner selftest` checks a CUDA build on a GPU; a CPU build says what to do instead.
#[test]
#[cfg(not(feature = "cuda"))]
fn selftest_on_a_cpu_build_says_to_rebuild_with_cuda() {
    let env = Env::new();
    for args in [
        vec!["selftest"],
        vec!["selftest", "--compile-only", "--arch", "sm_80"],
    ] {
        let out = env.run(&args);
        common::assert_invalid(&out, &["without CUDA", "--features cuda"]);
    }
}

#[test]
fn reading_commands_on_a_missing_store_are_clear_errors() {
    let env = Env::new();
    for args in [
        vec!["runs"],
        vec!["show", "1"],
        vec!["leaderboard"],
        vec!["best"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("store"),
            "{args:?}"
        );
        assert!(!env.db().exists(), "reading must not create a store");
    }
}

#[test]
fn options_a_command_does_not_take_are_usage_errors() {
    let env = Env::new();
    for (args, needle) in [
        // csv is offered only where the output is one table (runs, plan, leaderboard, data stats).
        (vec!["show", "1", "--format", "csv"], "csv"),
        (vec!["best", "--format", "csv"], "csv"),
        (vec!["compare", "1", "2", "--format", "csv"], "csv"),
        (
            vec!["eval", "1", "--split", "dev", "--format", "csv"],
            "csv",
        ),
        // --metric picks the leaderboard row's checkpoint; with --from last it would be
        // silently ignored.
        (
            vec!["resume", "1", "--metric", "val_loss", "--from", "last"],
            "--from best",
        ),
    ] {
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!env.db().exists(), "{args:?} must not create a store");
    }
}

/// The options and arguments of a `--help` page that have no help text (clap prints only the
/// flag, or only its `[default: ...]`).
fn undocumented(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut missing = Vec::new();
    let mut in_list = false;
    for (i, line) in lines.iter().enumerate() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_list = matches!(*line, "Options:" | "Arguments:" | "Global options:");
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if !in_list || indent == 0 || indent > 6 || !trimmed.starts_with(['-', '<', '[']) {
            continue;
        }
        let description = match trimmed.split_once("  ") {
            Some((_, rest)) => rest.trim().to_string(),
            // the long layout: the help is on the next, deeper line
            None => lines
                .get(i + 1)
                .filter(|next| next.len() - next.trim_start().len() > indent)
                .map(|next| next.trim().to_string())
                .unwrap_or_default(),
        };
        if description.is_empty() || description.starts_with('[') {
            missing.push(trimmed.to_string());
        }
    }
    missing
}

#[test]
fn every_option_of_every_command_has_help_and_global_options_stand_apart() {
    let env = Env::new();
    let help = |args: &[&str]| -> String {
        let out = env.run(args);
        assert_eq!(code(&out), Some(0), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let commands = |page: &str| -> Vec<String> {
        page.lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .filter(|c| c != "help")
            .collect()
    };
    let mut pages = Vec::new();
    for c in commands(&help(&["--help"])) {
        let page = help(&[&c, "--help"]);
        let nested = commands(&page);
        if nested.is_empty() {
            pages.push((vec![c.clone()], page));
        }
        for n in nested {
            pages.push((vec![c.clone(), n.clone()], help(&[&c, &n, "--help"])));
        }
    }
    assert!(pages.len() >= 25, "{}", pages.len());
    let mut missing = Vec::new();
    for (cmd, page) in &pages {
        for m in undocumented(page) {
            missing.push(format!("runner {}: {m}", cmd.join(" ")));
        }
        let global = page
            .find("Global options:")
            .expect("a Global options section");
        for flag in ["--db", "--quiet", "--log-format"] {
            assert!(
                page[global..].contains(flag),
                "runner {}: {flag} under Global options",
                cmd.join(" ")
            );
        }
    }
    assert!(
        missing.is_empty(),
        "options without help:\n{}",
        missing.join("\n")
    );
}
