//! Course data layout, synthetic face generator, transforms and the batch loader.

pub mod bench;
pub mod error;
pub mod fingerprint;
pub mod layout;
pub mod loader;
pub mod nn_baseline;
pub mod preview;
pub mod resolve;
pub mod stats;
pub mod synth;
pub mod transforms;

pub use error::DataError;
pub use fingerprint::fingerprint;
pub use layout::{file_id, list_images, read_pairs, CourseData, Sample};

pub use transforms::{build, sample_rng, ImageTensor, Pipeline};

use crate::recipe::Recipe;

/// The fingerprint of the data a recipe reads: for `root = "synth"` a hash of the generator's
/// parameters (the data is a pure function of them); for a folder a hash of its files.
pub fn fingerprint_for(recipe: &Recipe) -> Result<String, String> {
    if recipe.data.root == "synth" {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"synth\n");
        h.update(serde_json::to_string(&recipe.data.synth).unwrap_or_default().as_bytes());
        return Ok(hex::encode(&h.finalize()[..8]));
    }
    fingerprint(std::path::Path::new(&recipe.data.root)).map_err(|e| e.to_string())
}
