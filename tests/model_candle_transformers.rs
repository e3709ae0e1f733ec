//! An independent check of runner's models and of `runner export`: a run trained by the real
//! binary is exported with `runner export RUN --out FILE`, FILE is loaded into
//! candle-transformers' own ConvNeXt (timm names) or ResNet (torchvision names), and its
//! eval-mode logits are compared with runner's model loaded from the same checkpoint, on the
//! same input. ConvNeXt atto (timm's conv_mlp layout: 4-D 1x1-conv MLP weights) and tiny
//! (Linear layout), LayerNorm blocks; ResNet-18 (basic blocks) and ResNet-50 (bottlenecks),
//! whose BatchNorm running statistics the training moved, so the eval path is what is checked.
//! docs/interop.md states the tolerance and what the export writes.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use candle_transformers::models::{convnext, resnet};
use common::{s, stderr, Env};
use runner::model::{load_init_from, ForwardCtx};

/// The tolerance on logits, f32 on both sides (convolutions and products sum in other orders):
/// `max |runner - candle-transformers| <= TOL * max(1, max |logit|)`. docs/interop.md gives the
/// differences measured, which are far below it.
const TOL: f32 = 1e-4;

/// Identities of the tiny synthetic data set of `common::Env::recipe`: the classifier's size.
const CLASSES: usize = 6;

/// The input both models see: two 64x64 images (ConvNeXt needs at least 32 px), seeded.
fn input() -> Tensor {
    runner::engine::init::TensorRng::new(2024)
        .randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu)
        .unwrap()
}

/// A run of the tiny recipe (32 px synthetic faces, 6 identities, batches of 8) with `model`
/// as its `[model]` table, trained for one epoch (three optimizer steps) by the real binary,
/// and exported by `runner export RUN --out FILE`.
struct Exported {
    env: Env,
    /// The run's best checkpoint, which the export is of.
    checkpoint: PathBuf,
    /// The file `runner export` wrote.
    file: PathBuf,
    /// Everything `runner export` printed on stderr (not quiet).
    export_stderr: String,
}

fn model_recipe(env: &Env, name: &str, model: &str) -> PathBuf {
    let r = env.recipe(name, "[verification]\nenabled = false\n");
    let text = std::fs::read_to_string(&r).unwrap();
    let tiny = "[model]\nkind = \"convnext\"\ndepths = [1, 1, 1, 1]\ndims = [8, 16, 24, 32]\n";
    assert!(
        text.contains(tiny),
        "common::Env::recipe changed its [model]"
    );
    std::fs::write(&r, text.replacen(tiny, &format!("[model]\n{model}\n"), 1)).unwrap();
    r
}

fn train_and_export(model: &str) -> Exported {
    let env = Env::new();
    let r = model_recipe(&env, "r.toml", model);
    let run = env.json(&[
        "run",
        s(&r),
        "--set",
        "train.epochs=1",
        "--set",
        "optimizer.lr=0.01",
        "--format",
        "json",
    ]);
    assert_eq!(run["status"], "done", "{run}");
    let id = run["id"].to_string();
    // the checkpoint `runner export RUN` reads (as `runner eval RUN`): the run's best
    let store = runner::store::Store::open(&env.db()).unwrap();
    let checkpoint = runner::engine::restore::resolve_checkpoint(Some(&store), &id, None).unwrap();
    drop(store);
    let file = env.path("export.safetensors");
    // not --quiet: what a user sees, warnings included
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--db", s(&env.db()), "export", &id, "--out", s(&file)])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let export_stderr = stderr(&out);
    assert!(
        out.status.success(),
        "runner export failed:\n{export_stderr}"
    );
    assert!(
        export_stderr.contains(s(&checkpoint)),
        "the export is of the run's checkpoint {}:\n{export_stderr}",
        checkpoint.display()
    );
    Exported {
        env,
        checkpoint,
        file,
        export_stderr,
    }
}

