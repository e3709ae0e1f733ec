//! Parameter counts against tests/fixtures/reference/param_counts.json (timm / torchvision), and
//! a gradient for every parameter of every family (tiny configs, tiny input).

mod common;

use common::{cosine, model_cfg};
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use runner::model::{build, count_params, is_buffer, ForwardCtx};
use runner::recipe::{BlockNorm, LayerScale, ModelConfig, ModelKind};

#[test]
fn parameter_counts_match_reference() {
    let path = "tests/fixtures/reference/param_counts.json";
    let want: HashMap<String, usize> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut no_gamma = model_cfg(ModelKind::Convnext, Some("tiny"));
    no_gamma.layer_scale = LayerScale::Enabled(false);
    let mut course = no_gamma.clone();
    course.block_norm = BlockNorm::Batch;
    let cases: Vec<(&str, ModelConfig, usize)> = vec![
        (
            "convnext_tiny(num_classes=7000)",
            model_cfg(ModelKind::Convnext, Some("tiny")),
            7000,
        ),
        (
            "convnext_tiny(num_classes=1000)",
            model_cfg(ModelKind::Convnext, Some("tiny")),
            1000,
        ),
        (
            "convnext_tiny(num_classes=7000) without layer-scale gammas",
            no_gamma,
            7000,
        ),
        (
            "convnext_tiny(num_classes=7000) without layer-scale gammas",
            course,
            7000,
        ),
        (
            "resnet18(num_classes=7000) torchvision",
            model_cfg(ModelKind::Resnet, Some("18")),
            7000,
        ),
        (
            "resnet34(num_classes=7000) torchvision",
            model_cfg(ModelKind::Resnet, Some("34")),
            7000,
        ),
        (
            "resnet50(num_classes=7000) torchvision",
            model_cfg(ModelKind::Resnet, Some("50")),
            7000,
        ),
        (
            "mobilenet_v2(num_classes=7000) torchvision",
            model_cfg(ModelKind::MobilenetV2, None),
            7000,
        ),
        (
            "mobilenet_v3_large(num_classes=7000) torchvision",
            model_cfg(ModelKind::MobilenetV3, Some("large")),
            7000,
        ),
    ];
    let mut covered = std::collections::HashSet::new();
    for (key, c, classes) in cases {
        let n = count_params(&c, classes).unwrap();
        assert_eq!(n, want[key], "{key}");
        covered.insert(key);
    }
    assert_eq!(
        covered.len(),
        want.len(),
        "every reference entry is checked"
    );
}

fn tiny_configs() -> Vec<(&'static str, ModelConfig)> {
    let mut v = Vec::new();
    let mut c = model_cfg(ModelKind::Convnext, None);
    c.depths = Some(vec![1, 2]);
    c.dims = Some(vec![8, 16]);
    c.drop_path = 0.1;
    c.embedding_dim = Some(12);
    v.push(("convnext layer", c.clone()));
    c.block_norm = BlockNorm::Batch;
    c.layer_scale = LayerScale::Enabled(false);
    c.embedding_dim = None;
    v.push(("convnext batch", c));
    let mut r = model_cfg(ModelKind::Resnet, Some("18"));
    r.depths = Some(vec![1, 1]);
    r.dims = Some(vec![8, 16]);
    v.push(("resnet basic", r.clone()));
    r.preset = Some("50".into());
    r.small_stem = true;
    r.embedding_dim = Some(10);
    v.push(("resnet bottleneck small stem", r));
    let mut m = model_cfg(ModelKind::MobilenetV2, None);
    m.width_mult = 0.25;
    v.push(("mobilenet_v2", m));
    let mut m = model_cfg(ModelKind::MobilenetV3, Some("small"));
    m.width_mult = 0.25;
    v.push(("mobilenet_v3 small", m.clone()));
    m.preset = Some("large".into());
    v.push(("mobilenet_v3 large", m));
    v
}

