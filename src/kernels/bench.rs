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

/// Median milliseconds of forward + backward (both gradients) of a dense convolution: the
/// project's im2col op against Candle's `conv2d`, runs alternating so load drift hits both.
#[derive(Debug, Clone, Serialize)]
pub struct ConvBench {
    /// (N, C, H, W, O, K, stride, padding)
    pub shape: (usize, usize, usize, usize, usize, usize, usize, usize),
    pub ours_ms: f64,
    pub candle_ms: f64,
    pub speedup: f64,
}

/// Times `reps` alternating forward+backward passes of both implementations.
#[allow(clippy::too_many_arguments)]
pub fn bench_conv(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
    reps: usize,
) -> Result<ConvBench> {
    let dev = Device::Cpu;
    let x = Var::randn(0f32, 1.0, (n, c, h, w), &dev)?;
    let wt = Var::randn(0f32, 0.1, (o, c, k, k), &dev)?;
    let run = |ours: bool| -> Result<f64> {
        let t = Instant::now();
        let y = if ours {
            super::conv2d_im2col(&x, &wt, stride, padding)?
        } else {
            x.conv2d(&wt, padding, stride, 1, 1)?
        };
        let g = y.sqr()?.sum_all()?.backward()?;
        if g.get(&wt).is_none() {
            candle_core::bail!("bench_conv: missing gradient")
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    run(true)?;
    run(false)?;
    for _ in 0..reps.max(1) {
        a.push(run(true)?);
        b.push(run(false)?);
    }
    let (ours, theirs) = (median(a), median(b));
    Ok(ConvBench {
        shape: (n, c, h, w, o, k, stride, padding),
        ours_ms: ours,
        candle_ms: theirs,
        speedup: theirs / ours,
    })
}
