//! The hand-run benchmark scripts in `bench/`: the table `bench/summarize.py` makes from
//! `bench/compare.sh`'s JSON lines (medians of per-round ratios, the whole-run row, memory),
//! and `compare.sh`'s refusal without PyTorch. Needs `python3` (skipped with a reason if absent).

use std::process::Command;

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: python3 not found (bench/summarize.py needs it)");
    }
    ok.then_some("python3")
}

/// `bench/summarize.py ARGS tests/fixtures/bench/FIXTURE`'s output.
fn summarize(py: &str, args: &[&str], fixture: &str) -> String {
    let out = Command::new(py)
        .arg("bench/summarize.py")
        .args(args)
        .arg(format!("tests/fixtures/bench/{fixture}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn summarize_gives_the_median_of_per_round_ratios_and_the_whole_run_row() {
    let Some(py) = python() else { return };
    let text = summarize(py, &[], "compare_sample.jsonl");
    // rounds: runner 100 / 120 / 90 against PyTorch 200 / 100 / 100
    let row = text
        .lines()
        .find(|l| l.starts_with("| resnet18 | 64 | 64 "))
        .unwrap_or_else(|| panic!("no ResNet-18 row:\n{text}"));
    assert!(row.contains("0.50, 1.20, 0.90"), "{row}");
    assert!(row.contains("**0.90x**"), "median of the ratios: {row}");
    assert!(row.contains("| 95.0 |"), "channels-last median: {row}");
    assert!(
        row.contains("| 303 / 900 |"),
        "peak RSS, max over rounds: {row}"
    );
    assert!(text.contains("13 measurements"), "{text}");
    assert!(text.contains("commit abc1234"), "{text}");
    // whole run: 200 / 210 s against 220 / 200 s -> PyTorch/runner 1.10, 0.95
    assert!(text.contains("| 1.10, 0.95 | **1.03x** |"), "{text}");
    assert!(text.contains("1000 (+ workers 650)"), "{text}");
}

#[test]
fn compare_refuses_to_start_without_pytorch_and_says_what_to_run() {
    let out = Command::new("bash")
        .arg("bench/compare.sh")
        .env("PYTHON", "/nonexistent/python")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bench/pytorch-env.sh"), "{err}");
    let syntax = Command::new("bash")
        .args(["-n", "bench/compare.sh"])
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
}

#[test]
fn summarize_scaling_gives_step_times_per_shape() {
    let Some(py) = python() else { return };
    let text = summarize(py, &["--scaling"], "compare_sample.jsonl");
    // batch 64: runner 640 / 533 / 711 ms, PyTorch 320 / 640 / 640 ms; medians 640 and 640
    assert!(
        text.contains("| 64 | 64 | 640 | 640 | 1.00 | 303 / 900 |"),
        "{text}"
    );
    assert!(
        !text.contains("e2e_resnet18"),
        "whole runs are not shapes: {text}"
    );
}

#[test]
fn the_gpu_checks_dry_run_puts_throughput_first_and_fits_five_minutes() {
    // any machine: the stages in order, each command with its budget, the sum within 300 s
    let out = Command::new("bash")
        .args(["scripts/gpu-check.sh", "--dry-run"])
        .env("RUNNER", "bin/runner")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let stages: Vec<(&str, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("== "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(" (starts by ")?;
            Some((name, rest.trim_end_matches(" s)").parse().ok()?))
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|s| s.0).collect();
    assert_eq!(
        names,
        [
            "environment",
            "smoke",
            "throughput",
            "cudnn",
            "parity",
            "epoch",
            "quickstart"
        ],
        "{text}"
    );
    // the throughput table is done (the next stage starts) within 2.5 minutes
    assert!(stages[3].1 <= 150, "{text}");
    let budgets: u64 = text
        .lines()
        .filter_map(|l| l.trim_start().split_once(" s  "))
        .filter_map(|(b, _)| b.trim().parse::<u64>().ok())
        .sum();
    assert!(budgets <= 300, "{budgets} s:\n{text}");
    assert!(
        text.contains(&format!("== total: {budgets} s of a 300 s budget")),
        "{text}"
    );
    // PyTorch's side runs AMP channels-last; runner's throughput rows are bf16 at batch 64
    assert!(text.contains("--amp bf16 --channels-last"), "{text}");
    assert!(text.contains("selftest --versions"), "{text}");
}

#[test]
fn summarize_compares_against_the_screened_best_and_sets_noisy_rounds_apart() {
    let Some(py) = python() else { return };
    let text = summarize(py, &[], "compare_screened.jsonl");
    // round 3 ran while the machine's steal time was 20%: set apart, the others kept
    assert!(text.contains("1 of 3 rounds set apart as noisy"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("| resnet18 | 64 | 64 "))
        .unwrap_or_else(|| panic!("no ResNet-18 row:\n{text}"));
    // runner 100 / 110 against NCHW 80 / 105 and the screened channels-last + tcmalloc
    // 120 / 100: ratios 1.25, 1.05 (median 1.15) and 0.83, 1.10 (median 0.97). The best is
    // the screened configuration in every round, not the faster side of each round (round 2's
    // NCHW 105 is faster), which would favour PyTorch by the noise.
    assert!(row.contains("| 1.25, 1.05 | **1.15x** |"), "{row}");
    assert!(row.contains("120.0 channels_last+tcmalloc"), "{row}");
    assert!(row.contains("| **0.97x** |"), "{row}");
    // working sets: runner 300 - 70, PyTorch NCHW 900 - 800, the best 950 - 820
    assert!(row.contains("| 230 / 100 / 130 |"), "{row}");
    // torch.compile's line is information: its own table, no round of the row
    assert!(
        text.contains("| resnet18 | 64 | 64 | 150.0 | 41.5 |"),
        "{text}"
    );
    assert!(text.contains("13 measurements"), "{text}");
    // the screening lines are no round of their own, and are shown with the winner in bold
    assert!(
        text.contains("nchw+jemalloc 70.0, **channels_last+tcmalloc 125.0**"),
        "{text}"
    );
}

#[test]
fn compare_dry_run_lists_pytorchs_configurations_without_timing_anything() {
    let out = Command::new("bash")
        .args(["bench/compare.sh", "--dry-run"])
        .env("PYTHON", "/nonexistent/python")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // both layouts with glibc malloc always; jemalloc / tcmalloc where installed, else the hint
    assert!(
        text.contains("nchw+malloc") && text.contains("channels_last+malloc"),
        "{text}"
    );
    let has = |lib: &str| std::path::Path::new(lib).exists();
    let je = has("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2");
    assert_eq!(text.contains("nchw+jemalloc"), je, "{text}");
    if !je && !has("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4") {
        assert!(text.contains("apt-get install libjemalloc2"), "{text}");
    }
    assert!(text.contains("5 rounds"), "{text}");
}
