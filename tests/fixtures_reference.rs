//! The reference fixtures are the repository's own: every file in tests/fixtures/reference is
//! described in tests/fixtures/README.md (and every file it names exists), and, where a Python
//! with PyTorch, torchvision and timm is at hand, `make_reference.py --check` regenerates them
//! identically. Without PyTorch that check skips with a one-line reason.

use std::path::{Path, PathBuf};
use std::process::Command;

const REFERENCE: &str = "tests/fixtures/reference";
const README: &str = "tests/fixtures/README.md";

fn reference_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(REFERENCE)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "make_reference.py" && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn every_reference_file_is_described_and_every_described_file_exists() {
    let readme = std::fs::read_to_string(README).unwrap();
    let files = reference_files();
    assert!(files.len() >= 12, "reference fixtures missing: {files:?}");
    for f in &files {
        assert!(
            readme.contains(&format!("`{f}`")),
            "{REFERENCE}/{f} is not described in {README}"
        );
    }
    // Every `name.ext` the README's reference table names is a file in the folder.
    let section = readme
        .split("## `reference/`")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a reference/ section");
    for name in section.split('`').skip(1).step_by(2) {
        let is_file = [".json", ".safetensors", ".png"]
            .iter()
            .any(|ext| name.ends_with(ext))
            && !name.contains('/')
            && !name.contains(' ');
        if is_file {
            assert!(
                Path::new(REFERENCE).join(name).is_file(),
                "{README} names {name}, which is not in {REFERENCE}"
            );
        }
    }
}

/// A Python with torch, torchvision and timm: `RUNNER_PYTHON`, else the repository's
/// `.venv-bench` (made by bench/pytorch-env.sh).
fn python_with_torch() -> Result<PathBuf, String> {
    let python = std::env::var_os("RUNNER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv-bench/bin/python"));
    let probe = Command::new(&python)
        .args(["-c", "import torch, torchvision, timm, PIL"])
        .output();
    match probe {
        Ok(o) if o.status.success() => Ok(python),
        Ok(_) => Err(format!(
            "{} lacks torch/torchvision/timm/Pillow",
            python.display()
        )),
        Err(_) => Err(format!(
            "no {} (run bench/pytorch-env.sh or set RUNNER_PYTHON)",
            python.display()
        )),
    }
}

#[test]
fn make_reference_regenerates_the_fixtures_identically() {
    let python = match python_with_torch() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: needs PyTorch: {why}");
            return;
        }
    };
    let out = Command::new(&python)
        .args([&format!("{REFERENCE}/make_reference.py"), "--check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "make_reference.py --check found differences:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 differences"), "{stdout}");
}