/// A VarBuilder backend over the exported tensors that records which names the model read,
/// so that a tensor candle-transformers silently does without (layer scale `gamma` is
/// optional there) cannot go unnoticed.
#[derive(Clone)]
struct Recording {
    tensors: Arc<HashMap<String, Tensor>>,
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl Recording {
    fn new(tensors: HashMap<String, Tensor>) -> Self {
        Recording {
            tensors: Arc::new(tensors),
            read: Arc::default(),
        }
    }

    fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, Device::Cpu)
    }

    /// Names in the file the model did not read, BatchNorm's `num_batches_tracked` aside
    /// (PyTorch's counter, which no eval forward reads).
    fn unread(&self) -> Vec<String> {
        let read = self.read.lock().unwrap();
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !read.contains(*k) && !k.ends_with("num_batches_tracked"))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = <HashMap<String, Tensor> as SimpleBackend>::get(
            self.tensors.as_ref(),
            s,
            name,
            h,
            dtype,
            dev,
        )?;
        self.read.lock().unwrap().insert(name.to_string());
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = <HashMap<String, Tensor> as SimpleBackend>::get_unchecked(
            self.tensors.as_ref(),
            name,
            dtype,
            dev,
        )?;
        self.read.lock().unwrap().insert(name.to_string());
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[derive(Clone, Copy, Debug)]
enum Reference {
    ConvNext(fn() -> convnext::Config),
    ResNet18,
    ResNet50,
}

/// candle-transformers' logits for `x` with the weights `tensors` (and the names it left
/// unread).
fn reference_logits(
    which: Reference,
    tensors: HashMap<String, Tensor>,
    x: &Tensor,
) -> (Tensor, Vec<String>) {
    let rec = Recording::new(tensors);
    let vb = rec.var_builder();
    let logits = match which {
        Reference::ConvNext(cfg) => x.apply(&convnext::convnext(&cfg(), CLASSES, vb).unwrap()),
        Reference::ResNet18 => x.apply(&resnet::resnet18(CLASSES, vb).unwrap()),
        Reference::ResNet50 => x.apply(&resnet::resnet50(CLASSES, vb).unwrap()),
    }
    .unwrap();
    (logits, rec.unread())
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Runner's eval-mode logits for `x`, its model loaded from `checkpoint` by the library (as
/// `runner eval` loads it).
fn runner_logits(checkpoint: &Path, x: &Tensor) -> Tensor {
    let loaded = runner::engine::restore::load_checkpoint(checkpoint, None).unwrap();
    loaded.model.forward(x, &mut ForwardCtx::eval()).unwrap()
}

/// Exports a trained `model`, loads the file in candle-transformers (`which`) and compares
/// eval-mode logits with runner's; then changes `perturb` in the file and checks that the
/// logits move by far more than the tolerance (the comparison can fail). Returns the export.
fn cross_check(label: &str, model: &str, which: Reference, perturb: &str) -> Exported {
    let e = train_and_export(model);
    assert!(
        !e.export_stderr.contains("warning"),
        "a preset with default options exports with no warning:\n{}",
        e.export_stderr
    );
    let x = input();
    let ours = runner_logits(&e.checkpoint, &x);
    let tensors = candle_core::safetensors::load(&e.file, &Device::Cpu).unwrap();
    let (theirs, unread) = reference_logits(which, tensors.clone(), &x);
    assert!(
        unread.is_empty(),
        "{label}: candle-transformers did not read {unread:?}"
    );
    assert_eq!(ours.dims(), &[2, CLASSES]);
    assert_eq!(theirs.dims(), &[2, CLASSES]);
    let (a, b) = (flat(&ours), flat(&theirs));
    assert!(a.iter().chain(&b).all(|v| v.is_finite()), "{a:?} {b:?}");
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&a, &b);
    eprintln!(
        "{label}: max |runner - candle-transformers| = {diff:.3e} over {} logits, max |logit| = {scale:.3e} (relative {:.3e})",
        a.len(),
        diff / scale.max(f32::MIN_POSITIVE)
    );
    let bound = TOL * scale.max(1.0);
    assert!(
        diff <= bound,
        "{label}: logits differ by {diff:e} > {bound:e}\nrunner:             {a:?}\ncandle-transformers: {b:?}"
    );
    // Logits that say something: they vary over the classes and between the two images, by
    // more than the tolerance, so that a model answering the other image's logits would fail
    // the comparison (briefly trained BatchNorm nets have large logits with a large common
    // part: ResNet-50's differ between the images by about 1e-3 of their size).
    let spread =
        a.iter().fold(f32::MIN, |m, v| m.max(*v)) - a.iter().fold(f32::MAX, |m, v| m.min(*v));
    assert!(spread > 1e-3, "{label}: near-constant logits {a:?}");
    let between = max_abs_diff(&a[..CLASSES], &a[CLASSES..]);
    assert!(
        between > 100.0 * diff && between > 3.0 * bound,
        "{label}: the two images give near-equal logits {a:?}"
    );
    // Tripling one tensor of the file moves candle-transformers' logits by far more than the
    // tolerance.
    let mut changed = tensors;
    let t = changed
        .get(perturb)
        .unwrap_or_else(|| panic!("{label}: no {perturb} in the export"));
    let t2 = (t * 3.0).unwrap();
    changed.insert(perturb.to_string(), t2);
    let (moved, _) = reference_logits(which, changed, &x);
    let moved = max_abs_diff(&flat(&moved), &b);
    assert!(
        moved > 100.0 * bound,
        "{label}: changing {perturb} moved the logits by {moved:e} only"
    );
    e
}

