//! `runner bench train`: the time of one training step (forward, backward, optimizer step)
//! on random input at the recipe's image size and batch size, and the process's peak memory
//! (on CUDA also the GPU's: the high-water mark of the device's memory pool, which Candle's
//! allocations come from).
//! `runner bench leaderboard`: leaderboard latency over a large synthetic store.

use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::init::{named_vars, SeededVarMap};
use super::EngineError;
use crate::model::ForwardCtx;
use crate::recipe::Recipe;
use crate::train::precision::{MixedPrecision, StepVerdict};
use crate::train::{loss, optim};

#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub model: String,
    pub image_size: u32,
    pub batch_size: usize,
    pub steps: usize,
    pub images_per_sec: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub step_ms: f64,
    pub peak_rss_mb: f64,
    /// Resident memory once the model, optimizer and batch are built, before the first step
    /// (MiB): `peak_rss_mb` minus this is the steps' working set.
    pub rss_after_build_mb: f64,
    pub threads: usize,
    /// `train.device` and `train.precision` the step ran with.
    pub device: String,
    pub precision: String,
    /// CUDA only: the GPU's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// CUDA only: the most GPU memory in use at once during the steps, in MiB (the default
    /// memory pool's high-water mark; without one, the device's used memory sampled after
    /// each phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_peak_mb: Option<f64>,
    /// CUDA only: kernel launches per step (median), Candle's and the project's; cuBLAS and
    /// cuDNN calls are not counted. With the step time, whether the step is bound by the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launches_per_step: Option<f64>,
    /// With `profile`: where a timed step's wall time went, operation by operation (Candle's
    /// storage operations and the project's custom ops by name), longest first, and last the
    /// time outside every operation (graph bookkeeping, allocation and freeing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<OpTime>>,
}

/// One operation's share of a training step (`runner bench train --profile`).
#[derive(Debug, Clone, Serialize)]
pub struct OpTime {
    pub op: String,
    pub calls_per_step: f64,
    pub ms_per_step: f64,
    /// Of the step's wall time (forward, backward and optimizer).
    pub share: f64,
}

