//! Cross-entropy with label smoothing and its gradient against PyTorch
//! (tests/fixtures/reference/cross_entropy.json, float64), plus the float32 path.

use candle_core::{DType, Device, Tensor, Var};
use runner::train::loss::cross_entropy;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference/cross_entropy.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect()
}

fn case_tensors(case: &Value, dtype: DType) -> (Var, Tensor, Vec<Vec<f64>>) {
    let logits = matrix(&case["logits"]);
    let (b, c) = (logits.len(), logits[0].len());
    let flat: Vec<f64> = logits.concat();
    let x = Tensor::from_vec(flat, (b, c), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("logits");
    let targets: Vec<u32> = case["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t.as_u64().expect("target") as u32)
        .collect();
    let t = Tensor::new(targets.as_slice(), &Device::Cpu).expect("targets");
    (
        Var::from_tensor(&x).expect("var"),
        t,
        matrix(&case["grad_logits"]),
    )
}

fn check(dtype: DType, loss_tol: f64, grad_tol: f64) {
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let eps = case["label_smoothing"].as_f64().expect("eps");
        let (x, t, want_grad) = case_tensors(case, dtype);
        let loss = cross_entropy(x.as_tensor(), &t, eps).expect("loss");
        let got = loss
            .to_dtype(DType::F64)
            .and_then(|l| l.to_scalar::<f64>())
            .expect("scalar");
        let want = case["mean_loss"].as_f64().expect("mean_loss");
        assert!(
            (got - want).abs() <= loss_tol * want.abs(),
            "eps {eps} {dtype:?}: loss {got} vs PyTorch {want}"
        );
        let grads = loss.backward().expect("backward");
        let g = grads
            .get(x.as_tensor())
            .expect("gradient w.r.t. logits")
            .to_dtype(DType::F64)
            .and_then(|g| g.to_vec2::<f64>())
            .expect("grad");
        for (r, (gr, wr)) in g.iter().zip(&want_grad).enumerate() {
            for (c, (a, b)) in gr.iter().zip(wr).enumerate() {
                assert!(
                    (a - b).abs() <= grad_tol,
                    "eps {eps} {dtype:?}: grad[{r}][{c}] {a} vs PyTorch {b}"
                );
            }
        }
    }
}

#[test]
fn loss_and_gradient_match_pytorch_in_f64() {
    check(DType::F64, 1e-12, 1e-14);
}

#[test]
fn loss_and_gradient_match_pytorch_in_f32() {
    check(DType::F32, 1e-6, 1e-7);
}

#[test]
fn u32_and_i64_targets_agree_and_bad_shapes_fail() {
    let x = Tensor::new(&[[0.5f32, -1.0, 2.0], [1.0, 1.0, 0.0]], &Device::Cpu).expect("x");
    let t32 = Tensor::new(&[2u32, 0], &Device::Cpu).expect("t");
    let t64 = Tensor::new(&[2i64, 0], &Device::Cpu).expect("t");
    let a = cross_entropy(&x, &t32, 0.1)
        .and_then(|l| l.to_scalar::<f32>())
        .expect("a");
    let b = cross_entropy(&x, &t64, 0.1)
        .and_then(|l| l.to_scalar::<f32>())
        .expect("b");
    assert_eq!(a, b);
    let bad = Tensor::new(&[1u32, 0, 2], &Device::Cpu).expect("bad");
    assert!(cross_entropy(&x, &bad, 0.0).is_err());
}
