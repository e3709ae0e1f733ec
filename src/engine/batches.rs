//! Batches for the engine: the recipe's split (train or dev, or any list of images) through
//! its transform pipeline into NCHW f32 tensors, via `data::loader` (worker threads,
//! prefetch, per-sample RNG from (seed, epoch, index), optional cache, bad-image policy).

use std::path::PathBuf;

use candle_core::Device;

use super::EngineError;
use crate::data::loader::{Batch, Loader, LoaderConfig, SkippedImage};
use crate::data::CourseData;
use crate::recipe::{Recipe, TransformSpec};

/// Which part of the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Dev,
}

/// A split's samples, its pipeline and how to batch them.
pub struct BatchSource {
    loader: Loader,
    device: Device,
}

/// The default eval pipeline when a recipe lists none: to_tensor only.
fn specs_or_default(specs: &[TransformSpec]) -> Vec<TransformSpec> {
    if specs.is_empty() {
        vec![TransformSpec::ToTensor {}]
    } else {
        specs.to_vec()
    }
}

impl BatchSource {
    /// The training split (shuffled per epoch, recipe's train transforms) or the dev split
    /// (fixed order, eval transforms).
    pub fn new(
        data: &CourseData,
        split: Split,
        r: &Recipe,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let (samples, specs, shuffle) = match split {
            Split::Train => (&data.train, &r.transforms.train, true),
            Split::Dev => (&data.dev, &r.transforms.eval, false),
        };
        let items = samples
            .iter()
            .map(|s| (s.path.clone(), s.label as u32))
            .collect();
        Self::build(items, &specs_or_default(specs), shuffle, r, device)
    }

    /// Any list of images with labels, in order, through the eval transforms.
    pub fn eval_items(
        items: Vec<(PathBuf, u32)>,
        r: &Recipe,
        device: &Device,
    ) -> Result<Self, EngineError> {
        Self::build(
            items,
            &specs_or_default(&r.transforms.eval),
            false,
            r,
            device,
        )
    }

    fn build(
        items: Vec<(PathBuf, u32)>,
        specs: &[TransformSpec],
        shuffle: bool,
        r: &Recipe,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let pipeline = crate::data::transforms::build(specs)?;
        let mut cfg = if shuffle {
            LoaderConfig::train(&r.data, r.train.batch_size, r.train.seed)
        } else {
            LoaderConfig::eval(&r.data, r.train.batch_size)
        };
        // Training drops the last partial batch (BatchNorm needs more than one sample), but
        // never the only one.
        cfg.drop_last = shuffle && items.len() > r.train.batch_size;
        Ok(BatchSource {
            loader: Loader::new(items, pipeline, cfg)?,
            device: device.clone(),
        })
    }

    pub fn num_batches(&self) -> usize {
        self.loader.num_batches()
    }

    pub fn is_empty(&self) -> bool {
        self.loader.is_empty()
    }

    /// The images skipped so far as unreadable (`data.on_bad_image = "skip"`).
    pub fn skipped(&self) -> Vec<SkippedImage> {
        self.loader.bad_images()
    }

    /// The batches of an epoch from batch `start` on, numbered.
    pub fn epoch(
        &self,
        epoch: u32,
        start: usize,
    ) -> Result<impl Iterator<Item = Result<(usize, Batch), EngineError>> + 'static, EngineError>
    {
        // Batches before `start` (a resume inside an epoch) are drawn and discarded: the order
        // and augmentation of the rest stay exactly those of an uninterrupted epoch.
        let loader = self.loader.clone();
        Ok(loader
            .epoch(epoch as u64, &self.device)
            .enumerate()
            .skip(start)
            .map(|(i, r)| r.map(|b| (i, b)).map_err(EngineError::from)))
    }
}
