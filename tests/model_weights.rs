//! Saving a model as safetensors and loading it back by name (`init_from`), with errors that
//! list missing and mismatched names; timm's 1x1-conv MLP layout, which `runner export` writes
//! for the atto to nano ConvNeXts and `init_from` reads back; the options `runner export`
//! names as having no timm / torchvision / candle-transformers equivalent.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use runner::model::{
    build, interop, load_init_from, load_init_from_partial, ForwardCtx, ModelError,
};
use runner::recipe::{BlockNorm, LayerScale, LossConfig, LossKind, ModelConfig, ModelKind};

fn resnet(classes_dims: Vec<usize>) -> ModelConfig {
    ModelConfig {
        kind: ModelKind::Resnet,
        preset: Some("18".into()),
        depths: Some(vec![1, 1]),
        dims: Some(classes_dims),
        block_norm: BlockNorm::Layer,
        layer_scale: LayerScale::Init(1e-6),
        drop_path: 0.0,
        dropout: 0.0,
        small_stem: true,
        width_mult: 1.0,
        embedding_dim: None,
        num_classes: None,
        init_from: None,
    }
}

#[test]
fn save_then_init_from_reproduces_outputs_and_buffers() {
    let mut rng = runner::engine::init::TensorRng::new(47);
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let x = rng.randn(0f32, 1.0, (2, 3, 16, 16), &dev).unwrap();

    let vm1 = VarMap::new();
    let m1 = build(
        &resnet(vec![8, 16]),
        4,
        VarBuilder::from_varmap(&vm1, DType::F32, &dev),
    )
    .unwrap();
    m1.forward(&x, &mut ForwardCtx::train(0)).unwrap(); // moves the running stats
    vm1.save(&path).unwrap();
    let y1 = m1.forward(&x, &mut ForwardCtx::eval()).unwrap();

    let vm2 = VarMap::new();
    let m2 = build(
        &resnet(vec![8, 16]),
        4,
        VarBuilder::from_varmap(&vm2, DType::F32, &dev),
    )
    .unwrap();
    let r = load_init_from(&vm2, &path).unwrap();
    assert!(r.loaded.iter().any(|n| n == "bn1.running_mean"));
    let y2 = m2.forward(&x, &mut ForwardCtx::eval()).unwrap();
    let d = (y1 - y2)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);

    // another head size: strict loading names the mismatch, partial loading skips it
    let vm3 = VarMap::new();
    let _m3 = build(
        &resnet(vec![8, 16]),
        7,
        VarBuilder::from_varmap(&vm3, DType::F32, &dev),
    )
    .unwrap();
    match load_init_from(&vm3, &path) {
        Err(ModelError::Load { mismatched, .. }) => {
            assert!(
                mismatched.iter().any(|m| m.starts_with("fc.weight")),
                "{mismatched:?}"
            )
        }
        other => panic!("expected a mismatch error, got {other:?}"),
    }
    let r = load_init_from_partial(&vm3, &path).unwrap();
    assert_eq!(r.mismatched.len(), 2);

    // a missing file is an Io error naming the path
    let err = load_init_from(&vm3, &dir.path().join("nope.safetensors")).unwrap_err();
    assert!(err.to_string().contains("nope.safetensors"));
}

fn convnext(
    preset: Option<&str>,
    depths: Option<Vec<usize>>,
    dims: Option<Vec<usize>>,
) -> ModelConfig {
    ModelConfig {
        kind: ModelKind::Convnext,
        preset: preset.map(str::to_string),
        depths,
        dims,
        small_stem: false,
        ..resnet(vec![8, 16])
    }
}