/// The exported file's tensors with their shapes.
fn shapes(file: &Path) -> HashMap<String, Vec<usize>> {
    candle_core::safetensors::load(file, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.dims().to_vec()))
        .collect()
}

// Layer scale starts at 1 (not timm's 1e-6) so that the blocks, and the MLP layout in
// particular, weigh on the logits after three training steps.
const ATTO: &str = "kind = \"convnext\"\npreset = \"atto\"\nlayer_scale = 1.0";
const TINY: &str = "kind = \"convnext\"\npreset = \"tiny\"\nlayer_scale = 1.0";

#[test]
fn convnext_atto_export_matches_candle_transformers() {
    let e = cross_check(
        "convnext atto",
        ATTO,
        Reference::ConvNext(convnext::Config::atto),
        "stages.3.blocks.1.mlp.fc2.weight",
    );
    // timm's conv_mlp layout: every block MLP weight as a 1x1 conv, 12 blocks
    let sh = shapes(&e.file);
    assert_eq!(sh["stages.0.blocks.0.mlp.fc1.weight"], [160, 40, 1, 1]);
    assert_eq!(sh["stages.3.blocks.1.mlp.fc2.weight"], [320, 1280, 1, 1]);
    let four_d = sh
        .iter()
        .filter(|(k, v)| k.contains(".mlp.fc") && k.ends_with(".weight") && v.len() == 4)
        .count();
    assert_eq!(four_d, 24, "{sh:?}");
    assert!(e.export_stderr.contains("conv_mlp"), "{}", e.export_stderr);
    // runner's own checkpoint keeps the Linear layout
    let ck = runner::train::checkpoint::read_checkpoint(&e.checkpoint).unwrap();
    assert_eq!(
        ck.model["stages.0.blocks.0.mlp.fc1.weight"].dims(),
        [160, 40]
    );
}

