//! Parity of the project's ConvNeXt and ResNet pieces with timm / torchvision fixtures
//! (tests/fixtures/reference): forward outputs, every gradient, BatchNorm running statistics.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use runner::model::resnet::{BasicBlock, Stem};
use runner::model::{build, load_init_from, ForwardCtx};
use runner::recipe::{BlockNorm, LayerScale, ModelConfig, ModelKind};

fn reference(name: &str) -> PathBuf {
    PathBuf::from("tests/fixtures/reference").join(name)
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(reference(name), &Device::Cpu).expect("fixture")
}

/// max |a - b| / max |b|
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn tiny_convnext_cfg() -> ModelConfig {
    ModelConfig {
        kind: ModelKind::Convnext,
        preset: None,
        depths: Some(vec![1, 1, 1, 1]),
        dims: Some(vec![8, 16, 24, 32]),
        block_norm: BlockNorm::Layer,
        layer_scale: LayerScale::Init(1e-6),
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

/// Mean cross-entropy from basic ops (log-softmax = x - logsumexp).
fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Tensor {
    let (n, k) = logits.dims2().unwrap();
    let m = logits.max_keepdim(D::Minus1).unwrap().detach();
    let lse = (logits
        .broadcast_sub(&m)
        .unwrap()
        .exp()
        .unwrap()
        .sum_keepdim(D::Minus1)
        .unwrap()
        .log()
        .unwrap()
        + &m)
        .unwrap();
    let logp = logits.broadcast_sub(&lse).unwrap();
    let mut onehot = vec![0f32; n * k];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * k + l] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (n, k), &Device::Cpu).unwrap();
    ((logp * onehot).unwrap().sum_all().unwrap() * (-1.0 / n as f64)).unwrap()
}

#[test]
fn convnext_tiny_matches_timm_forward_and_gradients() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = build(&tiny_convnext_cfg(), 10, vb).unwrap();
    let report = load_init_from(&varmap, &reference("convnext_tiny_timm.safetensors")).unwrap();
    assert_eq!(
        report.loaded.len(),
        56,
        "every timm parameter loads by name"
    );

    let fx = load("convnext_tiny_timm.safetensors");
    let x = &fx["__input__"];
    let mut ctx = ForwardCtx::eval();
    let pre = model.embed(x, &mut ctx).unwrap();
    let e = rel_err(&pre, &fx["__pre_logits__"]);
    assert!(e < 1e-4, "pre-logits rel err {e}");
    let logits = model
        .classifier_logits_from_embedding(&pre, &mut ctx)
        .unwrap();
    let e = rel_err(&logits, &fx["__logits__"]);
    assert!(e < 1e-4, "logits rel err {e}");

    let g = load("convnext_tiny_timm_grads.safetensors");
    let labels: Vec<usize> = g["__labels__"]
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| *v as usize)
        .collect();
    let mut ctx = ForwardCtx::train(0);
    let logits = model.forward(&g["__input__"], &mut ctx).unwrap();
    let loss = cross_entropy(&logits, &labels);
    let e = rel_err(&loss.reshape(1).unwrap(), &g["__loss__"]);
    assert!(e < 1e-5, "loss rel err {e}");
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let mut checked = 0;
    for (name, var) in data.iter() {
        let want = &g[&format!("__grad__.{name}")];
        let got = grads
            .get(var)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let e = rel_err(got, want);
        assert!(e < 1e-4, "gradient of {name}: rel err {e}");
        checked += 1;
    }
    assert_eq!(checked, 56);
}

#[test]
fn resnet_stem_and_blocks_match_torchvision_in_train_mode() {
    let fx = load("resnet_stem_train.safetensors");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let stem = Stem::new(&vb, 8, false).unwrap();
    let layer1 = BasicBlock::new(vb.pp("layer1"), 8, 8, 1).unwrap();
    let down = BasicBlock::new(vb.pp("down"), 8, 16, 2).unwrap();
    {
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            var.set(&fx[&format!("init.{name}")]).unwrap();
        }
    }
    let x = Var::from_tensor(&fx["__input__"]).unwrap();
    let mut ctx = ForwardCtx::train(0);
    let y = stem.forward(&x, &mut ctx).unwrap();
    let y = layer1.forward(&y, &mut ctx).unwrap();
    let y = down.forward(&y, &mut ctx).unwrap();
    let e = rel_err(&y, &fx["__output__"]);
    assert!(e < 1e-5, "output rel err {e}");
    let loss = (&y * &fx["__proj__"]).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let e = rel_err(grads.get(&x).unwrap(), &fx["__grad_input__"]);
    assert!(e < 1e-4, "input gradient rel err {e}");
    let data = varmap.data().lock().unwrap();
    let (mut ngrad, mut nstat) = (0, 0);
    for (name, var) in data.iter() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            let e = rel_err(var.as_tensor(), &fx[&format!("after.{name}")]);
            assert!(e < 1e-5, "{name} after one step: rel err {e}");
            nstat += 1;
        } else if name.ends_with("num_batches_tracked") {
            assert_eq!(var.as_tensor().to_scalar::<i64>().unwrap(), 1, "{name}");
        } else {
            let got = grads
                .get(var)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let e = rel_err(got, &fx[&format!("__grad__.{name}")]);
            assert!(e < 1e-4, "gradient of {name}: rel err {e}");
            ngrad += 1;
        }
    }
    assert_eq!((ngrad, nstat), (18, 12));
}
