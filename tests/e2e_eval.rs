//! `runner eval` and `runner match` on a trained run: metrics, submission files, matching.

mod common;

use common::{assert_invalid, folder_recipe, s, sorted_files, synth_folder, Env};

#[test]
fn eval_prints_metrics_and_writes_course_submissions() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let run = env.json(&["run", s(&r), "--format", "json"]);
    let id = run["id"].to_string();

    let dev = env.json(&["eval", &id, "--split", "dev", "--format", "json"]);
    let acc = dev["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    // The best checkpoint's dev accuracy is the run's best val_acc.
    let show = env.json(&["show", &id, "--format", "json"]);
    let best_val = show["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["val_acc"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert!(
        (acc - best_val).abs() < 1e-9,
        "eval {acc} vs best epoch {best_val}"
    );

    let sub = env.path("test.csv");
    let test = env.json(&[
        "eval",
        &id,
        "--split",
        "test",
        "--submission",
        s(&sub),
        "--format",
        "json",
    ]);
    assert!(
        test["accuracy"].as_f64().is_some(),
        "synthetic test labels exist: {test}"
    );
    let text = std::fs::read_to_string(&sub).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id,label");
    let test_dir = std::fs::read_dir(env.path("data"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("classification/test");
    let n_test = std::fs::read_dir(&test_dir).unwrap().count();
    assert_eq!(lines.len() - 1, n_test, "one row per test image");
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "stable (sorted) order");

    let vsub = env.path("verify.csv");
    let vd = env.json(&["eval", &id, "--split", "verify-dev", "--format", "json"]);
    for k in [
        "accuracy",
        "threshold",
        "accuracy_known",
        "impostor_rejection",
    ] {
        assert!(vd.get(k).is_some(), "{k} in {vd}");
    }
    let vt = env.json(&[
        "eval",
        &id,
        "--split",
        "verify-test",
        "--submission",
        s(&vsub),
        "--format",
        "json",
    ]);
    assert!(vt["accuracy"].as_f64().is_some());
    let text = std::fs::read_to_string(&vsub).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,label"));
    for l in lines {
        let label = l.split(',').nth(1).unwrap();
        assert!(label == "n000000" || label.starts_with('n'), "{l}");
    }

    // The same evaluation from the checkpoint file.
    let ck = common::last_checkpoint(&show);
    let from_file = env.json(&["eval", s(&ck), "--split", "dev", "--format", "json"]);
    assert!(from_file["accuracy"].as_f64().is_some());

    // match: each image gets a gallery identity and a score.
    let root = test_dir.parent().unwrap().parent().unwrap().to_path_buf();
    let gallery = root.join("verification/known");
    let unknown = sorted_files(&root.join("verification/unknown_dev"));
    let m = env.json(&[
        "match",
        &id,
        "--gallery",
        s(&gallery),
        s(&unknown[0]),
        s(&unknown[1]),
        "--format",
        "json",
    ]);
    let m = m.as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert!(m[0]["identity"].as_str().unwrap().starts_with('n'));
    assert!(m[0]["score"].as_f64().unwrap().is_finite());
    // With threshold = "tune", match decides with the threshold tuned on unknown_dev: against
    // the run's own gallery, its decisions are verify-dev's submission.
    let dev_sub = env.path("verify-dev.csv");
    env.json(&[
        "eval",
        &id,
        "--split",
        "verify-dev",
        "--submission",
        s(&dev_sub),
        "--format",
        "json",
    ]);
    let submitted: std::collections::HashMap<String, String> = std::fs::read_to_string(&dev_sub)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (i, label) = l.split_once(',').unwrap();
            (i.to_string(), label.to_string())
        })
        .collect();
    let mut args = vec!["match", &id, "--gallery", s(&gallery), "--format", "json"];
    args.extend(unknown.iter().map(|p| s(p)));
    let all = env.json(&args);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), unknown.len());
    for r in all {
        let path = std::path::Path::new(r["image"].as_str().unwrap());
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let want = submitted.get(&stem).or_else(|| submitted.get(&name));
        assert_eq!(r["decision"].as_str(), want.map(String::as_str), "{r}");
    }
    // a folder stands for its images, and the table has a header
    let unknown_dir = root.join("verification/unknown_dev");
    let by_folder = env.json(&[
        "match",
        &id,
        "--gallery",
        s(&gallery),
        s(&unknown_dir),
        "--format",
        "json",
    ]);
    assert_eq!(&by_folder, &serde_json::Value::Array(all.clone()));
    let table = env.run(&["match", &id, "--gallery", s(&gallery), s(&unknown_dir)]);
    let text = String::from_utf8_lossy(&table.stdout);
    let header = text.lines().next().unwrap();
    assert!(
        header.contains("image") && header.contains("decision"),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        unknown.len() + 2,
        "header, rule, a row each"
    );

    // A gallery folder named like "no match" is refused before anything is embedded.
    let bad_gallery = env.path("bad_gallery/n000000");
    std::fs::create_dir_all(&bad_gallery).unwrap();
    std::fs::copy(&unknown[0], bad_gallery.join("a.jpg")).unwrap();
    let out = env.run(&[
        "match",
        &id,
        "--gallery",
        s(&env.path("bad_gallery")),
        s(&unknown[0]),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no match"));

    // Pairs data: ROC AUC, EER and TAR at FAR from a pairs list.
    let known_ids = sorted_files(&gallery);
    let mut pairs = String::from("img1 img2 same\n");
    for (i, d) in known_ids.iter().enumerate() {
        let a = sorted_files(d);
        let other = sorted_files(&known_ids[(i + 1) % known_ids.len()]);
        pairs.push_str(&format!("{} {} 1\n", a[0].display(), a[1].display()));
        pairs.push_str(&format!("{} {} 0\n", a[0].display(), other[0].display()));
    }
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
    for k in ["roc_auc", "eer", "tar_at_far_1e2", "tar_at_far_1e3"] {
        let v = p[k].as_f64().unwrap_or_else(|| panic!("{k} in {p}"));
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }

    // Export the weights (timm names) and start another run from them with init_from.
    let weights = env.path("weights.safetensors");
    assert!(env
        .run(&["export", &id, "--out", s(&weights)])
        .status
        .success());
    let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    assert!(tensors.contains_key("stem.0.weight") && tensors.contains_key("head.fc.weight"));
    assert!(!tensors
        .keys()
        .any(|k| k.starts_with("model.") || k.starts_with("optim.")));
    let r2 = env.recipe("r2.toml", "");
    let warm = env.json(&[
        "run",
        s(&r2),
        "--set",
        &format!("model.init_from=\"{}\"", weights.display()),
        "--set",
        "train.epochs=1",
        "--format",
        "json",
    ]);
    assert_eq!(warm["status"], "done");

    // Bad references are invalid input.
    let out = env.run(&["eval", "no-such-run", "--split", "dev"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The folders a split reads must be there (training does without them); an eval whose
/// images were all unreadable scores nothing and says so with null metrics.
#[test]
fn eval_needs_its_split_and_reports_null_when_every_image_was_unreadable() {
    let env = Env::new();
    let data = env.path("faces");
    synth_folder(&env, &data, 32);
    let r = folder_recipe(&env, "r.toml", &data, "on_bad_image = \"skip\"", "");
    let run = env.json(&["run", s(&r), "--set", "train.epochs=1", "--format", "json"]);
    let id = run["id"].to_string();

    // every test image unreadable: nothing scored, so no accuracy (not 0)
    let test_dir = data.join("classification/test");
    let test_images = sorted_files(&test_dir);
    for p in &test_images {
        std::fs::write(p, b"this is not a JPEG").unwrap();
    }
    let rep = env.json(&["eval", &id, "--split", "test", "--format", "json"]);
    assert!(rep["accuracy"].is_null(), "{rep}");
    assert_eq!(rep["images"], 0, "{rep}");
    assert_eq!(
        rep["skipped"].as_array().map(Vec::len),
        Some(test_images.len())
    );
    let pairs = env.path("pairs.txt");
    std::fs::write(
        &pairs,
        format!(
            "{} {} 1\n{} {} 0\n",
            test_images[0].display(),
            test_images[1].display(),
            test_images[0].display(),
            test_images[2].display()
        ),
    )
    .unwrap();
    let rep = env.json(&[
        "eval",
        &id,
        "--split",
        "pairs",
        "--pairs",
        s(&pairs),
        "--format",
        "json",
    ]);
    assert!(rep["roc_auc"].is_null() && rep["eer"].is_null(), "{rep}");
    assert_eq!(rep["pairs"], 0, "{rep}");

    // a missing folder is named, and no submission is written
    std::fs::remove_dir_all(&test_dir).unwrap();
    let sub = env.path("sub.csv");
    for extra in [&[][..], &["--submission", s(&sub)][..]] {
        let mut args = vec!["eval", id.as_str(), "--split", "test"];
        args.extend(extra);
        assert_invalid(
            &env.run(&args),
            &["--split test", "faces/classification/test"],
        );
    }
    assert!(!sub.exists());
    std::fs::remove_dir_all(data.join("verification/unknown_test")).unwrap();
    let out = env.run(&["eval", &id, "--split", "verify-test"]);
    assert_invalid(&out, &["faces/verification/unknown_test"]);
    std::fs::rename(data.join("verification"), env.path("verification.away")).unwrap();
    for split in ["verify-dev", "verify-test"] {
        let out = env.run(&["eval", &id, "--split", split]);
        assert_invalid(&out, &["faces/verification/known"]);
    }
    let out = env.run(&["data", "baseline", s(&r)]);
    assert_invalid(&out, &["faces/verification/known"]);
    // training does without verification data
    let run = env.json(&["run", s(&r), "--set", "train.epochs=1", "--format", "json"]);
    assert_eq!(run["status"], "done", "{run}");
    assert!(run["metrics"].get("verify_acc").is_none(), "{run}");
}

/// `runner export` of an ArcFace run: the file holds the model and the class weights
/// (`margin_head.weight`), and the export says which key timm / torchvision lack and that the
/// classifier was not trained; `model.init_from` takes the file back.
#[test]
fn export_of_a_margin_loss_run_keeps_the_class_weights_and_says_so() {
    let env = Env::new();
    let r = env.recipe(
        "r.toml",
        "[loss]\nkind = \"arcface\"\n[verification]\nenabled = false\n",
    );
    let run = env.json(&["run", s(&r), "--set", "train.epochs=1", "--format", "json"]);
    assert_eq!(run["status"], "done");
    let id = run["id"].to_string();
    let weights = env.path("arcface.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.db()), "export", &id, "--out", s(&weights)])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: export: loss.kind = \"arcface\"")
            && err.contains("margin_head.weight"),
        "{err}"
    );
    let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    assert_eq!(tensors["margin_head.weight"].dims(), [6, 32]);
    assert!(tensors.contains_key("head.fc.weight"));
    let warm = env.json(&[
        "run",
        s(&r),
        "--set",
        &format!("model.init_from=\"{}\"", weights.display()),
        "--set",
        "train.epochs=1",
        "--format",
        "json",
    ]);
    assert_eq!(warm["status"], "done");
}

/// An ArcFace run classifies with its class weights (`s * cos`), not with the model's own
/// classifier, which it never trained: `eval --split dev` gives the accuracy training
/// recorded for that checkpoint, and verification loads it too.
#[test]
fn eval_loads_a_margin_loss_run_and_classifies_with_its_class_weights() {
    let env = Env::new();
    let r = env.recipe("r.toml", "[loss]\nkind = \"cosface\"\nscale = 16.0\n");
    let run = env.json(&["run", s(&r), "--set", "train.epochs=2", "--format", "json"]);
    assert_eq!(run["status"], "done");
    let id = run["id"].to_string();
    let show = env.json(&["show", &id, "--format", "json"]);
    let dev = env.json(&["eval", &id, "--split", "dev", "--format", "json"]);
    let epoch = dev["epoch"].as_u64().unwrap();
    let recorded = show["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["epoch"].as_u64() == Some(epoch))
        .unwrap()["val_acc"]
        .as_f64()
        .unwrap();
    assert_eq!(dev["accuracy"].as_f64().unwrap(), recorded);
    let v = env.json(&["eval", &id, "--split", "verify-dev", "--format", "json"]);
    assert!(v["accuracy"].as_f64().is_some(), "{v}");
}
