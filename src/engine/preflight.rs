//! Checks made before a run is recorded in the store: what recipe validation cannot see
//! without the data or a checkpoint. The data folder must be in the course layout and every
//! image's header readable (`data::check`), the model's classifier must cover the data's
//! identities, the images must reach the model large enough for its downsampling, and a
//! checkpoint a run starts from must be readable and fit the model. Failing any of them is
//! invalid input (exit status 2, nothing written to the store), not a failed run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::{CourseData, DataError};
use crate::model::{ModelError, ShapeRecorder};
use crate::recipe::validate::output_side_bound;
use crate::recipe::{Precision, Recipe};
use crate::train::TrainError;

/// Why a run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The data folder does not fit the course layout (named by path).
    #[error(transparent)]
    Data(DataError),
    /// Images whose header cannot be read, under `data.on_bad_image = "fail"`: all listed.
    #[error("{}", crate::data::check::unreadable_message(.0))]
    UnreadableImages(Vec<crate::data::check::Unreadable>),
    /// The built-in data set could not be generated: a run-time failure, not bad input.
    #[error(transparent)]
    Generate(DataError),
    /// `model.num_classes` smaller than the data's identity count.
    #[error(
        "model.num_classes = {num_classes} is fewer than the {classes} identities of {} (omit model.num_classes to take the data's count; a larger one leaves outputs unused)",
        train_dir.display()
    )]
    TooFewClasses {
        num_classes: usize,
        classes: usize,
        train_dir: PathBuf,
    },
    /// Images that reach the model smaller than it can take.
    #[error(
        "transforms.{split}: the images are not resized (no resize or crop sets their size), and {} is {width}x{height} px, too small: {why}; add a resize or crop to transforms.{split}",
        image.display()
    )]
    InputTooSmall {
        split: &'static str,
        image: PathBuf,
        width: u32,
        height: u32,
        why: String,
    },
    /// A `train.device` this build or this machine cannot use (`cuda` without the feature).
    #[error("{0}")]
    Device(String),
    /// A checkpoint that cannot be read or does not fit the model (names the file).
    #[error(transparent)]
    Checkpoint(TrainError),
    #[error(transparent)]
    Model(ModelError),
}

impl PreflightError {
    /// Whether this is the user's input at fault (exit status 2) rather than a run-time
    /// failure (1).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, PreflightError::Generate(_))
    }
}

/// The classifier size of a run: `model.num_classes`, or the data's identity count when it
/// is absent. Fewer classes than identities is an error (the labels would index past the
/// classifier); more is allowed (outputs no training label uses, as a head sized for a
/// larger set of identities).
pub fn num_classes(recipe: &Recipe, data: &CourseData) -> Result<usize, PreflightError> {
    let classes = data.classes.len();
    match recipe.model.num_classes {
        None => Ok(classes),
        Some(n) if n >= classes => Ok(n),
        Some(n) => Err(PreflightError::TooFewClasses {
            num_classes: n,
            classes,
            train_dir: data.root.join("classification").join("train"),
        }),
    }
}

/// "generated the built-in data set DIR: N images, X MB, in T s on K threads".
pub fn generated_notice(s: &crate::data::synth::SynthSummary) -> String {
    summary_notice("generated the built-in data set", s)
}

/// `what DIR: N images of P px, X MB, in T s on K threads` for a generated synthetic set.
pub fn summary_notice(what: &str, s: &crate::data::synth::SynthSummary) -> String {
    let images = s.train_images
        + s.dev_images
        + s.test_images
        + s.known_images
        + s.unknown_dev_images
        + s.unknown_test_images;
    format!(
        "{what} {}: {images} images of {} px, {:.1} MB, in {:.1} s on {} threads{}",
        s.root.display(),
        s.size,
        s.bytes as f64 / 1e6,
        s.seconds,
        rayon::current_num_threads(),
        if s.resumed_images > 0 {
            format!(
                " ({} kept from an interrupted generation)",
                s.resumed_images
            )
        } else {
            String::new()
        }
    )
}

