//! Saving a model as safetensors and loading it back by name (`init_from`), with errors that
//! list missing and mismatched names.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use runner::model::{build, load_init_from, load_init_from_partial, ForwardCtx, ModelError};
use runner::recipe::{BlockNorm, LayerScale, ModelConfig, ModelKind};

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
