//! Resolves `data.root`: a folder, or "synth" for the built-in set, generated on first use into
//! `<cache_dir or data>/synth-<hash of the generator parameters and version>`.

use super::synth::{generate, SynthSummary, GENERATOR_VERSION};
use super::DataError;
use crate::recipe::{DataConfig, SynthConfig};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The cache folder name of a synthetic set: `synth-<12 hex digits>`.
pub fn synth_dir_name(cfg: &SynthConfig) -> String {
    let json = serde_json::to_string(cfg).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(format!("v{GENERATOR_VERSION}:").as_bytes());
    h.update(json.as_bytes());
    let hex = hex::encode(h.finalize());
    format!("synth-{}", &hex[..12])
}

/// The data folder a recipe's `[data]` names, generating the synthetic set if needed.
pub fn resolve_root(data: &DataConfig) -> Result<PathBuf, DataError> {
    resolve_root_generating(data).map(|(dir, _)| dir)
}

/// `resolve_root`, with what this call generated (the built-in set, the first time).
pub fn resolve_root_generating(
    data: &DataConfig,
) -> Result<(PathBuf, Option<SynthSummary>), DataError> {
    if data.root == "synth" {
        let base = PathBuf::from(data.cache_dir.as_deref().unwrap_or("data"));
        let dir = base.join(synth_dir_name(&data.synth));
        if dir.join("classification").is_dir() {
            return Ok((dir, None));
        }
        std::fs::create_dir_all(&base).map_err(|e| DataError::io(&base, e))?;
        match generate(&data.synth, &dir) {
            Ok(s) => Ok((dir, Some(s))),
            // another process finished the same set first
            Err(_) if dir.join("classification").is_dir() => Ok((dir, None)),
            Err(e) => Err(e),
        }
    } else {
        let dir = PathBuf::from(&data.root);
        if !dir.is_dir() {
            return Err(DataError::MissingFolder(dir));
        }
        Ok((dir, None))
    }
}
