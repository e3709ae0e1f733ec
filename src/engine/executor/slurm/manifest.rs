//! The manifest of a job array: the runs its tasks train, task I the I-th (`runner exec
//! MANIFEST --index I`). JSON, written next to the sbatch script by the submitting machine
//! (temporary file, then renamed), read by each task.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SlurmError;
use crate::engine::runlog::InitSource;
use crate::recipe::Recipe;

/// The format version `runner exec` reads.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub sweep_id: i64,
    /// The recipe file the sweep planned.
    pub recipe: String,
    /// The submitting machine's working directory: tasks run there, so the recipe's relative
    /// paths (data cache, checkpoint folder) mean the same files.
    pub workdir: String,
    pub runs: Vec<ManifestRun>,
}

/// One run of the array.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRun {
    pub run_id: i64,
    pub key: String,
    /// The recipe file it was planned from (a parent's is another file).
    pub recipe_file: String,
    /// The resolved recipe.
    pub recipe: Recipe,
    /// Its record log (in the run's folder).
    pub records: String,
    /// Where `model.init_from = { recipe = ... }` finds the parent's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitSource>,
    /// Halving: the rung epoch the task trains to (it checkpoints there, records the run
    /// `paused` and exits 0); None: to `train.epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_epoch: Option<u32>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, SlurmError> {
        let bad = |msg: String| SlurmError::Manifest {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if m.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "manifest version {} (this runner reads {MANIFEST_VERSION}); submit with the runner the tasks run",
                m.version
            )));
        }
        Ok(m)
    }

    /// Writes the manifest to `path` (a temporary file, fsynced, then renamed).
    pub fn write(&self, path: &Path) -> Result<(), SlurmError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| SlurmError::Manifest {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        write_file(path, &text)
    }
}

/// Writes a file as a temporary file beside it, fsynced, then renamed over it.
pub fn write_file(path: &Path, text: &str) -> Result<(), SlurmError> {
    use std::io::Write;
    let fail = |e: std::io::Error| SlurmError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp: PathBuf = path.with_extension(format!(
        "{}.tmp",
        path.extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail)
}
