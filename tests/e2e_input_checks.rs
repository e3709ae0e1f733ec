//! Input that cannot work is refused before a run is recorded, through the real binary: exit
//! status 2, an error naming the key or file, and nothing written to the store. Inputs too
//! small for the model, a classifier smaller than the data, a corrupt or mismatched
//! checkpoint to resume from.

mod common;

use common::{assert_invalid, folder_recipe, runs_in_store, s, stderr, synth_folder, Env};

const NO_RESIZE: &str = "transforms.train=[{ kind = \"to_tensor\" }]";

#[test]
fn inputs_too_small_for_the_model_are_refused_before_a_run_exists() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    // data.image_size: what inspect and bench use
    for cmd in [&["inspect"][..], &["bench", "train", "--steps", "1"][..]] {
        let mut args = cmd.to_vec();
        args.extend([s(&r), "--set", "data.image_size=16"]);
        assert_invalid(&env.run(&args), &["data.image_size", ">= 32", "ConvNeXt"]);
    }
    // built-in images at their own size (no resizing transform)
    for cmd in ["run", "sweep"] {
        let out = env.run(&[
            cmd,
            s(&r),
            "--set",
            "data.synth.size=16",
            "--set",
            NO_RESIZE,
        ]);
        assert_invalid(&out, &["data.synth.size", "16 px", ">= 32"]);
    }
    // a transform that makes them too small
    let out = env.run(&["run", s(&r), "--set", "transforms.train[0].size=16"]);
    assert_invalid(&out, &["transforms.train[0].size", "16 px", ">= 32"]);
    // a folder's images, only known once the run starts: refused before the run row
    let small = env.path("small16");
    synth_folder(&env, &small, 16);
    let f = folder_recipe(&env, "f.toml", &small, "", "");
    let out = env.run(&["run", s(&f), "--set", NO_RESIZE]);
    assert_invalid(
        &out,
        &[
            "transforms.train",
            "small16/classification/train",
            "16x16",
            ">= 32",
        ],
    );
    let out = env.run(&["sweep", s(&f), "--set", NO_RESIZE]);
    assert_invalid(&out, &["small16/classification/train", "16x16"]);
    assert_eq!(runs_in_store(&env), 0, "invalid input writes no run");

    // ResNet and MobileNet run at 8 px: nothing refused there
    let text = std::fs::read_to_string(&f).unwrap().replace(
        "kind = \"convnext\"\ndepths = [1, 1, 1, 1]\ndims = [8, 16, 24, 32]",
        "kind = \"resnet\"\npreset = \"18\"",
    );
    assert!(text.contains("resnet"));
    let res = env.path("res.toml");
    std::fs::write(&res, text).unwrap();
    let out = env.run(&["inspect", s(&res), "--set", "data.image_size=8"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = env.json(&[
        "run",
        s(&res),
        "--set",
        NO_RESIZE,
        "--set",
        "train.epochs=1",
        "--format",
        "json",
    ]);
    assert_eq!(run["status"], "done", "{run}");
}

#[test]
fn num_classes_must_cover_the_data_identities() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let out = env.run(&["run", s(&r), "--set", "model.num_classes=2"]);
    assert_invalid(&out, &["model.num_classes = 2", "6 identities"]);
    assert_eq!(runs_in_store(&env), 0, "invalid input writes no run");
    // more outputs than identities train (the extra ones unused)
    let run = env.json(&[
        "run",
        s(&r),
        "--set",
        "model.num_classes=9",
        "--set",
        "train.epochs=1",
        "--format",
        "json",
    ]);
    assert_eq!(run["status"], "done", "{run}");
    let dev = env.json(&[
        "eval",
        &run["id"].to_string(),
        "--split",
        "dev",
        "--format",
        "json",
    ]);
    assert!(dev["accuracy"].as_f64().is_some(), "{dev}");
    // inspect's --classes is input too
    let out = env.run(&["inspect", s(&r), "--classes", "0"]);
    assert_invalid(&out, &["--classes", ">= 1"]);
}

#[test]
fn resume_refuses_a_bad_checkpoint_before_recording_a_run() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let run = env.json(&["run", s(&r), "--format", "json"]);
    assert_eq!(run["status"], "done");
    let id = run["id"].to_string();
    // a model the checkpoint does not fit
    let out = env.run(&[
        "resume",
        &id,
        "--epochs",
        "4",
        "--set",
        "model.dims=[8, 16, 24, 48]",
    ]);
    assert_invalid(&out, &["checkpoint", ".safetensors", "shape"]);
    assert_eq!(runs_in_store(&env), 1);
    // every checkpoint cut short
    let show = env.json(&["show", &id, "--format", "json"]);
    let paths: Vec<String> = show["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kept"].as_bool().unwrap())
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect();
    assert!(!paths.is_empty());
    for p in &paths {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
    }
    let out = env.run(&["resume", &id, "--epochs", "4"]);
    assert_invalid(&out, &["truncated or corrupt"]);
    assert!(
        paths.iter().any(|p| stderr(&out).contains(p.as_str())),
        "names the file: {}",
        stderr(&out)
    );
    assert_eq!(runs_in_store(&env), 1, "no failed run left behind");
}

