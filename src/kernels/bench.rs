//! Timing of the depthwise kernel against Candle's grouped `conv2d` (forward and backward).

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use serde::Serialize;

use super::{depthwise_conv2d, DwParams};

/// Median milliseconds of the project kernel and of Candle's grouped conv for one shape.
#[derive(Debug, Clone, Serialize)]
pub struct DwBench {
    /// (N, C, H, W, K)
    pub shape: (usize, usize, usize, usize, usize),
    pub ours_forward_ms: f64,
    pub ours_backward_ms: f64,
    pub candle_forward_ms: f64,
    pub candle_backward_ms: f64,
    pub speedup_forward: f64,
    pub speedup_backward: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times forward and backward (both gradients of `sum(y * r)`) of a KxK stride-1 "same"
/// depthwise conv on `(n, c, h, w)` random input, `reps` times each (median, after a warm-up).
pub fn bench_depthwise(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    reps: usize,
) -> Result<DwBench> {
    let dev = Device::Cpu;
    let x = Var::randn(0f32, 1.0, (n, c, h, w), &dev)?;
    let wt = Var::randn(0f32, 0.1, (c, 1, k, k), &dev)?;
    let r = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
    let p = DwParams {
        stride: (1, 1),
        padding: (k / 2, k / 2),
    };
    let ours = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, p);
    let theirs = |x: &Tensor, w: &Tensor| x.conv2d(w, k / 2, 1, 1, c);
    let mut res = [(0.0, 0.0); 2];
    for (i, f) in [
        &ours as &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
        &theirs,
    ]
    .iter()
    .enumerate()
    {
        let (mut fw, mut bw) = (Vec::new(), Vec::new());
        for rep in 0..=reps.max(1) {
            let t = Instant::now();
            let y = f(&x, &wt)?;
            let tf = t.elapsed().as_secs_f64() * 1e3;
            let loss = (y * &r)?.sum_all()?;
            let t = Instant::now();
            let g = loss.backward()?;
            let tb = t.elapsed().as_secs_f64() * 1e3;
            if g.get(&wt).is_none() || g.get(&x).is_none() {
                candle_core::bail!("bench_depthwise: missing gradient")
            }
            if rep > 0 {
                fw.push(tf);
                bw.push(tb);
            }
        }
        res[i] = (median(fw), median(bw));
    }
    Ok(DwBench {
        shape: (n, c, h, w, k),
        ours_forward_ms: res[0].0,
        ours_backward_ms: res[0].1,
        candle_forward_ms: res[1].0,
        candle_backward_ms: res[1].1,
        speedup_forward: res[1].0 / res[0].0,
        speedup_backward: res[1].1 / res[0].1,
    })
}
