//! A data set's fingerprint: sha256 over its image/CSV files' relative paths and sizes.

use super::DataError;
use sha2::{Digest, Sha256};
use std::path::Path;

fn counts(path: &Path) -> bool {
    super::layout::is_image(path)
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// The course layout's deepest file is `classification/train/<identity>/<image>`: the walk
/// goes no deeper (a folder link back up, `loop -> ..`, ends there).
const MAX_DEPTH: usize = 4;

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<(String, u64)>,
) -> Result<(), DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        if super::layout::is_hidden(&path) {
            continue; // never data (the layout reader skips them too)
        }
        // a dangling link is no file of the set (the layout reader skips it too)
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(root, &path, depth + 1, out)?;
            }
        } else if meta.is_file() && counts(&path) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((rel.join("/"), meta.len()));
        }
    }
    Ok(())
}

/// Hex sha256 over the sorted `relative/path\tsize\n` lines of every image and CSV file under
/// `root`: equal for copies of the same set wherever they live.
pub fn fingerprint(root: &Path) -> Result<String, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingFolder(root.to_path_buf()));
    }
    let mut files = Vec::new();
    walk(root, root, 1, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for (rel, size) in &files {
        h.update(rel.as_bytes());
        h.update(b"\t");
        h.update(size.to_string().as_bytes());
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}