/// The checks read the data, so they are left out for a run that is already done: `run` and
/// `sweep` of a finished recipe print it without regenerating a deleted built-in set.
#[test]
fn a_done_run_is_not_checked_again() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    let run = env.json(&["run", s(&r), "--set", "train.epochs=1", "--format", "json"]);
    assert_eq!(run["status"], "done");
    std::fs::remove_dir_all(env.path("data")).unwrap();
    for cmd in ["run", "sweep"] {
        let out = env.run(&[cmd, s(&r), "--set", "train.epochs=1"]);
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        assert!(!env.path("data").exists(), "{cmd} regenerated the data");
    }
    assert_eq!(runs_in_store(&env), 1);
}

#[test]
#[cfg(not(feature = "cuda"))]
fn a_cuda_device_on_a_cpu_build_is_refused_before_a_run_exists() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    for args in [
        vec!["run", s(&r), "--device", "cuda"],
        vec!["sweep", s(&r), "--device", "cuda:1"],
    ] {
        let out = env.run(&args);
        assert_invalid(&out, &["train.device", "without CUDA"]);
        assert_eq!(
            runs_in_store(&env),
            0,
            "{args:?}: invalid input writes no run"
        );
    }
}

/// `train.device = "auto"`: the CPU where the build or the machine has no GPU (here the build
/// has none: `cargo test` builds without CUDA); with bf16 / f16, which need a GPU, an error
/// that says so before a run is recorded.
#[test]
#[cfg(not(feature = "cuda"))]
fn device_auto_trains_on_the_cpu_here_and_refuses_low_precision_before_a_run_exists() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    for args in [
        vec![
            "run",
            s(&r),
            "--device",
            "auto",
            "--set",
            "train.precision=\"bf16\"",
        ],
        vec![
            "sweep",
            s(&r),
            "--device",
            "auto",
            "--set",
            "train.precision=\"f16\"",
        ],
    ] {
        let out = env.run(&args);
        assert_invalid(
            &out,
            &["train.device = \"auto\"", "no GPU", "train.precision"],
        );
        assert_eq!(
            runs_in_store(&env),
            0,
            "{args:?}: invalid input writes no run"
        );
    }
    let run = env.json(&[
        "run",
        s(&r),
        "--device",
        "auto",
        "--set",
        "train.epochs=1",
        "--format",
        "json",
    ]);
    assert_eq!(run["status"], "done");
    assert_eq!(runs_in_store(&env), 1);
}

