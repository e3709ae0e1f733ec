//! Fine-tuning pieces against their references: the weights' moving average against timm's
//! ModelEmaV3 (tests/fixtures/ema.json, gen_ema.py), the backbone's lr factor, transfer to
//! another identity count, BatchNorm on the embedding.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use runner::train::ema::{decay_at, ModelEma};

fn fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string("tests/fixtures/ema.json").unwrap()).unwrap()
}

/// A VarMap with the fixture's names and shapes (zeros; `num_batches_tracked` as i64).
fn varmap(shapes: &serde_json::Map<String, serde_json::Value>) -> VarMap {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    for (name, shape) in shapes {
        let dims: Vec<usize> = shape
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let dtype = if name.ends_with("num_batches_tracked") {
            DType::I64
        } else {
            DType::F32
        };
        vb.get_with_hints_dtype(dims, name, Init::Const(0.0), dtype)
            .unwrap();
    }
    vm
}

fn values(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn the_moving_average_is_timms_model_ema_v3() {
    let fx = fixture();
    let shapes = fx["shapes"].as_object().unwrap();
    let model = varmap(shapes);
    let ema = ModelEma::new(fx["decay"].as_f64().unwrap(), varmap(shapes), &model).unwrap();
    for step in fx["steps"].as_array().unwrap() {
        let k = step["step"].as_u64().unwrap();
        let want_decay = step["decay"].as_f64().unwrap();
        assert!(
            (decay_at(0.9, k) - want_decay).abs() < 1e-12,
            "step {k}: decay {} vs timm {want_decay}",
            decay_at(0.9, k)
        );
        {
            let data = model.data().lock().unwrap();
            for (name, var) in data.iter() {
                let v = values(&step["model"][name]);
                let t = Tensor::new(v.as_slice(), &Device::Cpu)
                    .unwrap()
                    .reshape(var.dims())
                    .unwrap()
                    .to_dtype(var.dtype())
                    .unwrap();
                var.set(&t).unwrap();
            }
        }
        ema.update(&model, k).unwrap();
        let got: HashMap<String, Tensor> = ema.tensors().unwrap();
        for (name, want) in step["ema"].as_object().unwrap() {
            let g: Vec<f64> = got[name]
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in g.iter().zip(values(want)) {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "step {k}: {name}: {a} vs timm {b}"
                );
            }
        }
    }
}

#[test]
fn backbone_lr_scale_scales_every_parameter_but_the_classifier() {
    use runner::recipe::{ModelKind, OptimizerConfig};
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let names = ["stem.0.weight", "head.fc.weight", "margin_head.weight"];
    for n in names {
        vb.get_with_hints(4, n, Init::Const(1.0)).unwrap();
    }
    let cfg = OptimizerConfig {
        lr: Some(0.1),
        backbone_lr_scale: Some(0.25),
        ..Default::default()
    };
    let vars: Vec<(String, candle_core::Var)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut opt = runner::train::optim::build_with_classifier(&cfg, vars.clone(), &|n| {
        runner::model::is_classifier(ModelKind::Convnext, n)
    })
    .unwrap();
    // d(sum of every parameter)/d p = 1 for each: plain SGD moves each by its own lr
    let loss = vars
        .iter()
        .map(|(_, v)| v.as_tensor().sum_all().unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    opt.step(&grads, 0.1).unwrap();
    for (name, var) in &vars {
        let v: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        let want = if name == "stem.0.weight" {
            1.0 - 0.025
        } else {
            1.0 - 0.1
        };
        assert!(v.iter().all(|x| (x - want).abs() < 1e-7), "{name}: {v:?}");
    }
}

#[test]
fn transfer_keeps_the_backbone_and_makes_a_fresh_classifier_for_another_identity_count() {
    use runner::model::{build, load_for_transfer, ForwardCtx};
    use runner::recipe::ModelKind;
    let mut cfg = runner::recipe::ModelConfig {
        kind: ModelKind::Convnext,
        preset: None,
        depths: Some(vec![1, 1]),
        dims: Some(vec![8, 16]),
        block_norm: Default::default(),
        layer_scale: Default::default(),
        drop_path: 0.0,
        dropout: 0.0,
        small_stem: false,
        width_mult: 1.0,
        embedding_dim: Some(12),
        embedding_norm: true,
        num_classes: None,
        init_from: None,
    };
    let dev = Device::Cpu;
    let seeded = |seed| {
        let s = runner::engine::init::SeededVarMap::new(VarMap::new(), seed);
        let vb = s.var_builder(&dev);
        (s.varmap.clone(), vb)
    };
    let (src, vb) = seeded(1);
    build(&cfg, 10, vb).unwrap();
    let tensors: HashMap<String, Tensor> = src
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    assert!(tensors.contains_key("embed_norm.running_var"));
    let (dst, vb) = seeded(2);
    let model = build(&cfg, 4, vb).unwrap();
    let fresh_fc = dst.data().lock().unwrap()["head.fc.weight"]
        .as_tensor()
        .copy()
        .unwrap();
    let r = load_for_transfer(&dst, &tensors, "parent", ModelKind::Convnext).unwrap();
    assert_eq!(r.fresh, ["head.fc.bias", "head.fc.weight"]);
    assert!(r.fresh_notice("parent").unwrap().contains("afresh"));
    let data = dst.data().lock().unwrap();
    for (name, var) in data.iter() {
        let got: Vec<f64> = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = if name.starts_with("head.fc") {
            if name == "head.fc.weight" {
                fresh_fc.clone()
            } else {
                continue;
            }
        } else {
            tensors[name].clone()
        };
        let want: Vec<f64> = want
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got, want, "{name}");
    }
    drop(data);
    // the embedding is normalised in train mode: zero mean per feature over the batch
    let x = Tensor::randn(0f32, 1.0, (6, 3, 16, 16), &dev).unwrap();
    let e = model.embed(&x, &mut ForwardCtx::train(0)).unwrap();
    let mean: Vec<f32> = e.mean(0).unwrap().to_vec1().unwrap();
    assert!(mean.iter().all(|m| m.abs() < 1e-4), "{mean:?}");
    // a backbone that does not fit is an error naming it
    cfg.embedding_dim = Some(7);
    let (other, vb) = seeded(3);
    build(&cfg, 4, vb).unwrap();
    let err = load_for_transfer(&other, &tensors, "parent", ModelKind::Convnext)
        .unwrap_err()
        .to_string();
    assert!(err.contains("embed.weight"), "{err}");
}
