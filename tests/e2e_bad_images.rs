//! `data.on_bad_image = "skip"` end to end: corrupt images in every split are skipped with a
//! warning naming them, recorded in the store (`show`), and left out of eval metrics and
//! submissions without shifting any other image's row.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{s, sorted_files, Env};

/// The first image of the first identity folder under `d`.
fn first_in_first_identity(d: &Path) -> PathBuf {
    sorted_files(&sorted_files(d)[0])[0].clone()
}

fn corrupt(p: &Path) {
    std::fs::write(p, b"this is not a JPEG").unwrap();
}

fn submission_rows(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

fn skipped_list(report: &serde_json::Value) -> Vec<String> {
    report["skipped"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A tiny recipe with `on_bad_image = "skip"` and its data set generated (through `data
/// preview`): the env, the recipe and the data root.
fn skipping_env() -> (Env, PathBuf, PathBuf) {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let text = std::fs::read_to_string(&r).unwrap().replace(
        "num_workers = 2",
        "num_workers = 2\non_bad_image = \"skip\"",
    );
    std::fs::write(&r, text).unwrap();
    let grid = env.path("grid.png");
    assert!(env
        .run(&["data", "preview", s(&r), "--out", s(&grid)])
        .status
        .success());
    let root = sorted_files(&env.path("data"))[0].clone();
    (env, r, root)
}

#[test]
fn skipped_images_are_warned_recorded_and_left_out_of_eval_rows() {
    // generate the data set, then break one image in each split the run reads
    let (env, r, root) = skipping_env();
    let grid = env.path("grid.png");
    let broken = [
        first_in_first_identity(&root.join("classification/train")),
        first_in_first_identity(&root.join("classification/dev")),
        first_in_first_identity(&root.join("verification/known")),
        sorted_files(&root.join("verification/unknown_dev"))[0].clone(),
    ];
    for p in &broken {
        corrupt(p);
    }
    // The data commands honour "skip" too: the baselines leave the images out and list them,
    // the preview takes the next readable image.
    let b = env.json(&["data", "baseline", s(&r), "--format", "json"]);
    let listed: Vec<&str> = b["skipped_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for p in &broken {
        assert!(listed.contains(&s(p)), "{} not in {b}", p.display());
    }
    assert!(env
        .run(&["data", "preview", s(&r), "--out", s(&grid)])
        .status
        .success());

    // not --quiet: the warnings are the point
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.db()), "run", s(&r), "--format", "json"])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "done", "{run}");
    for p in &broken {
        let name = p.display().to_string();
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.contains("warning: ") && l.contains(&name))
                .count(),
            1,
            "one warning for {name}:\n{stderr}"
        );
    }
    let id = run["id"].to_string();
    let show = env.json(&["show", &id, "--format", "json"]);
    let mut recorded: Vec<String> = show["skipped_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(!r["error"].as_str().unwrap().is_empty(), "{r}");
            assert!(r["epoch"].as_u64().unwrap() >= 1, "{r}");
            r["path"].as_str().unwrap().to_string()
        })
        .collect();
    recorded.sort();
    let mut expected: Vec<String> = broken.iter().map(|p| p.display().to_string()).collect();
    expected.sort();
    assert_eq!(recorded, expected);

    // classification test split: the same rows for every readable image, before and after
    // one test image breaks
    let before = env.path("before.csv");
    env.json(&[
        "eval",
        &id,
        "--split",
        "test",
        "--submission",
        s(&before),
        "--format",
        "json",
    ]);
    let test_image = sorted_files(&root.join("classification/test"))[1].clone();
    corrupt(&test_image);
    let after = env.path("after.csv");
    let report = env.json(&[
        "eval",
        &id,
        "--split",
        "test",
        "--submission",
        s(&after),
        "--format",
        "json",
    ]);
    assert_eq!(
        skipped_list(&report),
        vec![test_image.display().to_string()]
    );
    let id_of = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let expected: Vec<String> = submission_rows(&before)
        .into_iter()
        .filter(|row| row.split(',').next() != Some(id_of(&test_image).as_str()))
        .collect();
    assert_eq!(submission_rows(&before).len(), expected.len() + 1);
    assert_eq!(submission_rows(&after), expected);
    assert_eq!(report["images"].as_u64().unwrap() as usize, expected.len());

    // verification: the broken gallery and unknown images are skipped, the rest scored
    let vd = env.json(&["eval", &id, "--split", "verify-dev", "--format", "json"]);
    let mut skipped = skipped_list(&vd);
    skipped.sort();
    let mut want = vec![
        broken[2].display().to_string(),
        broken[3].display().to_string(),
    ];
    want.sort();
    assert_eq!(skipped, want);
    let unknown = sorted_files(&root.join("verification/unknown_dev")).len();
    assert_eq!(
        vd["images"].as_u64().unwrap() as usize,
        unknown - 1,
        "{vd} {:?}",
        sorted_files(&root.join("verification/unknown_dev"))
    );
    assert!(vd["accuracy"].as_f64().is_some());

    // pairs: a pair with a broken image is left out
    let known = root.join("verification/known");
    let ids = sorted_files(&known);
    let (a, b) = (sorted_files(&ids[0]), sorted_files(&ids[1]));
    let pairs = format!(
        "{} {} 1\n{} {} 1\n{} {} 0\n{} {} 0\n",
        a[0].display(),
        a[1].display(),
        b[0].display(),
        b[1].display(),
        a[1].display(),
        b[0].display(),
        a[2].display(),
        b[1].display()
    );
    assert_eq!(a[0], broken[2]);
    let pairs_file = env.path("pairs.txt");
    std::fs::write(&pairs_file, pairs).unwrap();
    let p = env.json(&[
        "eval",
        &id,
        "--split",
        "pairs",
        "--pairs",
        s(&pairs_file),
        "--format",
        "json",
    ]);
    assert_eq!(p["pairs"], 3, "{p}");
    assert_eq!(skipped_list(&p), vec![broken[2].display().to_string()]);
}

#[test]
fn a_split_with_no_readable_image_is_not_scored_as_zero() {
    let (env, r, root) = skipping_env();
    let all_in = |split: &str| -> Vec<PathBuf> {
        sorted_files(&root.join(split))
            .iter()
            .flat_map(|d| sorted_files(d))
            .collect()
    };
    // Every dev image unreadable: validation metrics are absent, not 0.
    for p in all_in("classification/dev") {
        corrupt(&p);
    }
    let run = env.json(&["run", s(&r), "--set", "train.epochs=1", "--format", "json"]);
    assert_eq!(run["status"], "done", "{run}");
    let show = env.json(&["show", &run["id"].to_string(), "--format", "json"]);
    let epoch = &show["epochs"][0];
    assert!(
        epoch["val_acc"].is_null() && epoch["val_loss"].is_null(),
        "{epoch}"
    );
    // Every training image unreadable: the run fails, saying so, instead of "training" on
    // nothing with a loss of 0.
    for p in all_in("classification/train") {
        corrupt(&p);
    }
    let out = env.run(&["run", s(&r), "--set", "train.epochs=1", "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no training image was read"), "{err}");
}
