//! Course data layout, synthetic face generator, transforms and the batch loader.

use crate::recipe::Recipe;

/// The fingerprint of the data a recipe reads: for `root = "synth"` a hash of the generator's
/// parameters (the data is a pure function of them); for a folder a hash of its files.
pub fn fingerprint_for(recipe: &Recipe) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    if recipe.data.root == "synth" {
        h.update(b"synth\n");
        h.update(serde_json::to_string(&recipe.data.synth).unwrap_or_default().as_bytes());
        return Ok(hex::encode(&h.finalize()[..8]));
    }
    let root = std::path::Path::new(&recipe.data.root);
    let mut files = Vec::new();
    walk(root, root, &mut files).map_err(|e| format!("{}: {e}", root.display()))?;
    files.sort();
    for (rel, len) in files {
        h.update(format!("{rel}\t{len}\n").as_bytes());
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.push((rel, meta.len()));
        }
    }
    Ok(())
}