#[test]
fn every_parameter_gets_a_gradient() {
    let mut rng = runner::engine::init::TensorRng::new(44);
    let dev = Device::Cpu;
    for (what, c) in tiny_configs() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let model = build(&c, 5, vb).unwrap();
        let x = rng.randn(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
        let emb = model.embed(&x, &mut ForwardCtx::eval()).unwrap();
        assert_eq!(emb.dims(), &[2, model.embedding_dim()], "{what}");
        // a loss that reaches every logit with distinct weights
        let w = Tensor::arange(1f32, 11f32, &dev)
            .unwrap()
            .reshape((2, 5))
            .unwrap();
        // Train mode: every parameter is in the graph with a finite gradient. (Some are exactly
        // zero there, as in PyTorch: a BatchNorm bias followed by a linear conv and another
        // train-mode BatchNorm.) Eval mode: every gradient is non-zero.
        for train in [true, false] {
            let mut ctx = if train {
                ForwardCtx::train(1)
            } else {
                ForwardCtx::eval()
            };
            let logits = model.forward(&x, &mut ctx).unwrap();
            assert_eq!(logits.dims(), &[2, 5], "{what}");
            let loss = (logits.sqr().unwrap() * &w).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let data = varmap.data().lock().unwrap();
            for (name, var) in data.iter() {
                if is_buffer(name) {
                    continue;
                }
                let g = grads
                    .get(var)
                    .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
                let s = g
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(s.is_finite(), "{what}: gradient of {name} is {s}");
                assert!(
                    train || s > 0.0,
                    "{what}: gradient of {name} is 0 in eval mode"
                );
            }
        }
    }
}

/// Eval under `candle_core::no_grad` (what evaluation, verification and `runner eval` use)
/// gives the logits of the tracked forward bit for bit, records no graph, and leaves
/// tracking on again afterwards.
#[test]
fn no_grad_eval_is_the_tracked_eval_without_a_graph() {
    let mut rng = runner::engine::init::TensorRng::new(45);
    let dev = Device::Cpu;
    for (what, c) in tiny_configs() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let model = build(&c, 5, vb).unwrap();
        let x = rng.randn(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
        let tracked = model.forward(&x, &mut ForwardCtx::eval()).unwrap();
        assert!(
            tracked.track_op(),
            "{what}: the plain forward records a graph"
        );
        let untracked =
            candle_core::no_grad(|| model.forward(&x, &mut ForwardCtx::eval())).unwrap();
        assert!(!untracked.track_op(), "{what}: no graph under no_grad");
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&tracked), bits(&untracked), "{what}: the same logits");
        let again = model.forward(&x, &mut ForwardCtx::eval()).unwrap();
        assert!(again.track_op(), "{what}: tracking is back after no_grad");
    }
}

