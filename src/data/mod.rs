//! Course data layout, synthetic face generator, transforms and the batch loader.

pub mod bench;
pub use bench::{bench_data, DataBenchReport};
pub mod check;
pub mod error;
pub mod fingerprint;
pub mod layout;
pub mod leakage;
pub mod loader;
pub use loader::{Batch, Loader, LoaderConfig};
pub mod nn_baseline;
pub use nn_baseline::raw_pixel_nn_accuracy;
pub mod preview;
pub use preview::{preview, PreviewSummary};
pub mod resolve;
pub use resolve::{resolve_root, resolve_root_generating};
pub mod stats;
pub use stats::{identity_counts, stats, DataStats, IdentityCount};
pub mod synth;
pub use synth::{generate, SynthSummary, GENERATOR_VERSION};
pub mod transforms;

pub use error::DataError;
pub use fingerprint::fingerprint;
pub use layout::{file_id, list_images, read_pairs, CourseData, Part, Sample};

pub use transforms::{build, sample_rng, ImageTensor, Pipeline};

use crate::recipe::Recipe;

/// The fingerprint of the data a recipe reads: for `root = "synth"` a hash of the generator's
/// parameters (the data is a pure function of them); for a folder a hash of its files.
pub fn fingerprint_for(recipe: &Recipe) -> Result<String, String> {
    if recipe.data.root == "synth" {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(format!("synth {GENERATOR_VERSION}\n").as_bytes());
        h.update(
            serde_json::to_string(&recipe.data.synth)
                .unwrap_or_default()
                .as_bytes(),
        );
        return Ok(hex::encode(&h.finalize()[..8]));
    }
    fingerprint(std::path::Path::new(&recipe.data.root)).map_err(|e| e.to_string())
}
