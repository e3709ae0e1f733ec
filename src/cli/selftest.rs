//! `runner selftest`: the GPU path against the CPU on this machine (`engine::selftest`), one
//! line per check as it finishes, so that a run cut short still shows what it measured.
//! Exit status 1 when a check fails.

use std::io::Write;

use super::output::Format;
use super::CliError;
use crate::engine::selftest::{self, Check, Stages};

fn print(c: &Check, format: Format) {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let _ = writeln!(out, "{}", serde_json::to_string(c).unwrap_or_default());
        }
        _ if c.metric == "kernels" => {
            let _ = writeln!(
                out,
                "{:<8} {:<32} {} kernels in the PTX; {}  ok  {:.2}s",
                c.stage,
                c.name,
                c.value,
                c.detail.as_deref().unwrap_or(""),
                c.seconds
            );
        }
        _ if c.metric == "nvrtc_seconds" => {
            let _ = writeln!(
                out,
                "{:<8} {}: {:.2} s ({})",
                c.stage,
                c.name,
                c.value,
                c.detail.as_deref().unwrap_or("")
            );
        }
        _ if c.error.is_some() => {
            let _ = writeln!(
                out,
                "{:<8} {:<48} FAILED: {}  {:.2}s",
                c.stage,
                c.name,
                c.error.as_deref().unwrap_or(""),
                c.seconds
            );
        }
        _ => {
            let verdict = if c.ok { "ok" } else { "FAILED" };
            let bound = if c.metric == "cosine" { ">=" } else { "<=" };
            let _ = writeln!(
                out,
                "{:<8} {:<48} {:<12} {:<10.3e} {bound} {:<8.1e} {:<6} {:.2}s",
                c.stage, c.name, c.metric, c.value, c.limit, verdict, c.seconds
            );
        }
    }
    let _ = out.flush();
}

/// `selftest --versions`: the CUDA version the driver supports and NVRTC's, one line each, and
/// a warning line when NVRTC is newer (a driver refuses PTX of a newer ISA).
pub fn versions() -> Result<(), CliError> {
    #[cfg(feature = "cuda")]
    {
        let (drv, rtc) = crate::kernels::gpu::cuda::versions();
        let show = |v: Option<(i32, i32)>| match v {
            Some((a, b)) => format!("{a}.{b}"),
            None => "not loadable here".to_string(),
        };
        crate::outln!("CUDA driver supports: {}", show(drv));
        crate::outln!("NVRTC: {}", show(rtc));
        if let (Some(d), Some(r)) = (drv, rtc) {
            if r > d {
                crate::outln!(
                    "warning: NVRTC {} is newer than the driver's CUDA {}: the driver refuses the PTX it makes; use an NVRTC of CUDA {} or older",
                    show(rtc),
                    show(drv),
                    show(drv)
                );
            }
        }
        Ok(())
    }
    #[cfg(not(feature = "cuda"))]
    Err(CliError::invalid(
        "selftest --versions: this runner was built without CUDA; build it with `cargo build --release --features cuda`",
    ))
}

/// `archs`: `sm_80`, `sm_90`, ...: NVRTC compiles PTX for the virtual architecture and a
/// CUBIN for the real one.
pub fn run(
    device: &str,
    stages: Stages,
    compile_only: bool,
    archs: &[String],
    format: Format,
) -> Result<(), CliError> {
    if !cfg!(feature = "cuda") {
        return Err(CliError::invalid(
            "selftest: this runner was built without CUDA; build it with `cargo build --release --features cuda` (or scripts/build-cuda.sh), see docs/gpu.md",
        ));
    }
    let mut on_check = |c: &Check| print(c, format);
    let checks = if compile_only {
        selftest::compile(archs, &mut on_check)
    } else {
        selftest::run(device, stages, &mut on_check)
    }
    .map_err(CliError::failed)?;
    let failed = checks.iter().filter(|c| !c.ok).count();
    if format != Format::Json {
        crate::outln!("{} checks, {failed} failed", checks.len());
    }
    if failed > 0 {
        return Err(CliError::failed(format!(
            "selftest: {failed} of {} checks failed",
            checks.len()
        )));
    }
    Ok(())
}