#[test]
fn drop_path_is_seeded_and_train_only() {
    let mut rng = runner::engine::init::TensorRng::new(45);
    let dev = Device::Cpu;
    let mut c = model_cfg(ModelKind::Convnext, None);
    c.depths = Some(vec![2, 2]);
    c.dims = Some(vec![8, 16]);
    c.drop_path = 0.5;
    c.layer_scale = LayerScale::Init(1.0);
    let varmap = VarMap::new();
    let model = build(&c, 3, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
    let x = rng.randn(0f32, 1.0, (8, 3, 32, 32), &dev).unwrap();
    let run = |ctx: &mut ForwardCtx| -> Vec<f32> {
        model
            .forward(&x, ctx)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(
        run(&mut ForwardCtx::train(7)),
        run(&mut ForwardCtx::train(7))
    );
    assert_ne!(
        run(&mut ForwardCtx::train(7)),
        run(&mut ForwardCtx::train(8))
    );
    assert_eq!(run(&mut ForwardCtx::eval()), run(&mut ForwardCtx::eval()));
    assert_ne!(run(&mut ForwardCtx::eval()), run(&mut ForwardCtx::train(7)));
}

/// bf16 / f16 mixed precision (run here on the CPU, whose kernels widen to f32 where Candle
/// lacks a low-precision path; on CUDA the same graph runs natively): the logits follow the
/// f32 ones, and every f32 master parameter gets an f32 gradient that points where the f32
/// one does.
#[test]
fn mixed_precision_follows_f32_and_every_master_weight_gets_an_f32_gradient() {
    use runner::recipe::Precision;
    use runner::train::precision::{MixedPrecision, StepVerdict};
    let dev = Device::Cpu;
    for (what, c) in tiny_configs() {
        // seeded weights and input: the tolerances below are checked on fixed numbers
        let seeded = runner::engine::init::SeededVarMap::new(VarMap::new(), 7);
        let varmap = seeded.varmap.clone();
        let model = build(&c, 5, seeded.var_builder(&dev)).unwrap();
        let xs: Vec<f32> = (0..2 * 3 * 32 * 32)
            .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(xs, (2, 3, 32, 32), &dev).unwrap();
        let run = |p: Precision| {
            let mp = MixedPrecision::new(p);
            let logits = mp
                .output(
                    &model
                        .forward(&mp.input(&x).unwrap(), &mut ForwardCtx::eval())
                        .unwrap(),
                )
                .unwrap();
            assert_eq!(logits.dtype(), DType::F32, "{what} {p:?}");
            // the training loss (O(1)); f16 starts at scale 65536 and halves on overflow
            let labels = Tensor::new(&[1u32, 3], &dev).unwrap();
            let loss = runner::train::loss::cross_entropy(&logits, &labels, 0.1).unwrap();
            let mut mp = mp;
            let vars: Vec<_> = varmap.all_vars();
            let mut tries = 0;
            let grads = loop {
                let mut grads = mp.backward(&loss).unwrap();
                if mp.after_backward(&mut grads, &vars, 1.0).unwrap() == StepVerdict::Apply {
                    break grads;
                }
                tries += 1;
                assert!(
                    tries < 8,
                    "{what} {p:?}: overflow at every scale down to {}",
                    mp.scaler.scale
                );
            };
            (logits, grads)
        };
        let (l32, g32) = run(Precision::F32);
        for p in [Precision::Bf16, Precision::F16] {
            let (l, g) = run(p);
            let cos = cosine(&l, &l32);
            assert!(cos > 0.99, "{what} {p:?}: logits cosine {cos}");
            let data = varmap.data().lock().unwrap();
            let (mut worst_cos, mut worst_norm) = (1f64, 0f64);
            let (mut all, mut all32) = (Vec::new(), Vec::new());
            for (name, var) in data.iter() {
                if is_buffer(name) {
                    continue;
                }
                let gv = g
                    .get(var)
                    .unwrap_or_else(|| panic!("{what} {p:?}: no gradient for {name}"));
                assert_eq!(gv.dtype(), DType::F32, "{what} {p:?}: {name}");
                let g_ref = g32.get(var).unwrap();
                let cos = cosine(gv, g_ref);
                let norm = |t: &Tensor| {
                    t.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                        .sqrt() as f64
                };
                let (n, n32) = (norm(gv), norm(g_ref));
                let rel = (n - n32).abs() / n32.max(1e-12);
                assert!(
                    n.is_finite(),
                    "{what} {p:?}: gradient of {name} is not finite"
                );
                // a missing or mis-scaled gradient would be far off; low-precision noise is not
                // (gradients that are ~0 in f32 too, e.g. behind a saturated hard sigmoid, are
                // all noise and only checked for finiteness)
                if n32 > 1e-5 {
                    assert!(cos > 0.8, "{what} {p:?}: gradient of {name}: cosine {cos}");
                    assert!(
                        rel < 0.3,
                        "{what} {p:?}: gradient norm of {name}: {n} against {n32}"
                    );
                    worst_cos = worst_cos.min(cos);
                    worst_norm = worst_norm.max(rel);
                }
                all.push(gv.flatten_all().unwrap());
                all32.push(g_ref.flatten_all().unwrap());
            }
            let cos_all = cosine(
                &Tensor::cat(&all, 0).unwrap(),
                &Tensor::cat(&all32, 0).unwrap(),
            );
            eprintln!("{what} {p:?}: all-gradient cosine {cos_all:.5}, worst parameter cosine {worst_cos:.4}, worst norm error {worst_norm:.4}");
            assert!(
                cos_all > 0.98,
                "{what} {p:?}: all-gradient cosine {cos_all}"
            );
        }
    }
}

/// `min_input_side` is what the architectures really take: every family trains a step
/// (forward in train mode, backward) at its minimum (8 px for ResNet and MobileNet, the
/// recipe floor; 32 px for a four-stage ConvNeXt, 16 px for three stages), and a ConvNeXt
/// one pixel under it is refused with an error naming the size, not a kernel panic.
#[test]
fn every_family_runs_at_its_minimum_input_side() {
    let mut rng = runner::engine::init::TensorRng::new(45);
    let dev = Device::Cpu;
    let mut configs = tiny_configs();
    let mut three = model_cfg(ModelKind::Convnext, None);
    three.depths = Some(vec![1, 1, 1]);
    three.dims = Some(vec![8, 16, 24]);
    configs.push(("convnext three stages", three));
    let mut four = model_cfg(ModelKind::Convnext, None);
    four.depths = Some(vec![1, 1, 1, 1]);
    four.dims = Some(vec![8, 8, 8, 8]);
    configs.push(("convnext four stages", four));
    configs.push((
        "convnext atto preset",
        model_cfg(ModelKind::Convnext, Some("atto")),
    ));
    for (what, c) in configs {
        let min = runner::model::min_input_side(&c) as usize;
        let expected = match c.kind {
            ModelKind::Convnext => 4 << (c.depths.as_ref().map_or(4, Vec::len) - 1),
            _ => 1,
        };
        assert_eq!(min, expected, "{what}");
        let varmap = VarMap::new();
        let model = build(&c, 5, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        // the minimum itself, and the recipe floor of 8 px
        for side in [min, min.max(8)] {
            let x = rng.randn(0f32, 1.0, (2, 3, side, side), &dev).unwrap();
            let logits = model
                .forward(&x, &mut ForwardCtx::train(1))
                .unwrap_or_else(|e| panic!("{what} at {side} px: {e}"));
            assert_eq!(logits.dims(), &[2, 5], "{what}");
            logits.sum_all().unwrap().backward().unwrap();
        }
        if c.kind == ModelKind::Convnext {
            let x = rng.randn(0f32, 1.0, (2, 3, min - 1, min), &dev).unwrap();
            let err = model
                .forward(&x, &mut ForwardCtx::train(1))
                .expect_err(what)
                .to_string();
            assert!(
                err.contains("too small") && err.contains(&format!("{min}x{min}")),
                "{what}: {err}"
            );
        }
    }
}

/// Every gradient, flattened, by parameter name.
fn all_gradients(
    model: &dyn runner::model::FaceModel,
    varmap: &VarMap,
    x: &Tensor,
) -> Vec<(String, Vec<f32>)> {
    let logits = model.forward(x, &mut ForwardCtx::train(1)).unwrap();
    let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let mut out: Vec<(String, Vec<f32>)> = data
        .iter()
        .filter(|(name, _)| !is_buffer(name))
        .map(|(name, var)| {
            let g = grads.get(var).unwrap().flatten_all().unwrap();
            (name.clone(), g.to_vec1::<f32>().unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn gradients_are_bitwise_the_same_on_every_call_with_many_threads() {
    // Weight and bias gradients sum over images in parallel; the sums must be added in a fixed
    // order (not as work stealing splits them), or identical runs and resumes differ in their
    // last bits. Models wide enough for the kernels' parallel paths, four threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let mut layer = model_cfg(ModelKind::Convnext, None);
    layer.depths = Some(vec![1, 1, 1, 1]);
    layer.dims = Some(vec![32, 64, 96, 128]);
    let mut batch = layer.clone();
    batch.block_norm = BlockNorm::Batch;
    let mut resnet = model_cfg(ModelKind::Resnet, Some("18"));
    resnet.small_stem = true;
    let mut mobile = model_cfg(ModelKind::MobilenetV2, None);
    mobile.width_mult = 0.5;
    pool.install(move || {
        let mut rng = runner::engine::init::TensorRng::new(46);
        let dev = Device::Cpu;
        for (what, c) in [
            ("convnext layer", layer),
            ("convnext batch", batch),
            ("resnet", resnet),
            ("mobilenet_v2", mobile),
        ] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let model = build(&c, 10, vb).unwrap();
            let x = rng.randn(0f32, 1.0, (16, 3, 32, 32), &dev).unwrap();
            let first = all_gradients(model.as_ref(), &varmap, &x);
            for call in 1..6 {
                let again = all_gradients(model.as_ref(), &varmap, &x);
                for ((name, a), (_, b)) in first.iter().zip(&again) {
                    let same = a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "{what}: gradient of {name} changed on call {call}");
                }
            }
        }
    });
}
