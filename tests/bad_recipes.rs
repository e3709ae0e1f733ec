//! Every broken recipe in tests/bad_recipes/ exits with status 2, names the file and the key
//! (with line:column where TOML has one), never panics, and leaves the store unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

fn expected_key(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let first = text.lines().next()?;
    first
        .strip_prefix("# expect-key:")
        .map(|k| k.trim().to_string())
}

fn bad_recipes() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("tests/bad_recipes")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "fragments"))
        .collect();
    out.sort();
    out
}

#[test]
fn at_least_fifteen_bad_recipes_each_fail_cleanly() {
    let recipes = bad_recipes();
    assert!(recipes.len() >= 15, "only {} bad recipes", recipes.len());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    // A store with content, to prove invalid input does not touch it.
    runner::store::Store::open(&db).unwrap();
    let before = std::fs::read(&db).unwrap();
    for recipe in recipes {
        for cmd in ["validate", "plan"] {
            let out = Command::new(env!("CARGO_BIN_EXE_runner"))
                .args(["--db", db.to_str().unwrap(), cmd, recipe.to_str().unwrap()])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let name = recipe.display().to_string();
            assert_eq!(out.status.code(), Some(2), "{name} {cmd}: {stderr}");
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
            assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
            let file_name = recipe.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                stderr.contains(&file_name),
                "{name}: message must name the file: {stderr}"
            );
            if recipe.is_file() {
                if let Some(key) = expected_key(&recipe).filter(|k| !k.is_empty()) {
                    assert!(
                        stderr.contains(&format!("`{key}`")),
                        "{name}: message must name key {key}: {stderr}"
                    );
                    let has_line_col = stderr.split(':').collect::<Vec<_>>().windows(2).any(|w| {
                        w[0].trim().parse::<u32>().is_ok() && w[1].trim().parse::<u32>().is_ok()
                    });
                    assert!(
                        has_line_col,
                        "{name}: message must give line:column: {stderr}"
                    );
                }
            }
        }
    }
    let after = std::fs::read(&db).unwrap();
    assert_eq!(before, after, "the store must be unchanged");
}

#[test]
fn unknown_key_suggests_the_nearest_valid_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", "tests/bad_recipes/unknown_key.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown_key.toml:12:1"), "{stderr}");
    assert!(stderr.contains("did you mean `momentum`?"), "{stderr}");
}

#[test]
fn fragment_cycle_names_the_chain() {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", "tests/bad_recipes/fragment_cycle.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fragment cycle"), "{stderr}");
    assert!(
        stderr.contains("cycle_a.toml") && stderr.contains("cycle_b.toml"),
        "{stderr}"
    );
}

#[test]
fn malformed_set_argument_is_invalid_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["plan", "recipes/quickstart.toml", "--set", "no-equals-sign"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key=value"));
}

fn validate_stderr(recipe: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", recipe])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{recipe}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn torchvision_class_names_suggest_our_kind() {
    let stderr = validate_stderr("tests/bad_recipes/torchvision_transform_name.toml");
    assert!(
        stderr.contains("unknown kind `random_horizontal_flip`; did you mean `horizontal_flip`?"),
        "{stderr}"
    );
    // CamelCase class names and other torchvision names too; never accepted as aliases
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string("tests/bad_recipes/torchvision_transform_name.toml").unwrap();
    for (name, ours) in [
        ("RandomHorizontalFlip", "horizontal_flip"),
        ("ToTensor", "to_tensor"),
        ("RandomResizedCrop", "random_resized_crop"),
        ("random_sized_crop", "random_resized_crop"),
        ("ColorJitter", "color_jitter"),
        ("RandAugment", "rand_augment"),
    ] {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, text.replace("random_horizontal_flip", name)).unwrap();
        let stderr = validate_stderr(p.to_str().unwrap());
        assert!(
            stderr.contains(&format!("unknown kind `{name}`; did you mean `{ours}`?")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn new_transform_values_are_explained() {
    let stderr = validate_stderr("tests/bad_recipes/wrong_padding.toml");
    assert!(
        stderr.contains("[left/right, top/bottom] or [left, top, right, bottom]"),
        "{stderr}"
    );
    let stderr = validate_stderr("tests/bad_recipes/wrong_erasing_value.toml");
    assert!(stderr.contains("\"random\""), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mode.toml");
    let text = std::fs::read_to_string("tests/bad_recipes/wrong_padding.toml").unwrap();
    std::fs::write(
        &p,
        text.replace(
            "padding = [4, 4, 4]",
            "padding = 4, padding_mode = \"mirror\"",
        ),
    )
    .unwrap();
    let stderr = validate_stderr(p.to_str().unwrap());
    assert!(stderr.contains("unknown value `mirror`"), "{stderr}");
    assert!(stderr.contains("reflect"), "{stderr}");
}
