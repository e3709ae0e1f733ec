//! `stats` counts a generated set and finds leakage between splits; `preview` writes a grid
//! of augmented training images.

mod common;

use runner::data::{generate, preview, stats};
use runner::recipe::{Difficulty, Recipe, SynthConfig};

#[test]
fn stats_of_a_synthetic_set() {
    let t = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        identities: 4,
        images_per_identity: 5,
        verify_identities: 2,
        impostors: 1,
        size: 32,
        seed: 1,
        difficulty: Difficulty::Medium,
    };
    let s = generate(&cfg, &t.path().join("d")).unwrap();
    let st = stats(&t.path().join("d")).unwrap();
    assert_eq!(st.identities, 4);
    assert_eq!(st.train_images, s.train_images);
    assert_eq!(st.dev_images, s.dev_images);
    assert_eq!(st.test_images, s.test_images);
    assert!(st.test_labelled);
    assert_eq!(st.known_identities, 2);
    assert_eq!(st.unknown_dev_impostors, 1);
    assert_eq!(st.image_sizes.len(), 1);
    assert_eq!(
        (st.image_sizes[0].width, st.image_sizes[0].height),
        (32, 32)
    );
    assert_eq!(st.class_balance.min, st.class_balance.max);
    let json = serde_json::to_value(&st).unwrap();
    assert!(json.get("class_balance").is_some());
    // A PNG named .jpg is counted by its content, as training reads it, not as unreadable.
    let first = std::fs::read_dir(t.path().join("d/classification/test"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    image::RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]))
        .save_with_format(&first, image::ImageFormat::Png)
        .unwrap();
    let st = stats(&t.path().join("d")).unwrap();
    assert!(st.unreadable.is_empty(), "{:?}", st.unreadable);
}

#[test]
fn preview_writes_a_grid() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().to_string_lossy().replace('\\', "/");
    let toml_text = format!(
        r#"
[data]
root = "synth"
cache_dir = "{cache}"
[data.synth]
identities = 3
images_per_identity = 3
verify_identities = 0
impostors = 0
size = 32
[transforms]
train = [
  {{ kind = "random_resized_crop", size = 24, scale = [0.5, 1.0] }},
  {{ kind = "horizontal_flip" }},
  {{ kind = "to_tensor" }},
  {{ kind = "normalize", mean = [0.5, 0.5, 0.5], std = [0.2, 0.2, 0.2] }},
]
[model]
kind = "resnet"
"#
    );
    let recipe: Recipe = toml::from_str(&toml_text).unwrap();
    let out = t.path().join("grid.png");
    let s = preview(&recipe, &out, 3).unwrap();
    assert_eq!(s.images, 3);
    let img = image::open(&out).unwrap();
    assert_eq!(img.width() as usize, s.columns * (24 + 2) + 2);
}

#[test]
fn bench_data_reports_every_case() {
    let t = tempfile::tempdir().unwrap();
    let r = runner::data::bench_data(t.path(), &[32], &[1, 2], 20).unwrap();
    assert_eq!(r.cases.len(), 2);
    for c in &r.cases {
        assert_eq!(c.images, 20);
        assert!(c.images_per_sec > 0.0);
    }
}

/// The figures for the README: `cargo test --release --test data_stats -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_data_figures() {
    let dir = std::env::var("RUNNER_BENCH_DIR").unwrap_or_else(|_| "target/bench-data".into());
    let r =
        runner::data::bench_data(std::path::Path::new(&dir), &[64, 224], &[1, 2], 1000).unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
}

#[test]
fn leakage_between_splits_is_reported_by_stats_and_warned_before_training() {
    let env = common::Env::new();
    let root = env.path("faces");
    common::synth_folder(&env, &root, 32);
    // a training image copied into the gallery, and a gallery identity named like a
    // training identity
    let train_id = common::sorted_files(&root.join("classification/train"))[0].clone();
    let image = common::sorted_files(&train_id)[0].clone();
    let known_id = common::sorted_files(&root.join("verification/known"))[0].clone();
    std::fs::copy(&image, known_id.join("copied.jpg")).unwrap();
    let shared_name = train_id.file_name().unwrap();
    let renamed = root.join("verification/known").join(shared_name);
    let second_known = common::sorted_files(&root.join("verification/known"))[1].clone();
    std::fs::rename(&second_known, &renamed).unwrap();
    // the labels of the renamed identity's unknowns follow it
    let old = second_known
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    for csv in ["verification_dev.csv", "verification_test.csv"] {
        let csv = root.join("verification").join(csv);
        if let Ok(text) = std::fs::read_to_string(&csv) {
            std::fs::write(&csv, text.replace(&old, &shared_name.to_string_lossy())).unwrap();
        }
    }

    let cache = env.path("cache");
    let stats = |format: &str| {
        let out = env
            .cmd()
            .args(["data", "stats", common::s(&root), "--format", format])
            .env("XDG_CACHE_HOME", &cache)
            .output()
            .unwrap();
        assert_eq!(common::code(&out), Some(0), "{}", common::stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v: serde_json::Value = serde_json::from_str(&stats("json")).unwrap();
    let leak = &v["leakage"];
    let shared = leak["shared_images"].as_array().unwrap();
    assert_eq!(shared.len(), 1, "{leak}");
    assert_eq!(shared[0]["splits"], serde_json::json!(["train", "known"]));
    assert_eq!(
        leak["shared_identities"],
        serde_json::json!([shared_name.to_string_lossy()])
    );
    assert_eq!(leak["cached"], false);
    // the content hashes are cached by the data's fingerprint: the second check reads none
    let fp = v["fingerprint"].as_str().unwrap();
    assert!(cache
        .join(format!("runner/content-hashes/{fp}.json"))
        .is_file());
    let again: serde_json::Value = serde_json::from_str(&stats("json")).unwrap();
    assert_eq!(again["leakage"]["cached"], true);
    assert_eq!(again["leakage"]["shared_images"], leak["shared_images"]);
    assert!(stats("table").contains("the same image is in train and known"));
    // and a run is warned before it trains
    let r = common::folder_recipe(&env, "leak.toml", &root, "", "");
    // (not --quiet: warnings are progress output)
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", common::s(&env.db()), "run", common::s(&r)])
        .args(["--set", "train.epochs=1"])
        .current_dir(env.dir.path())
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    assert_eq!(common::code(&out), Some(0), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("warning") && err.contains("the same image is in train and known"),
        "{err}"
    );
    assert!(err.contains("identities in both"), "{err}");
}
