//! Helpers shared by the end-to-end tests: tiny recipes on tiny synthetic data, and running
//! the real `runner` binary against a temporary store.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn db(&self) -> PathBuf {
        self.path("store.db")
    }

    /// Writes a tiny recipe (tiny ConvNeXt, 32 px synthetic faces generated into this env)
    /// with `extra` TOML appended, and returns its path.
    pub fn recipe(&self, name: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[data]
root = "synth"
image_size = 32
cache_dir = "{cache}"
num_workers = 2

[data.synth]
identities = 6
images_per_identity = 8
verify_identities = 4
impostors = 2
size = 32
seed = 3

[transforms]
train = [
  {{ kind = "random_resized_crop", size = 32, scale = [0.8, 1.0] }},
  {{ kind = "horizontal_flip" }},
  {{ kind = "to_tensor" }},
  {{ kind = "normalize", mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }},
]
eval = [
  {{ kind = "to_tensor" }},
  {{ kind = "normalize", mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }},
]

[model]
kind = "convnext"
depths = [1, 1, 1, 1]
dims = [8, 16, 24, 32]

[optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9

[train]
epochs = 3
batch_size = 8
seed = 1

[checkpoint]
dir = "{ckpt}"
keep_best = 1
keep_last = 2
{extra}
"#,
            cache = self.path("data").display(),
            ckpt = self.path("runs").display(),
        );
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
        c.arg("--db")
            .arg(self.db())
            .arg("--quiet")
            .current_dir(self.dir.path());
        c
    }

    /// Runs `runner --db <env db> --quiet ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and parses stdout as JSON, asserting success.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "runner {args:?} failed ({:?}):\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "runner {args:?}: not JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// `tests/fixtures/reference/transform_input.png` (97x83 RGB), the input of the torchvision and
/// Pillow fixtures.
pub fn reference_input() -> image::RgbImage {
    let p = PathBuf::from("tests/fixtures/reference/transform_input.png");
    assert!(
        p.is_file(),
        "{} missing: the reference fixtures live in tests/fixtures/reference",
        p.display()
    );
    image::open(p).expect("reference png").to_rgb8()
}

/// The entries of a folder, sorted by path.
pub fn sorted_files(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Model tensors of a checkpoint (names without the `model.` prefix), as f32 vectors.
pub fn checkpoint_weights(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let ck = runner::train::checkpoint::read_checkpoint(path).unwrap();
    ck.model
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect()
}

/// The per-epoch metrics of a run without its timings.
pub fn epoch_metrics(show: &serde_json::Value) -> Vec<serde_json::Value> {
    show["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let o = e.as_object_mut().unwrap();
            o.remove("images_per_sec");
            o.remove("seconds");
            o.remove("phase_seconds");
            e
        })
        .collect()
}

/// Every epoch of `show` says where its time went: the six phases, each finite and not
/// negative; training, loader wait, dev and verification add up to no more than the epoch's
/// `seconds` (they do not overlap; checkpoints and records come after `seconds` is taken).
pub fn assert_phase_seconds(show: &serde_json::Value) {
    for e in show["epochs"].as_array().unwrap() {
        let p = e["phase_seconds"]
            .as_object()
            .unwrap_or_else(|| panic!("no phases: {e}"));
        let names = [
            "train",
            "loader_wait",
            "eval",
            "verify",
            "checkpoint",
            "store",
        ];
        assert_eq!(p.len(), names.len(), "{e}");
        let mut total = 0.0;
        for n in names {
            let v = p[n].as_f64().unwrap_or_else(|| panic!("{n} in {e}"));
            assert!(v.is_finite() && v >= 0.0, "{n} in {e}");
            if !matches!(n, "checkpoint" | "store") {
                total += v;
            }
        }
        assert!(p["train"].as_f64().unwrap() > 0.0, "{e}");
        let seconds = e["seconds"].as_f64().unwrap();
        assert!(
            total <= seconds + 1e-3,
            "phases add to {total} > {seconds}: {e}"
        );
    }
}

/// The path of a run's newest kept end-of-epoch checkpoint.
pub fn last_checkpoint(show: &serde_json::Value) -> PathBuf {
    let cks = show["checkpoints"].as_array().unwrap();
    let c = cks
        .iter()
        .filter(|c| c["kept"].as_bool().unwrap() && c["metric_name"] != "interrupt")
        .max_by_key(|c| c["epoch"].as_u64().unwrap())
        .expect("a kept checkpoint");
    PathBuf::from(c["path"].as_str().unwrap())
}

