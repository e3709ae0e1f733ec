//! Parameter counts against ../shared/reference/param_counts.json (timm / torchvision), and
//! a gradient for every parameter of every family (tiny configs, tiny input).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use runner::model::{build, count_params, is_buffer, ForwardCtx};
use runner::recipe::{BlockNorm, LayerScale, ModelConfig, ModelKind};

fn cfg(kind: ModelKind, preset: Option<&str>) -> ModelConfig {
    ModelConfig {
        kind,
        preset: preset.map(str::to_string),
        depths: None,
        dims: None,
        block_norm: BlockNorm::Layer,
        layer_scale: LayerScale::Init(1e-6),
        drop_path: 0.0,
        dropout: 0.0,
        small_stem: false,
        width_mult: 1.0,
        embedding_dim: None,
        num_classes: None,
        init_from: None,
    }
}

#[test]
fn parameter_counts_match_reference() {
    let path = "../shared/reference/param_counts.json";
    let want: HashMap<String, usize> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut no_gamma = cfg(ModelKind::Convnext, Some("tiny"));
    no_gamma.layer_scale = LayerScale::Enabled(false);
    let mut course = no_gamma.clone();
    course.block_norm = BlockNorm::Batch;
    let cases: Vec<(&str, ModelConfig, usize)> = vec![
        (
            "convnext_tiny(num_classes=7000)",
            cfg(ModelKind::Convnext, Some("tiny")),
            7000,
        ),
        (
            "convnext_tiny(num_classes=1000)",
            cfg(ModelKind::Convnext, Some("tiny")),
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
            cfg(ModelKind::Resnet, Some("18")),
            7000,
        ),
        (
            "resnet34(num_classes=7000) torchvision",
            cfg(ModelKind::Resnet, Some("34")),
            7000,
        ),
        (
            "resnet50(num_classes=7000) torchvision",
            cfg(ModelKind::Resnet, Some("50")),
            7000,
        ),
        (
            "mobilenet_v2(num_classes=7000) torchvision",
            cfg(ModelKind::MobilenetV2, None),
            7000,
        ),
        (
            "mobilenet_v3_large(num_classes=7000) torchvision",
            cfg(ModelKind::MobilenetV3, Some("large")),
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
    let mut c = cfg(ModelKind::Convnext, None);
    c.depths = Some(vec![1, 2]);
    c.dims = Some(vec![8, 16]);
    c.drop_path = 0.1;
    c.embedding_dim = Some(12);
    v.push(("convnext layer", c.clone()));
    c.block_norm = BlockNorm::Batch;
    c.layer_scale = LayerScale::Enabled(false);
    c.embedding_dim = None;
    v.push(("convnext batch", c));
    let mut r = cfg(ModelKind::Resnet, Some("18"));
    r.depths = Some(vec![1, 1]);
    r.dims = Some(vec![8, 16]);
    v.push(("resnet basic", r.clone()));
    r.preset = Some("50".into());
    r.small_stem = true;
    r.embedding_dim = Some(10);
    v.push(("resnet bottleneck small stem", r));
    let mut m = cfg(ModelKind::MobilenetV2, None);
    m.width_mult = 0.25;
    v.push(("mobilenet_v2", m));
    let mut m = cfg(ModelKind::MobilenetV3, Some("small"));
    m.width_mult = 0.25;
    v.push(("mobilenet_v3 small", m.clone()));
    m.preset = Some("large".into());
    v.push(("mobilenet_v3 large", m));
    v
}

#[test]
fn every_parameter_gets_a_gradient() {
    let dev = Device::Cpu;
    for (what, c) in tiny_configs() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let model = build(&c, 5, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
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

#[test]
fn drop_path_is_seeded_and_train_only() {
    let dev = Device::Cpu;
    let mut c = cfg(ModelKind::Convnext, None);
    c.depths = Some(vec![2, 2]);
    c.dims = Some(vec![8, 16]);
    c.drop_path = 0.5;
    c.layer_scale = LayerScale::Init(1.0);
    let varmap = VarMap::new();
    let model = build(&c, 3, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
    let x = Tensor::randn(0f32, 1.0, (8, 3, 32, 32), &dev).unwrap();
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
