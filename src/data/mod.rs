//! Course data layout, synthetic face generator, transforms and the batch loader.

pub mod bench;
pub use bench::{bench_data, DataBenchReport};
pub mod error;
pub mod fingerprint;
pub mod layout;
pub mod loader;
pub use loader::{Batch, Loader, LoaderConfig};
pub mod nn_baseline;
pub use nn_baseline::raw_pixel_nn_accuracy;
pub mod preview;
pub use preview::{preview, PreviewSummary};
pub mod resolve;
pub use resolve::resolve_root;
pub mod stats;
pub use stats::{stats, DataStats};
pub mod synth;
pub use synth::{generate, SynthSummary, GENERATOR_VERSION};
pub mod transforms;

pub use error::DataError;
pub use fingerprint::fingerprint;
pub use layout::{read_pairs, CourseData, Sample};

pub use transforms::{build, sample_rng, ImageTensor, Pipeline};
