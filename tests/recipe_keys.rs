//! Run keys stay stable: options added to the recipe later, left at their defaults, must not
//! change the key of any existing recipe (a changed key would re-run finished work and split
//! a run's history). The keys below were computed before transforms had `interpolation` and
//! `max_size`.

use std::path::Path;

use runner::plan::plan_file;
use runner::recipe::Override;

fn fixed_fingerprint(_: &runner::recipe::Recipe) -> Result<String, String> {
    Ok("fixed-fingerprint".to_string())
}

fn keys(path: &Path, sets: &[&str]) -> Vec<String> {
    let ovs: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    plan_file(path, &ovs, &fixed_fingerprint)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|r| r.key)
        .collect()
}

#[test]
fn shipped_recipes_keep_their_keys() {
    let pinned: &[(&str, &[&str])] = &[
        ("recipes/quickstart.toml", &["67938628c5e0fae5"]),
        (
            "recipes/convnext_lr.toml",
            &[
                "9e88e78c62096518",
                "5f6609ae0fd71884",
                "6ae0397108addfcd",
                "e0f7efddcba633f8",
                "be77c39eecbc188d",
                "53e4c229ca443532",
            ],
        ),
        ("recipes/course_convnext.toml", &["06d37b92b3cad69a"]),
        (
            "recipes/mobilenet_zip.toml",
            &["0a70cfaf22c990ff", "5ad8ab0c88a5edf6", "3ab483cd500a4206"],
        ),
        (
            "recipes/resnet_random.toml",
            &[
                "aca13a3083897bc5",
                "ddb3408e4e8faac3",
                "aa032b3902b35209",
                "044dcde80c7a7fc1",
                "307277572d8a6142",
                "1e9a36a5b04a0002",
                "0687d5c4e6741905",
                "1b366f42a1476815",
            ],
        ),
        ("recipes/synth_default.toml", &["d1d77becb8bf8c65"]),
    ];
    for (path, want) in pinned {
        assert_eq!(keys(Path::new(path), &[]), *want, "{path}");
    }
}

const RECIPE: &str = r#"
[data]
root = "synth"

[model]
kind = "convnext"
preset = "atto"

[transforms]
train = [
  { kind = "random_resized_crop", size = 32, scale = [0.8, 1.0]TRAIN },
  { kind = "to_tensor" },
]
eval = [{ kind = "resize", size = 32EVAL }, { kind = "to_tensor" }]
"#;

fn key_with(train: &str, eval: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    std::fs::write(&path, RECIPE.replace("TRAIN", train).replace("EVAL", eval)).unwrap();
    let k = keys(&path, &[]);
    assert_eq!(k.len(), 1);
    k[0].clone()
}

#[test]
fn new_transform_options_at_their_defaults_keep_the_key() {
    let base = key_with("", "");
    // pinned: this recipe's key before `interpolation` / `max_size` existed
    assert_eq!(base, "3c100957d2a655eb");
    // writing the default explicitly is the same run
    assert_eq!(
        key_with(
            r#", interpolation = "bilinear""#,
            r#", interpolation = "bilinear""#
        ),
        base
    );
    // any other value is a different run
    let bicubic = key_with(r#", interpolation = "bicubic""#, "");
    let nearest_eval = key_with("", r#", interpolation = "nearest""#);
    let capped = key_with("", ", max_size = 40");
    for k in [&bicubic, &nearest_eval, &capped] {
        assert_ne!(k, &base);
    }
    assert_ne!(bicubic, nearest_eval);
}

/// `to_tensor` has no parameters: a stray key is an error naming it (it used to be ignored,
/// a unit variant escaping `deny_unknown_fields`), and the pinned key above, which has two
/// `to_tensor`s, holds (checked in `new_transform_options_at_their_defaults_keep_the_key`).
#[test]
fn to_tensor_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    std::fs::write(&path, RECIPE.replace("TRAIN", "").replace("EVAL", "")).unwrap();
    for set in ["transforms.train[1].bogus=3", "transforms.eval[1].p=0.5"] {
        let ov = Override::parse(set).unwrap();
        let err = plan_file(&path, &[ov], &fixed_fingerprint)
            .map(|_| ())
            .expect_err(set)
            .to_string();
        let key = set.split('=').next().unwrap();
        assert!(
            err.contains(key) && err.contains("unknown key"),
            "{set}: {err}"
        );
    }
    let same = Override::parse("transforms.train[1]={ kind = \"to_tensor\" }").unwrap();
    let planned = plan_file(&path, &[same], &fixed_fingerprint).unwrap();
    assert_eq!(planned[0].key, "3c100957d2a655eb");
}