/// What the checks need to know of a data set, read once per data set.
struct DataFacts {
    data: CourseData,
    /// The images whose header cannot be read.
    unreadable: Vec<crate::data::check::Unreadable>,
    /// The first training image's width and height, read on demand.
    first_image: Option<Option<(PathBuf, u32, u32)>>,
}

/// Runs the checks, reading each data set once (a sweep's runs mostly share one).
#[derive(Default)]
pub struct Preflight {
    data: HashMap<String, DataFacts>,
    /// Where the data checks show their progress (none: silent).
    reporter: Option<crate::engine::progress::Reporter>,
    /// Warnings about the data sets read since the last call (leakage between splits).
    warnings: Vec<String>,
    /// The built-in data sets these checks generated (for the caller to report).
    generated: Vec<crate::data::synth::SynthSummary>,
}

impl Preflight {
    /// Checks that show the progress of their data passes (headers, content hashes).
    pub fn with_reporter(reporter: &crate::engine::progress::Reporter) -> Preflight {
        Preflight {
            reporter: Some(reporter.clone()),
            ..Default::default()
        }
    }

    /// A progress display of a data pass, silent without a reporter.
    fn task(&self, what: &str, total: u64) -> crate::engine::progress::TaskProgress {
        match &self.reporter {
            Some(r) => r.task(what, "images", total),
            None => crate::engine::progress::Reporter::silent().task(what, "images", total),
        }
    }