/// The tensors of a freshly built model, by name.
fn model_tensors(cfg: &ModelConfig, classes: usize) -> HashMap<String, Tensor> {
    let vm = VarMap::new();
    build(
        cfg,
        classes,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let data = vm.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// `model.init_from` reads a 1x1-conv weight `[out, in, 1, 1]` (timm's conv_mlp ConvNeXt
/// blocks) into a Linear weight `[out, in]`, and only that: other 4-D shapes are mismatches.
#[test]
fn init_from_reads_pointwise_conv_weights_into_linear_layers() {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let cfg = convnext(None, Some(vec![1, 1, 1, 1]), Some(vec![8, 16, 24, 32]));
    let x = runner::engine::init::TensorRng::new(5)
        .randn(0f32, 1.0, (2, 3, 32, 32), &dev)
        .unwrap();
    let vm1 = VarMap::new();
    let m1 = build(&cfg, 4, VarBuilder::from_varmap(&vm1, DType::F32, &dev)).unwrap();
    let want = m1.forward(&x, &mut ForwardCtx::eval()).unwrap();
    let mut tensors: HashMap<String, Tensor> = vm1
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    for (k, t) in tensors.iter_mut() {
        if k.contains(".mlp.fc") && k.ends_with(".weight") {
            let (o, i) = t.dims2().unwrap();
            *t = t.reshape((o, i, 1, 1)).unwrap();
        }
    }
    let path = dir.path().join("conv_mlp.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();

    let vm2 = VarMap::new();
    let m2 = build(&cfg, 4, VarBuilder::from_varmap(&vm2, DType::F32, &dev)).unwrap();
    let r = load_init_from(&vm2, &path).unwrap();
    assert_eq!(r.reshaped.len(), 8, "{:?}", r.reshaped);
    assert!(r.reshaped.iter().all(|n| r.loaded.contains(n)));
    let got = m2.forward(&x, &mut ForwardCtx::eval()).unwrap();
    let d = (want - got)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);

    // a transposed or non-1x1 4-D weight is a mismatch, not a reshape
    let name = "stages.0.blocks.0.mlp.fc1.weight";
    for bad in [(8usize, 32usize, 1usize, 1usize), (32, 8, 1, 2)] {
        let mut t2 = tensors.clone();
        t2.insert(name.into(), Tensor::zeros(bad, DType::F32, &dev).unwrap());
        let p = dir.path().join("bad.safetensors");
        candle_core::safetensors::save(&t2, &p).unwrap();
        let vm3 = VarMap::new();
        build(&cfg, 4, VarBuilder::from_varmap(&vm3, DType::F32, &dev)).unwrap();
        match load_init_from(&vm3, &p) {
            Err(ModelError::Load { mismatched, .. }) => {
                assert_eq!(mismatched.len(), 1, "{mismatched:?}");
                assert!(mismatched[0].starts_with(name), "{mismatched:?}");
            }
            other => panic!("expected a mismatch for {bad:?}, got {other:?}"),
        }
    }
}

/// `runner export`'s layout: timm's conv_mlp presets (atto, femto, pico, nano, however the
/// recipe names the architecture) get 4-D block MLP weights, every other ConvNeXt 2-D, and
/// the options timm / torchvision / candle-transformers cannot build are named.
#[test]
fn export_writes_timm_conv_mlp_layout_for_atto_to_nano_only() {
    let ce = LossConfig::default();
    for p in ["atto", "femto", "pico", "nano", "tiny", "small", "base"] {
        let (d, w) = runner::model::convnext::preset(p).unwrap();
        assert_eq!(
            interop::convnext_conv_mlp(&d, &w),
            interop::CONV_MLP_PRESETS.contains(&p),
            "{p}"
        );
    }
    let atto = convnext(Some("atto"), None, None);
    let e = interop::export_weights(&atto, &ce, model_tensors(&atto, 5)).unwrap();
    assert_eq!(e.reshaped.len(), 24, "12 blocks, fc1 and fc2");
    assert_eq!(
        e.tensors["stages.2.blocks.5.mlp.fc1.weight"].dims(),
        [640, 160, 1, 1]
    );
    assert_eq!(
        e.tensors["stages.2.blocks.5.mlp.fc2.weight"].dims(),
        [160, 640, 1, 1]
    );
    assert_eq!(
        e.tensors["head.fc.weight"].dims(),
        [5, 320],
        "the head stays Linear"
    );
    assert!(e.notes.is_empty(), "{:?}", e.notes);
    // the same architecture written out as depths / dims is timm's atto too
    let spelled = convnext(None, Some(vec![2, 2, 6, 2]), Some(vec![40, 80, 160, 320]));
    let e = interop::export_weights(&spelled, &ce, model_tensors(&spelled, 5)).unwrap();
    assert_eq!(e.reshaped.len(), 24);
    // a custom ConvNeXt keeps the Linear layout and is named
    let custom = convnext(None, Some(vec![1, 1, 1, 1]), Some(vec![8, 16, 24, 32]));
    let e = interop::export_weights(&custom, &ce, model_tensors(&custom, 5)).unwrap();
    assert!(e.reshaped.is_empty());
    assert_eq!(
        e.tensors["stages.0.blocks.0.mlp.fc1.weight"].dims(),
        [32, 8]
    );
    assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
    assert!(e.notes[0].contains("no timm preset"), "{:?}", e.notes);
}

#[test]
fn export_names_the_options_other_libraries_cannot_build() {
    let ce = LossConfig::default();
    let notes = |m: &ModelConfig, l: &LossConfig| interop::export_notes(m, l).unwrap();
    let mut r18 = resnet(vec![64, 128, 256, 512]);
    r18.depths = None;
    r18.small_stem = false;
    r18.dims = None;
    assert!(notes(&r18, &ce).is_empty());
    let mut r50 = r18.clone();
    r50.preset = Some("50".into());
    assert!(notes(&r50, &ce).is_empty());

    let mut small = r18.clone();
    small.small_stem = true;
    let n = notes(&small, &ce);
    assert!(n.len() == 1 && n[0].contains("small_stem"), "{n:?}");
    // the ResNet of the other tests: small stem, two stages of widths 8, 16
    let n = notes(&resnet(vec![8, 16]), &ce);
    assert_eq!(n.len(), 3, "{n:?}");
    assert!(
        n[1].contains("[8, 16]") && n[2].contains("BasicBlock"),
        "{n:?}"
    );

    let mut bn = convnext(Some("atto"), None, None);
    bn.block_norm = BlockNorm::Batch;
    bn.layer_scale = LayerScale::Enabled(false);
    let n = notes(&bn, &ce);
    assert!(n.len() == 1 && n[0].contains("block_norm"), "{n:?}");
    let three = convnext(None, Some(vec![1, 1, 1]), Some(vec![8, 16, 24]));
    let n = notes(&three, &ce);
    assert!(n.len() == 1 && n[0].contains("3-stage"), "{n:?}");

    let mut emb = convnext(Some("tiny"), None, None);
    emb.embedding_dim = Some(128);
    let arc = LossConfig {
        kind: LossKind::Arcface,
        ..LossConfig::default()
    };
    let n = notes(&emb, &arc);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(
        n[0].contains("embed.weight") && n[0].contains("head.fc"),
        "{n:?}"
    );
    assert!(n[1].contains("margin_head.weight"), "{n:?}");
}
