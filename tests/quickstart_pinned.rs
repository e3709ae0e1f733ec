//! The quick start's numbers, pinned: `runner sweep recipes/quickstart.toml` (the README's
//! main job) at 2 threads must give, bit for bit, the leaderboard row recorded in
//! `tests/fixtures/quickstart_pinned.json` for the SIMD level this CPU has, or, for a level
//! with no record, values inside the file's stated band; docs/results.md quotes the exact
//! values. A kernel change that moves a last bit (summation order, another gemm path) fails
//! here and must say so and update both.

mod common;

use common::Env;
use runner::kernels::simd::detected;

#[test]
fn quickstart_metrics_are_pinned() {
    let root = env!("CARGO_MANIFEST_DIR");
    let pinned: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/tests/fixtures/quickstart_pinned.json")).unwrap(),
    )
    .unwrap();
    let threads = pinned["threads"].as_u64().unwrap().to_string();
    let env = Env::new();
    let out = env
        .cmd()
        .args([
            "sweep",
            &format!("{root}/recipes/quickstart.toml"),
            "--format",
            "json",
        ])
        .env("RAYON_NUM_THREADS", &threads)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the quick start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let board = env.json(&["leaderboard", "--format", "json"]);
    let row = &board[0];
    let keys = [
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "verify_acc",
    ];
    let level = format!("{:?}", detected());
    // the gemm crate splits sums longer than 512 terms into blocks sized from the L1 data
    // cache's geometry, so the last bits also depend on it: a record holds for its level on an
    // L1d like the one it was measured on
    let l1d = l1d_geometry();
    let exact = pinned["exact"]
        .get(&level)
        .filter(|e| e["l1d"].as_str() == l1d.as_deref());
    if exact.is_none() {
        eprintln!(
            "no exact values recorded for {level} with L1d {l1d:?} (records: {}): checking the band",
            pinned["exact"]
        );
    }
    match exact {
        Some(exact) => {
            for k in keys {
                assert_eq!(
                    row[k].as_f64().map(f64::to_bits),
                    exact[k].as_f64().map(f64::to_bits),
                    "{k} at {level}, {threads} threads: {} against the pinned {} ({})",
                    row[k],
                    exact[k],
                    exact["measured"]
                );
            }
            // docs/results.md quotes these values
            let results = std::fs::read_to_string(format!("{root}/docs/results.md")).unwrap();
            for k in ["train_loss", "val_loss", "verify_acc"] {
                let v = exact[k].to_string();
                assert!(
                    results.contains(&v),
                    "docs/results.md lacks {level}'s {k} {v}"
                );
            }
            // and the README's results table their rounding, so that the README's quick-start
            // figures trace to this fixture
            let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
            for k in ["val_acc", "verify_acc"] {
                let v = format!("**{:.3}**", exact[k].as_f64().unwrap());
                assert!(
                    readme.contains(&v),
                    "README.md's results table lacks {k} {v}"
                );
            }
        }
        None => {
            for (k, band) in pinned["band"].as_object().unwrap() {
                let (lo, hi) = (band[0].as_f64().unwrap(), band[1].as_f64().unwrap());
                let v = row[k].as_f64().unwrap();
                assert!(
                    (lo..=hi).contains(&v),
                    "{k} = {v} at {level}, outside the band {lo}..{hi}"
                );
            }
        }
    }
}

/// This CPU's first-level data cache as the gemm crate reads it (Linux sysfs): size,
/// associativity and line size, e.g. "48K 12-way 64B"; None where sysfs does not say.
fn l1d_geometry() -> Option<String> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |f: &str| {
            std::fs::read_to_string(entry.path().join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        if read("level").as_deref() == Some("1") && read("type").as_deref() == Some("Data") {
            return Some(format!(
                "{} {}-way {}B",
                read("size")?,
                read("ways_of_associativity")?,
                read("coherency_line_size")?
            ));
        }
    }
    None
}
