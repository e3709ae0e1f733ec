//! The benchmark figures of README.md, docs/benchmarks.md, docs/pipelines.md,
//! docs/results.md and docs/sweeps.md are the ones
//! `bench/summarize.py --docs` writes from the committed raw JSON lines of `bench/results/`:
//! every `<!-- bench:NAME -->` block is regenerated and compared (`--docs --check`), and each
//! file has at least one such block, so the check cannot pass on docs without any. Needs
//! `python3` (standard library only): without it the test skips with a one-line reason, or
//! fails where `RUNNER_REQUIRE_PYTHON` is set.

mod common;

use std::path::Path;
use std::process::Command;

const DOCS: [&str; 5] = [
    "README.md",
    "docs/benchmarks.md",
    "docs/pipelines.md",
    "docs/results.md",
    "docs/sweeps.md",
];

#[test]
fn benchmark_figures_in_the_docs_are_generated_from_committed_raw_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in DOCS {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let blocks = text
            .lines()
            .filter(|l| l.trim().starts_with("<!-- bench:"))
            .count();
        assert!(
            blocks >= 1,
            "{doc} has no `<!-- bench:NAME -->` block: its benchmark figures would go unchecked"
        );
    }
    let Some(python) = common::python3("bench/summarize.py --docs --check") else {
        return;
    };
    let out = Command::new(python)
        .args(["bench/summarize.py", "--docs", "--check"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the benchmark figures in the docs differ from what bench/summarize.py makes of the \
         committed raw files (run `bench/summarize.py --docs` to rewrite them, or fix the \
         script):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