    fn facts(&mut self, recipe: &Recipe) -> Result<&mut DataFacts, PreflightError> {
        let key = serde_json::to_string(&recipe.data).unwrap_or_default();
        if !self.data.contains_key(&key) {
            let (root, made) =
                crate::data::resolve_root_generating(&recipe.data).map_err(|e| match e {
                    DataError::MissingFolder(_) => PreflightError::Data(e),
                    other => PreflightError::Generate(other),
                })?;
            self.generated.extend(made);
            let data = CourseData::open(&root).map_err(PreflightError::Data)?;
            // leakage between splits is a warning: the run may be what the user wants
            let images = crate::data::check::all_images(&data).len() as u64;
            let hashing = self.task("data check: content hashes", images);
            let leakage = crate::data::fingerprint(&root).and_then(|fp| {
                crate::data::leakage::find_counted(&data, &fp, &|n, _| hashing.set(n))
            });
            hashing.finish();
            if let Ok(l) = leakage {
                self.warnings.extend(
                    l.lines()
                        .into_iter()
                        .map(|line| format!("{}: {line}", root.display())),
                );
            }
            // the header pass, where an unreadable image stops the run (`skip` leaves them to
            // the loader)
            let unreadable = match recipe.data.on_bad_image {
                crate::recipe::BadImagePolicy::Fail => {
                    let headers = self.task("data check: image headers", images);
                    let read = std::sync::atomic::AtomicU64::new(0);
                    let bad = crate::data::check::unreadable_images(&data, &|| {
                        headers.set(read.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
                    });
                    headers.finish();
                    bad
                }
                _ => Vec::new(),
            };
            self.data.insert(
                key.clone(),
                DataFacts {
                    data,
                    unreadable,
                    first_image: None,
                },
            );
        }
        Ok(self.data.get_mut(&key).expect("inserted above"))
    }

    /// One line per built-in data set generated since the last call: where, how many images,
    /// how large, how long.
    pub fn generated_notices(&mut self) -> Vec<String> {
        self.take_generated().iter().map(generated_notice).collect()
    }

    /// Warnings about the data (leakage between splits) since the last call, to report
    /// before training.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The built-in data sets generated since the last call, to report.
    pub fn take_generated(&mut self) -> Vec<crate::data::synth::SynthSummary> {
        std::mem::take(&mut self.generated)
    }

    /// Checks a run's recipe against its data: the classifier covers the identities, and
    /// images the transforms do not resize are large enough for the model (checked on the
    /// first training image; recipe validation covers resized and built-in images).
    pub fn check(&mut self, recipe: &Recipe) -> Result<(), PreflightError> {
        let device = recipe.train.device.as_str();
        if device == "auto" && recipe.train.precision != Precision::F32 {
            if let Some(why) = crate::engine::gpu_unavailable_reason() {
                return Err(PreflightError::Device(format!(
                    "train.device = \"auto\" found no GPU here ({why}), and train.precision = \"{}\" needs one: set train.precision = \"f32\" to train on the CPU, or run on a machine with a GPU and a CUDA build",
                    format!("{:?}", recipe.train.precision).to_lowercase()
                )));
            }
        }
        if !device.eq_ignore_ascii_case("cpu") && device != "auto" {
            crate::engine::device(device).map_err(|e| PreflightError::Device(e.to_string()))?;
        }
        let facts = self.facts(recipe)?;
        num_classes(recipe, &facts.data)?;
        if recipe.data.on_bad_image == crate::recipe::BadImagePolicy::Fail
            && !facts.unreadable.is_empty()
        {
            return Err(PreflightError::UnreadableImages(facts.unreadable.clone()));
        }
        let min = crate::model::min_input_side(&recipe.model);
        if min <= 1 {
            return Ok(());
        }
        for (split, list) in [
            ("train", &recipe.transforms.train),
            ("eval", &recipe.transforms.eval),
        ] {
            // Only a list that keeps the images' own size depends on them.
            if output_side_bound(list, None).is_some() || output_side_bound(list, Some(1)).is_none()
            {
                continue;
            }
            let first = facts.first_image.get_or_insert_with(|| {
                let path = facts.data.train.first()?.path.clone();
                // an unreadable image is the loader's business (`data.on_bad_image`)
                let (w, h) = crate::data::loader::dimensions(&path)?;
                Some((path, w, h))
            });
            if let Some((image, width, height)) = first {
                if (*width).min(*height) < min {
                    return Err(PreflightError::InputTooSmall {
                        split,
                        image: image.clone(),
                        width: *width,
                        height: *height,
                        why: crate::model::min_input_reason(&recipe.model),
                    });
                }
            }
        }
        Ok(())
    }

    /// The data checks `runner validate` makes: the folder's layout and every image's header
    /// (under `on_bad_image = "fail"`), and the classifier against its identities. The
    /// built-in set is not generated for this: it is checked when a run needs it.
    pub fn check_data(&mut self, recipe: &Recipe) -> Result<(), PreflightError> {
        if recipe.data.root == "synth" {
            return Ok(());
        }
        let facts = self.facts(recipe)?;
        num_classes(recipe, &facts.data)?;
        if recipe.data.on_bad_image == crate::recipe::BadImagePolicy::Fail
            && !facts.unreadable.is_empty()
        {
            return Err(PreflightError::UnreadableImages(facts.unreadable.clone()));
        }
        Ok(())
    }

    /// Checks a checkpoint a new run starts from: it reads back intact (format, checksum)
    /// and its model tensors have the names and shapes of the model `recipe` builds.
    pub fn check_checkpoint(&mut self, recipe: &Recipe, path: &Path) -> Result<(), PreflightError> {
        let n = num_classes(recipe, &self.facts(recipe)?.data)?;
        let ck =
            crate::train::checkpoint::read_checkpoint(path).map_err(PreflightError::Checkpoint)?;
        let rec = ShapeRecorder::default();
        let vb = rec.var_builder();
        let model =
            crate::model::build(&recipe.model, n, vb.clone()).map_err(PreflightError::Model)?;
        crate::train::margin::MarginHead::build(
            &recipe.loss,
            vb.pp("margin_head"),
            model.embedding_dim(),
            n,
        )
        .map_err(|e| PreflightError::Model(ModelError::Candle(e)))?;
        let shapes = rec.entries();
        crate::train::checkpoint::check_model_shapes(
            &ck.model,
            shapes
                .iter()
                .map(|(name, dims)| (name.as_str(), dims.as_slice())),
        )
        .map_err(|e| {
            PreflightError::Checkpoint(TrainError::Checkpoint {
                path: path.to_path_buf(),
                msg: format!("{e} (the recipe's model differs from the one that wrote it)"),
            })
        })
    }
}