/// The table `candle_core::op_profile` recorded over `steps` steps of `total_ms` in all.
fn op_table(
    rows: Vec<(&'static str, u64, std::time::Duration)>,
    steps: usize,
    total_ms: f64,
) -> Vec<OpTime> {
    let n = steps.max(1) as f64;
    let mut out: Vec<OpTime> = rows
        .into_iter()
        .map(|(op, calls, d)| OpTime {
            op: op.to_string(),
            calls_per_step: calls as f64 / n,
            ms_per_step: d.as_secs_f64() * 1e3 / n,
            share: d.as_secs_f64() * 1e3 / total_ms.max(1e-9),
        })
        .collect();
    let inside: f64 = out.iter().map(|o| o.ms_per_step).sum();
    let per_step = total_ms / n;
    out.push(OpTime {
        op: "(outside the operations)".into(),
        calls_per_step: 0.0,
        ms_per_step: (per_step - inside).max(0.0),
        share: ((per_step - inside) / per_step.max(1e-9)).max(0.0),
    });
    out
}

/// GPU memory of a CUDA device: its name, and a peak in-use figure (MiB) since `reset`.
struct GpuMemory {
    #[cfg(feature = "cuda")]
    dev: candle_core::CudaDevice,
    sampled_peak: f64,
}

impl GpuMemory {
    fn of(device: &candle_core::Device) -> Option<GpuMemory> {
        match device {
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(d) => {
                let m = GpuMemory {
                    dev: d.clone(),
                    sampled_peak: 0.0,
                };
                m.pool_high_water(true);
                Some(m)
            }
            _ => None,
        }
    }

    fn name(&self) -> Option<String> {
        #[cfg(feature = "cuda")]
        {
            self.dev.cuda_stream().context().name().ok()
        }
        #[cfg(not(feature = "cuda"))]
        None
    }

    /// The default memory pool's "used" high-water mark in MiB (`reset`: set it to zero).
    fn pool_high_water(&self, reset: bool) -> Option<f64> {
        #[cfg(feature = "cuda")]
        {
            use candle_core::cuda_backend::cudarc::driver::sys;
            let stream = self.dev.cuda_stream();
            let ctx = stream.context();
            ctx.bind_to_thread().ok()?;
            let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
            let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
            let mut v: u64 = 0;
            // SAFETY: plain driver queries on this context's device, with valid out-pointers.
            unsafe {
                if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                    != sys::CUresult::CUDA_SUCCESS
                {
                    return None;
                }
                if reset {
                    sys::cuMemPoolSetAttribute(pool, attr, &mut v as *mut u64 as *mut _);
                }
                if sys::cuMemPoolGetAttribute(pool, attr, &mut v as *mut u64 as *mut _)
                    != sys::CUresult::CUDA_SUCCESS
                {
                    return None;
                }
            }
            Some(v as f64 / (1024.0 * 1024.0))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = reset;
            None
        }
    }

    /// Samples the device's memory in use (all of it, other processes included).
    fn sample(&mut self) {
        #[cfg(feature = "cuda")]
        if let Ok((free, total)) = self.dev.cuda_stream().context().mem_get_info() {
            let used = (total - free) as f64 / (1024.0 * 1024.0);
            self.sampled_peak = self.sampled_peak.max(used);
        }
    }

    fn peak_mb(&self) -> f64 {
        match self.pool_high_water(false) {
            Some(v) if v > 0.0 => v,
            _ => self.sampled_peak,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// Resident memory of this process now (VmRSS), in MiB.
pub fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

/// A kB line of /proc/self/status (`key` with its colon), in MiB; NaN where there is none.
fn proc_status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Times `steps` training steps (after one warm-up step); medians per phase. With `profile`,
/// also the time of every operation over the timed steps ([`TrainBench::ops`]).
pub fn bench_train(
    recipe: &Recipe,
    num_classes: usize,
    steps: usize,
    profile: bool,
) -> Result<TrainBench, EngineError> {
    let device = super::device(&recipe.train.device)?;
    let seeded = SeededVarMap::new(VarMap::new(), recipe.train.seed);
    let model = crate::model::build(&recipe.model, num_classes, seeded.var_builder(&device))?;
    let mut opt = optim::build(&recipe.optimizer, named_vars(&seeded.varmap))?;
    let (b, s) = (recipe.train.batch_size, recipe.data.image_size as usize);
    let mut rng = ChaCha8Rng::seed_from_u64(recipe.train.seed);
    let x: Vec<f32> = (0..b * 3 * s * s)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let y: Vec<u32> = (0..b)
        .map(|_| rng.random_range(0..num_classes as u32))
        .collect();
    let x = Tensor::from_vec(x, (b, 3, s, s), &device)?;
    let y = Tensor::from_vec(y, b, &device)?;
    let mut precision = MixedPrecision::new(recipe.train.precision);
    let vars: Vec<_> = named_vars(&seeded.varmap)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    // the model, its optimizer and the batch are built: what the steps add is the training
    // working set (peak minus this)
    let rss_after_build = rss_mb();
    let (mut fw, mut bw, mut st) = (Vec::new(), Vec::new(), Vec::new());
    let mut launches = Vec::new();
    let mut gpu_mem = GpuMemory::of(&device);
    let mut timed_ms = 0.0;
    for i in 0..steps + 1 {
        if profile && i == 1 {
            candle_core::op_profile::start();
        }
        let launched = launch_count();
        let t0 = Instant::now();
        let mut ctx = ForwardCtx::train(i as u64);
        let logits = precision.output(&model.forward(&precision.input(&x)?, &mut ctx)?)?;
        let l = loss::cross_entropy(&logits, &y, recipe.loss.label_smoothing)?;
        let loss_v = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        device.synchronize()?;
        let t1 = Instant::now();
        if let Some(m) = gpu_mem.as_mut() {
            m.sample();
        }
        let mut grads = precision.backward(&l)?;
        device.synchronize()?;
        let t2 = Instant::now();
        if let Some(m) = gpu_mem.as_mut() {
            m.sample();
        }
        if precision.after_backward(&mut grads, &vars, loss_v)? == StepVerdict::Apply {
            opt.step(&grads, recipe.optimizer.lr())?;
        }
        device.synchronize()?;
        let t3 = Instant::now();
        if i > 0 {
            launches.push((launch_count() - launched) as f64);
            fw.push((t1 - t0).as_secs_f64() * 1e3);
            bw.push((t2 - t1).as_secs_f64() * 1e3);
            st.push((t3 - t2).as_secs_f64() * 1e3);
            timed_ms += (t3 - t0).as_secs_f64() * 1e3;
        }
    }
    let ops = profile.then(|| op_table(candle_core::op_profile::stop(), steps, timed_ms));
    let (f, bk, sp) = (median(fw), median(bw), median(st));
    Ok(TrainBench {
        model: format!(
            "{:?} {}",
            recipe.model.kind,
            recipe.model.preset.clone().unwrap_or_else(|| format!(
                "depths {:?} dims {:?}",
                recipe.model.depths.clone().unwrap_or_default(),
                recipe.model.dims.clone().unwrap_or_default()
            ))
        )
        .to_lowercase(),
        image_size: recipe.data.image_size,
        batch_size: b,
        steps,
        images_per_sec: b as f64 / ((f + bk + sp) / 1e3),
        forward_ms: f,
        backward_ms: bk,
        step_ms: sp,
        peak_rss_mb: peak_rss_mb(),
        rss_after_build_mb: rss_after_build,
        threads: rayon::current_num_threads(),
        device: recipe.train.device.clone(),
        precision: format!("{:?}", recipe.train.precision).to_lowercase(),
        gpu: gpu_mem.as_ref().and_then(GpuMemory::name),
        gpu_peak_mb: gpu_mem.as_ref().map(GpuMemory::peak_mb),
        launches_per_step: device.is_cuda().then(|| median(launches)),
        ops,
    })
}

/// Kernel launches counted on this thread (CUDA builds; 0 otherwise).
fn launch_count() -> u64 {
    #[cfg(feature = "cuda")]
    {
        candle_core::cuda_backend::launch_count()
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaderboardBench {
    pub runs: usize,
    pub epochs_per_run: usize,
    pub fill_seconds: f64,
    pub leaderboard_ms: f64,
    pub filtered_leaderboard_ms: f64,
    pub best_over_epochs_ms: f64,
}

/// Training fed by the real loader (JPEG decoding and augmentation on worker threads,
/// prefetching) against training on the same batches already in memory.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderBench {
    pub batches: usize,
    pub batch_size: usize,
    pub cached_images_per_sec: f64,
    pub loader_images_per_sec: f64,
    /// loader / cached: 1.0 means the loader never makes the model wait.
    pub ratio: f64,
}

/// Times `batches` training steps on the recipe's real data twice: from the loader, and from
/// the same batches held in memory. Median of `rounds` alternating rounds.
pub fn bench_loader(
    recipe: &Recipe,
    batches: usize,
    rounds: usize,
) -> Result<LoaderBench, EngineError> {
    use super::batches::{BatchSource, Split};
    let device = super::device(&recipe.train.device)?;
    let root = crate::data::resolve_root(&recipe.data)?;
    let data = crate::data::CourseData::open(&root)?;
    let num_classes = recipe.model.num_classes.unwrap_or(data.classes.len());
    let seeded = SeededVarMap::new(VarMap::new(), recipe.train.seed);
    let model = crate::model::build(&recipe.model, num_classes, seeded.var_builder(&device))?;
    let mut opt = optim::build(&recipe.optimizer, named_vars(&seeded.varmap))?;
    let src = BatchSource::new(&data, Split::Train, recipe, &device)?;
    let batches = batches.min(src.num_batches()).max(1);
    let cached: Vec<_> = src
        .epoch(1, 0)?
        .take(batches)
        .map(|r| r.map(|(_, b)| b))
        .collect::<Result<_, _>>()?;
    let mut step = |x: &Tensor, y: &Tensor| -> Result<usize, EngineError> {
        let mut ctx = ForwardCtx::train(0);
        let logits = model.forward(x, &mut ctx)?;
        let l = loss::cross_entropy(&logits, y, recipe.loss.label_smoothing)?;
        let grads = l.backward()?;
        opt.step(&grads, recipe.optimizer.lr())?;
        Ok(y.dim(0)?)
    };
    // Warm-up.
    step(&cached[0].images, &cached[0].labels)?;
    let (mut c, mut l) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        let t = Instant::now();
        let mut n = 0;
        for b in &cached {
            n += step(&b.images, &b.labels)?;
        }
        c.push(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut n = 0;
        for item in src.epoch(2 + round as u32, 0)?.take(batches) {
            let (_, b) = item?;
            n += step(&b.images, &b.labels)?;
        }
        l.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let (cached_ips, loader_ips) = (median(c), median(l));
    Ok(LoaderBench {
        batches,
        batch_size: recipe.train.batch_size,
        cached_images_per_sec: cached_ips,
        loader_images_per_sec: loader_ips,
        ratio: loader_ips / cached_ips,
    })
}
