//! The run engine: executes one planned run end to end (data, model, optimizer, scheduler,
//! checkpoints, verification, records) and sweeps of runs through an executor: on this
//! machine with claims and resume, or on a Slurm cluster.
//! It composes the pieces of `data`, `model`, `train` and `verify`; it does not know which
//! model, optimizer or scheduler it runs.

pub mod batches;
pub mod bench;
pub mod cost;
pub mod executor;
pub mod init;
pub mod phases;
pub mod picks;
pub mod preflight;
pub mod progress;
pub mod records;
pub mod restore;
pub mod run;
pub mod runlog;
pub mod selftest;
pub mod signals;
pub mod verification;

pub use run::{execute, RunOutcome, RunRequest, StartFrom};

/// Errors of a run at run time (exit status 1), naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error(transparent)]
    Log(#[from] runlog::LogError),
    #[error(transparent)]
    Slurm(#[from] executor::slurm::SlurmError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A search's trial planned from a recipe that no longer plans (it was checked before).
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    #[error("{0}")]
    Other(String),
}

/// Whether this build has CUDA and this machine a GPU it can open (the driver answers and
/// counts at least one device). Asked once per process.
pub fn gpu_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| gpu_unavailable_reason().is_none())
}

/// Why `train.device = "auto"` finds no GPU here, or `None` when it finds one.
pub fn gpu_unavailable_reason() -> Option<String> {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        match CudaContext::device_count() {
            Ok(n) if n > 0 => None,
            Ok(_) => Some("the CUDA driver reports no GPU".into()),
            Err(e) => Some(format!("the CUDA driver did not start ({e})")),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        Some("this runner was built without CUDA".into())
    }
}

/// What a `train.device` name means here: `auto` becomes `cuda` when [`gpu_available`],
/// else `cpu`; other names are returned as they are.
pub fn resolve_device_name(name: &str) -> &str {
    match name {
        "auto" if gpu_available() => "cuda",
        "auto" => "cpu",
        other => other,
    }
}

/// The Candle device a recipe's `train.device` names (`auto`: see [`resolve_device_name`]).
pub fn device(name: &str) -> Result<candle_core::Device, EngineError> {
    match resolve_device_name(name) {
        "cpu" => Ok(candle_core::Device::Cpu),
        other => {
            let ordinal = match other.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest.trim_start_matches(':').parse::<usize>().map_err(|_| {
                    EngineError::Other(format!("train.device: unknown device `{other}`"))
                })?,
                None => {
                    return Err(EngineError::Other(format!(
                    "train.device: unknown device `{other}` (expected auto, cpu, cuda or cuda:N)"
                )))
                }
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(EngineError::Other(format!(
                    "train.device = \"{other}\": this runner was built without CUDA (rebuild with `cargo build --release --features cuda`)"
                )));
            }
            let dev = candle_core::Device::new_cuda(ordinal)?;
            #[cfg(feature = "cuda")]
            if let candle_core::Device::Cuda(d) = &dev {
                crate::kernels::gpu::cuda::configure(d)?;
            }
            Ok(dev)
        }
    }
}

/// This machine's CPU model (`/proc/cpuinfo`'s model name, else the architecture).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// A device as a run records it: `cpu (<CPU model>)`, `cuda:N (<GPU name>)`.
pub fn device_label(device: &candle_core::Device) -> String {
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(d) => {
            let n = match device.location() {
                candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
                _ => 0,
            };
            let name = d.cuda_stream().context().name().unwrap_or_default();
            format!("cuda:{n} ({name})")
        }
        candle_core::Device::Cpu => format!("cpu ({})", cpu_model()),
        other => format!("{:?}", other.location()),
    }
}