#[test]
fn images_of_mixed_sizes_that_nothing_resizes_are_named_both() {
    let env = Env::new();
    let root = env.path("set");
    synth_folder(&env, &root, 32);
    // one dev image wider than the others; the tiny recipe's eval transforms do not resize
    let dev = common::sorted_files(&common::sorted_files(&root.join("classification/dev"))[0]);
    let odd = &dev[0];
    image::RgbImage::from_pixel(48, 32, image::Rgb([90, 90, 90]))
        .save(odd)
        .unwrap();
    let r = folder_recipe(&env, "r.toml", &root, "", "");
    let out = env.run(&["run", s(&r), "--set", "train.epochs=1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let name = odd.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        err.contains(&name) && err.contains("differ in size"),
        "{err}"
    );
    assert!(!err.contains("decode"), "nothing failed to decode: {err}");
}

#[test]
fn a_data_folder_out_of_the_course_layout_is_refused_by_validate_and_run_with_a_caret() {
    let env = Env::new();
    let root = env.path("faces");
    std::fs::create_dir_all(root.join("classification")).unwrap();
    let r = common::folder_recipe(&env, "layout.toml", std::path::Path::new("faces"), "", "");
    for args in [vec!["validate", s(&r)], vec!["run", s(&r)]] {
        let out = env.run(&args);
        assert_eq!(common::code(&out), Some(2), "{args:?}");
        let err = common::stderr(&out);
        assert!(err.contains("`data.root`"), "{args:?}: {err}");
        assert!(err.contains("^^^^"), "a caret under the value: {err}");
        assert!(err.contains("docs/data.md"), "{err}");
        assert!(err.contains("resolved from the working directory"), "{err}");
        assert!(
            !env.db().exists() || common::runs_in_store(&env) == 0,
            "no run row"
        );
    }
}

#[test]
fn an_empty_identity_folder_is_refused_by_validate() {
    let env = Env::new();
    let root = env.path("faces");
    common::synth_folder(&env, &root, 32);
    std::fs::create_dir_all(root.join("classification/train/n999999")).unwrap();
    let r = common::folder_recipe(&env, "empty.toml", &root, "", "");
    let out = env.run(&["validate", s(&r)]);
    assert_eq!(common::code(&out), Some(2));
    let err = common::stderr(&out);
    assert!(
        err.contains("n999999") && err.contains("without images"),
        "{err}"
    );
}

#[test]
fn every_unreadable_image_is_listed_before_a_run_exists() {
    let env = Env::new();
    let root = env.path("faces");
    common::synth_folder(&env, &root, 32);
    // two corrupt files in two splits: both named, with the hint
    let bad: Vec<std::path::PathBuf> = ["classification/train", "verification/known"]
        .iter()
        .map(|split| {
            let id = common::sorted_files(&root.join(split))[0].clone();
            let victim = common::sorted_files(&id)[0].clone();
            std::fs::write(&victim, b"not a jpeg").unwrap();
            victim
        })
        .collect();
    let r = common::folder_recipe(&env, "bad.toml", &root, "", "");
    for args in [vec!["validate", s(&r)], vec!["run", s(&r)]] {
        let out = env.run(&args);
        assert_eq!(common::code(&out), Some(2), "{args:?}");
        let err = common::stderr(&out);
        for b in &bad {
            assert!(
                err.contains(s(b)),
                "{args:?}: {} not listed: {err}",
                b.display()
            );
        }
        assert!(err.contains("on_bad_image = \"skip\""), "{err}");
    }
    assert_eq!(common::runs_in_store(&env), 0, "no run was recorded");
    // with "skip", they are no reason to stop
    let skip = common::folder_recipe(&env, "skip.toml", &root, "on_bad_image = \"skip\"", "");
    let out = env.run(&["validate", s(&skip)]);
    assert_eq!(common::code(&out), Some(0), "{}", common::stderr(&out));
}

#[test]
fn validate_does_not_generate_the_built_in_set() {
    let env = Env::new();
    let r = env.recipe("synth.toml", "");
    let out = env.run(&["validate", s(&r)]);
    assert_eq!(common::code(&out), Some(0), "{}", common::stderr(&out));
    assert!(!env.path("data").exists(), "validate wrote the data set");
}

#[test]
fn an_image_size_the_eval_transforms_do_not_produce_is_refused_naming_both() {
    let env = Env::new();
    let r = env.recipe("r.toml", "");
    // the built-in images (32 px) reach the model unresized: data.image_size must be 32
    for cmd in ["validate", "inspect", "run", "sweep"] {
        let out = env.run(&[cmd, s(&r), "--set", "data.image_size=48"]);
        assert_invalid(
            &out,
            &["data.image_size", "is 48 px", "32 px", "data.synth.size"],
        );
    }
    // unwritten, the size is the eval transforms' own (36 px here), and the run keys do not
    // change for it
    let text = std::fs::read_to_string(&r)
        .unwrap()
        .replace("image_size = 32\n", "")
        .replace(
            "eval = [\n",
            "eval = [\n  { kind = \"resize\", size = 40 },\n  { kind = \"center_crop\", size = 36 },\n",
        );
    let d = env.path("default_size.toml");
    std::fs::write(&d, text).unwrap();
    let out = env.run(&["validate", s(&d)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("image_size = 36"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // written, it must agree: the error names both, and the transform
    let out = env.run(&["validate", s(&d), "--set", "data.image_size=64"]);
    assert_invalid(
        &out,
        &[
            "data.image_size",
            "is 64 px",
            "transforms.eval[1] makes eval images 36 px",
            "set data.image_size = 36",
        ],
    );
    assert_eq!(runs_in_store(&env), 0, "invalid input writes no run");
    // bench measures at the size it is given: exempt, but still held to the model's minimum
    let b = env.json(&[
        "bench",
        "train",
        s(&r),
        "--steps",
        "1",
        "--set",
        "data.image_size=40",
        "--format",
        "json",
    ]);
    assert_eq!(b["image_size"], 40, "{b}");
    let out = env.run(&["bench", "train", s(&r), "--set", "data.image_size=abc"]);
    assert_invalid(&out, &["data.image_size", "whole number"]);
}