/// A model config with the schema's defaults for `kind` / `preset` (layer norm blocks, layer
/// scale 1e-6, no drop path or dropout, width 1).
pub fn model_cfg(
    kind: runner::recipe::ModelKind,
    preset: Option<&str>,
) -> runner::recipe::ModelConfig {
    runner::recipe::ModelConfig {
        kind,
        preset: preset.map(str::to_string),
        depths: None,
        dims: None,
        block_norm: runner::recipe::BlockNorm::Layer,
        layer_scale: runner::recipe::LayerScale::Init(1e-6),
        drop_path: 0.0,
        dropout: 0.0,
        small_stem: false,
        width_mult: 1.0,
        embedding_dim: None,
        embedding_norm: false,
        num_classes: None,
        init_from: None,
    }
}

/// Cosine similarity of two equally shaped tensors (on any device), in f64; 1 for two zeros.
pub fn cosine(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    let cpu = candle_core::Device::Cpu;
    let flat = |t: &candle_core::Tensor| -> Vec<f32> {
        t.to_device(&cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b) = (flat(a), flat(b));
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(&b) {
        ab += *x as f64 * *y as f64;
        aa += (*x as f64).powi(2);
        bb += (*y as f64).powi(2);
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

pub fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts exit status 2 with every one of `needles` in the error, and no panic.
pub fn assert_invalid(out: &std::process::Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(code(out), Some(2), "expected exit 2, stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in:\n{err}");
    }
}

/// Runs in the store (none when it was never created).
pub fn runs_in_store(env: &Env) -> usize {
    if !env.db().exists() {
        return 0;
    }
    env.json(&["runs", "--format", "json"])
        .as_array()
        .unwrap()
        .len()
}

/// Writes the course layout with synthetic faces of `size` px into `dir`.
pub fn synth_folder(env: &Env, dir: &Path, size: u32) {
    let out = env.run(&[
        "data",
        "synth",
        "--out",
        s(dir),
        "--identities",
        "6",
        "--images-per-identity",
        "8",
        "--verify-identities",
        "4",
        "--impostors",
        "2",
        "--size",
        &size.to_string(),
        "--seed",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The tiny recipe reading the folder `root` instead of the built-in data, with `data_extra`
/// added to its `[data]` table.
pub fn folder_recipe(env: &Env, name: &str, root: &Path, data_extra: &str, extra: &str) -> PathBuf {
    let r = env.recipe(name, extra);
    let text = std::fs::read_to_string(&r).unwrap().replacen(
        "root = \"synth\"",
        &format!("root = \"{}\"\n{data_extra}", root.display()),
        1,
    );
    std::fs::write(&r, text).unwrap();
    r
}

/// The JSON a `runner report` page embeds (`<script id="report-data">`).
pub fn report_data(html: &str) -> serde_json::Value {
    let start = r#"<script id="report-data" type="application/json">"#;
    let from = html.find(start).expect("report data") + start.len();
    let len = html[from..].find("</script>").expect("end of report data");
    serde_json::from_str(&html[from..from + len].replace("<\\/", "</")).unwrap()
}

/// Small configurations of every model family, for the precision tests: ConvNeXt with
/// LayerNorm and with BatchNorm, ResNet basic and bottleneck, MobileNetV2 and V3.
pub fn model_families() -> Vec<(&'static str, runner::recipe::ModelConfig)> {
    use runner::recipe::{BlockNorm, ModelKind};
    let mut c = model_cfg(ModelKind::Convnext, None);
    c.depths = Some(vec![1, 2]);
    c.dims = Some(vec![16, 32]);
    c.embedding_dim = Some(24);
    let mut cb = c.clone();
    cb.block_norm = BlockNorm::Batch;
    let mut r = model_cfg(ModelKind::Resnet, Some("18"));
    r.depths = Some(vec![1, 1]);
    r.dims = Some(vec![16, 32]);
    let mut rb = model_cfg(ModelKind::Resnet, Some("50"));
    rb.depths = Some(vec![1, 1]);
    rb.dims = Some(vec![8, 16]);
    let mut m2 = model_cfg(ModelKind::MobilenetV2, None);
    m2.width_mult = 0.5;
    let mut m3 = model_cfg(ModelKind::MobilenetV3, Some("small"));
    m3.width_mult = 0.5;
    vec![
        ("convnext layer", c),
        ("convnext batch", cb),
        ("resnet basic", r),
        ("resnet bottleneck", rb),
        ("mobilenet_v2", m2),
        ("mobilenet_v3 small", m3),
    ]
}

/// `Some("python3")` where a `python3` runs here (the bench scripts' summaries need one, with
/// the standard library only); `None` with a one-line reason naming `what`, or a failure where
/// CI sets `RUNNER_REQUIRE_PYTHON`.
pub fn python3(what: &str) -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("RUNNER_REQUIRE_PYTHON").is_none(),
            "RUNNER_REQUIRE_PYTHON is set but python3 was not found: {what} cannot run"
        );
        eprintln!("skipped: python3 not found ({what} needs it)");
    }
    ok.then_some("python3")
}