#[test]
fn convnext_tiny_export_matches_candle_transformers() {
    let e = cross_check(
        "convnext tiny",
        TINY,
        Reference::ConvNext(convnext::Config::tiny),
        "stages.3.blocks.2.mlp.fc2.weight",
    );
    // timm's tiny has a Linear MLP: 2-D weights, as runner's
    let sh = shapes(&e.file);
    assert_eq!(sh["stages.0.blocks.0.mlp.fc1.weight"], [384, 96]);
    assert_eq!(sh["stages.3.blocks.2.mlp.fc2.weight"], [768, 3072]);
    assert!(!e.export_stderr.contains("conv_mlp"), "{}", e.export_stderr);
}

/// BatchNorm running statistics in the export that three training steps moved away from
/// their initial values (mean 0, variance 1).
fn assert_trained_running_stats(file: &Path, bn: &str) {
    let t = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    let mean = flat(&t[&format!("{bn}.running_mean")]);
    let var = flat(&t[&format!("{bn}.running_var")]);
    assert!(
        mean.iter().any(|v| v.abs() > 1e-3),
        "{bn}.running_mean {mean:?}"
    );
    assert!(
        var.iter().any(|v| (v - 1.0).abs() > 1e-3),
        "{bn}.running_var {var:?}"
    );
    let n = t[&format!("{bn}.num_batches_tracked")]
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert_eq!(n, 3.0, "three training steps");
}

#[test]
fn resnet18_export_matches_candle_transformers() {
    let e = cross_check(
        "resnet-18",
        "kind = \"resnet\"\npreset = \"18\"",
        Reference::ResNet18,
        // eval mode reads the running statistics: changing them must show
        "layer4.1.bn2.running_var",
    );
    assert_trained_running_stats(&e.file, "bn1");
    assert_trained_running_stats(&e.file, "layer4.1.bn2");
}

/// After three steps the running statistics (momentum 0.1) are a quarter of the way to the
/// batch statistics, and a ResNet-50 without zero-initialised residual BatchNorms amplifies
/// what eval mode leaves unnormalised over its 16 blocks: its logits are ~1e6. The tolerance
/// is relative, and the comparison is as close as for the others.
#[test]
fn resnet50_export_matches_candle_transformers() {
    let e = cross_check(
        "resnet-50",
        "kind = \"resnet\"\npreset = \"50\"",
        Reference::ResNet50,
        "layer4.2.bn3.running_var",
    );
    assert_trained_running_stats(&e.file, "layer1.0.downsample.1");
    assert_trained_running_stats(&e.file, "layer4.2.bn3");
}

/// `model.init_from` reads timm's conv_mlp layout back: the exported atto file (4-D block MLP
/// weights) loads into runner's atto (2-D Linear weights) and gives the checkpoint's logits
/// exactly; and a run starts from it.
#[test]
fn convnext_atto_export_reads_back_through_init_from() {
    let e = train_and_export(ATTO);
    let x = input();
    let loaded = runner::engine::restore::load_checkpoint(&e.checkpoint, None).unwrap();
    let want = flat(&loaded.model.forward(&x, &mut ForwardCtx::eval()).unwrap());

    let vm = VarMap::new();
    let model = runner::model::build(
        &loaded.recipe.model,
        CLASSES,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let report = load_init_from(&vm, &e.file).unwrap();
    assert_eq!(report.reshaped.len(), 24, "{:?}", report.reshaped);
    assert!(report
        .reshaped
        .iter()
        .all(|n| n.ends_with(".mlp.fc1.weight") || n.ends_with(".mlp.fc2.weight")));
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let got = flat(&model.forward(&x, &mut ForwardCtx::eval()).unwrap());
    assert_eq!(
        got, want,
        "init_from of the export gives the checkpoint's logits"
    );

    // what users run: another run of the same model starting from the exported file
    let r2 = model_recipe(&e.env, "r2.toml", ATTO);
    let warm = e.env.json(&[
        "run",
        s(&r2),
        "--set",
        &format!("model.init_from=\"{}\"", e.file.display()),
        "--set",
        "train.epochs=1",
        "--format",
        "json",
    ]);
    assert_eq!(warm["status"], "done", "{warm}");
}
