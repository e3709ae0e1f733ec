//! The batch loader: decodes and augments on a worker pool, prefetches batches on a background
//! thread while the model trains, and yields Candle tensors (N, C, H, W) f32. Output depends only
//! on (seed, epoch, sample index), never on the thread count.

use super::layout::Sample;
use super::transforms::{sample_rng, ImageTensor, Pipeline};
use super::DataError;
use crate::recipe::{BadImagePolicy, DataConfig};
use candle_core::{Device, Tensor};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, OnceLock};

/// How a loader batches, orders and decodes.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle each epoch with an RNG from (seed, epoch) (training); fixed order otherwise.
    pub shuffle: bool,
    /// Drop the last partial batch (training only; eval keeps it).
    pub drop_last: bool,
    pub seed: u64,
    /// Worker threads; `None` = all cores.
    pub num_workers: Option<usize>,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Keep decoded images in memory across epochs.
    pub cache: bool,
    pub on_bad_image: BadImagePolicy,
}

impl LoaderConfig {
    /// Training: shuffled, last partial batch dropped.
    pub fn train(data: &DataConfig, batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            seed,
            num_workers: data.num_workers,
            prefetch: 2,
            cache: data.cache,
            on_bad_image: data.on_bad_image,
        }
    }

    /// Evaluation: fixed order, every sample kept.
    pub fn eval(data: &DataConfig, batch_size: usize) -> Self {
        LoaderConfig {
            shuffle: false,
            drop_last: false,
            ..Self::train(data, batch_size, 0)
        }
    }
}

/// An image the loader skipped under `on_bad_image = "skip"`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedImage {
    pub path: PathBuf,
    pub error: String,
}

impl std::fmt::Display for SkippedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// One batch: images (N, C, H, W) f32 on the loader's device, labels (N) u32, and the dataset
/// indices of the samples (skipped bad images are absent).
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

struct RawBatch {
    shape: (usize, usize, usize),
    data: Vec<f32>,
    labels: Vec<u32>,
    indices: Vec<usize>,
}

struct Shared {
    items: Vec<(PathBuf, u32)>,
    pipeline: Pipeline,
    cfg: LoaderConfig,
    pool: rayon::ThreadPool,
    cache: Vec<OnceLock<Arc<RgbImage>>>,
    /// Skipped images: path -> error.
    bad: Mutex<BTreeMap<PathBuf, String>>,
}

/// An image file's width and height from its header, by its content (a PNG named `.jpg` is
/// read as the PNG it is, as `decode` reads it).
pub fn dimensions(path: &Path) -> Option<(u32, u32)> {
    image::ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// Decodes an image file to RGB, naming the path on failure.
pub fn decode(path: &Path) -> Result<RgbImage, DataError> {
    let bad = |msg: String| DataError::BadImage {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if let Some(img) = colour_jpeg(&bytes).map_err(bad)? {
        return Ok(img);
    }
    // as `ImageReader::open`: the extension's format unless the content says otherwise
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let reader = reader
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    Ok(reader.decode().map_err(|e| bad(e.to_string()))?.into_rgb8())
}

/// Largest decoded image accepted, in bytes: the `image` crate's default allocation limit
/// (Pillow refuses such images too). A damaged header claiming 60000x60000 pixels is an
/// unreadable image, not an allocation that aborts the process.
const MAX_DECODED_BYTES: usize = 512 << 20;

/// A colour (YCbCr or RGB) JPEG decoded by zune-jpeg straight into an RGB buffer, with the
/// options the `image` crate uses (so the pixels are the ones `image` would give); `None` for
/// anything else (other formats, grey or CMYK JPEGs, damaged files), which `decode` then hands
/// to `image` for the same result or its error message.
pub fn decode_jpeg_rgb(bytes: &[u8]) -> Option<RgbImage> {
    colour_jpeg(bytes).ok().flatten()
}

/// `decode_jpeg_rgb`, telling a damaged colour JPEG (`Err`: truncated data, a size above
/// [`MAX_DECODED_BYTES`]) from one this path does not take (`Ok(None)`). Strict: a file cut
/// short is an error, as Pillow's "image file is truncated", not rows of filler.
fn colour_jpeg(bytes: &[u8]) -> Result<Option<RgbImage>, String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(None);
    }
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    if dec.decode_headers().is_err() {
        return Ok(None); // `image` names what is wrong with the header
    }
    if !matches!(
        dec.input_colorspace(),
        Some(ColorSpace::YCbCr | ColorSpace::RGB)
    ) {
        return Ok(None);
    }
    let (Some((w, h)), Some(size)) = (dec.dimensions(), dec.output_buffer_size()) else {
        return Ok(None);
    };
    if w.saturating_mul(h).saturating_mul(3) > MAX_DECODED_BYTES {
        return Err(format!(
            "{w}x{h} pixels: above the {} MiB decoding limit (a damaged header?)",
            MAX_DECODED_BYTES >> 20
        ));
    }
    if size != w * h * 3 {
        return Ok(None);
    }
    let mut out = vec![0u8; size];
    dec.decode_into(&mut out)
        .map_err(|e| format!("damaged JPEG data: {e}"))?;
    Ok(RgbImage::from_raw(w as u32, h as u32, out))
}

/// Asks the kernel for transparent huge pages under a large buffer (a batch above the
/// allocator's mmap threshold, whose pages may be new to the heap), so that it is faulted in
/// 2 MiB at a time instead of 4 KiB. Only advice: nothing changes where the kernel does not
/// take it. Smaller buffers come from the heap, already faulted in, and are left alone.
fn advise_huge_pages(buf: &mut [f32]) {
    #[cfg(target_os = "linux")]
    if std::mem::size_of_val(buf) >= crate::kernels::alloc::MMAP_THRESHOLD {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let a = start.next_multiple_of(HUGE);
        let b = end & !(HUGE - 1);
        if b > a {
            // SAFETY: [a, b) lies inside `buf`'s allocation; MADV_HUGEPAGE changes no contents.
            unsafe {
                libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

impl Shared {
    fn image(&self, i: usize) -> Result<Arc<RgbImage>, DataError> {
        let path = &self.items[i].0;
        if self.cfg.cache {
            if let Some(img) = self.cache[i].get() {
                return Ok(img.clone());
            }
            let img = Arc::new(decode(path)?);
            let _ = self.cache[i].set(img.clone());
            Ok(img)
        } else {
            Ok(Arc::new(decode(path)?))
        }
    }

    /// The decoded image, or `None` for an unreadable one skipped by the policy.
    fn load(&self, i: usize) -> Result<Option<Arc<RgbImage>>, DataError> {
        match self.image(i) {
            Ok(img) => Ok(Some(img)),
            Err(e) => match self.cfg.on_bad_image {
                BadImagePolicy::Fail => Err(e),
                BadImagePolicy::Skip => {
                    let error = match e {
                        // the path is the map's key
                        DataError::BadImage { msg, .. } => msg,
                        other => other.to_string(),
                    };
                    if let Ok(mut bad) = self.bad.lock() {
                        bad.entry(self.items[i].0.clone()).or_insert(error);
                    }
                    Ok(None)
                }
            },
        }
    }

    fn sample(&self, i: usize, epoch: u64) -> Result<Option<ImageTensor>, DataError> {
        let Some(img) = self.load(i)? else {
            return Ok(None);
        };
        let mut rng = sample_rng(self.cfg.seed, epoch, i as u64);
        self.pipeline
            .apply_shared(img, &mut rng)
            .map(Some)
            .map_err(|e| match e {
                DataError::Transform { kind, msg } => DataError::Transform {
                    kind,
                    msg: format!("{msg} (image {})", self.items[i].0.display()),
                },
                other => other,
            })
    }

    /// A fused pipeline's sample written straight into its slot of the batch; `false` when
    /// the image was skipped.
    fn sample_into(&self, i: usize, epoch: u64, out: &mut [f32]) -> Result<bool, DataError> {
        let Some(img) = self.load(i)? else {
            return Ok(false);
        };
        let mut rng = sample_rng(self.cfg.seed, epoch, i as u64);
        Ok(self.pipeline.apply_into(&img, &mut rng, out))
    }

    fn batch(&self, idx: &[usize], epoch: u64) -> Result<Option<RawBatch>, DataError> {
        if let Some(shape) = self.pipeline.fused_shape() {
            return self.batch_fused(idx, epoch, shape);
        }
        let outs: Vec<Result<Option<ImageTensor>, DataError>> = self
            .pool
            .install(|| idx.par_iter().map(|&i| self.sample(i, epoch)).collect());
        let mut shape = None;
        let mut data = Vec::new();
        let mut labels = Vec::new();
        let mut indices = Vec::new();
        for (&i, out) in idx.iter().zip(outs) {
            let Some(t) = out? else { continue };
            let s = (t.c, t.h, t.w);
            match shape {
                None => {
                    shape = Some((s, i));
                    data.reserve(idx.len() * t.data.len());
                }
                Some((first, j)) if first != s => {
                    // not a bad file: images of different sizes that nothing resizes
                    return Err(DataError::layout(
                        self.items[i].0.clone(),
                        format!(
                            "transformed to {s:?}, but {} of the same batch to {first:?}: the \
                             images differ in size and the transforms keep it; add a resize or \
                             crop to the transforms",
                            self.items[j].0.display()
                        ),
                    ));
                }
                _ => {}
            }
            data.extend_from_slice(&t.data);
            labels.push(self.items[i].1);
            indices.push(i);
        }
        Ok(shape.map(|(shape, _)| RawBatch {
            shape,
            data,
            labels,
            indices,
        }))
    }

    /// `batch` for a fused pipeline: the workers write into the batch buffer directly (no
    /// per-image tensor, no copy); slots of skipped images are closed up afterwards.
    fn batch_fused(
        &self,
        idx: &[usize],
        epoch: u64,
        (c, h, w): (usize, usize, usize),
    ) -> Result<Option<RawBatch>, DataError> {
        let per = c * h * w;
        let mut data = vec![0f32; idx.len() * per];
        advise_huge_pages(&mut data);
        let kept: Vec<Result<bool, DataError>> = self.pool.install(|| {
            data.par_chunks_mut(per)
                .zip(idx.par_iter())
                .map(|(out, &i)| self.sample_into(i, epoch, out))
                .collect()
        });
        let mut labels = Vec::with_capacity(idx.len());
        let mut indices = Vec::with_capacity(idx.len());
        for (slot, (&i, k)) in idx.iter().zip(kept).enumerate() {
            if !k? {
                continue;
            }
            let n = indices.len();
            if n != slot {
                data.copy_within(slot * per..(slot + 1) * per, n * per);
            }
            labels.push(self.items[i].1);
            indices.push(i);
        }
        if indices.is_empty() {
            return Ok(None);
        }
        data.truncate(indices.len() * per);
        Ok(Some(RawBatch {
            shape: (c, h, w),
            data,
            labels,
            indices,
        }))
    }
}

/// A reusable loader over a fixed list of (path, label) items.
#[derive(Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("items", &self.shared.items.len())
            .field("cfg", &self.shared.cfg)
            .finish()
    }
}

impl Loader {
    pub fn new(
        items: Vec<(PathBuf, u32)>,
        pipeline: Pipeline,
        cfg: LoaderConfig,
    ) -> Result<Self, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::param("train.batch_size", "must be positive"));
        }
        // per-image and per-batch buffers are reused from the heap instead of being mapped
        // and faulted in afresh (training does this when it builds the model)
        crate::kernels::tune_allocator();
        let threads = cfg
            .num_workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("runner-data-{i}"))
            .build()
            .map_err(|e| DataError::Loader(e.to_string()))?;
        let cache = if cfg.cache {
            (0..items.len()).map(|_| OnceLock::new()).collect()
        } else {
            Vec::new()
        };
        Ok(Loader {
            shared: Arc::new(Shared {
                items,
                pipeline,
                cfg,
                pool,
                cache,
                bad: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// A loader over labelled samples (labels as in `CourseData`).
    pub fn from_samples(
        samples: &[Sample],
        pipeline: Pipeline,
        cfg: LoaderConfig,
    ) -> Result<Self, DataError> {
        let items = samples
            .iter()
            .map(|s| (s.path.clone(), s.label as u32))
            .collect();
        Self::new(items, pipeline, cfg)
    }

    /// A loader over unlabelled images (labels all 0), e.g. `test` or `unknown_dev`.
    pub fn from_paths(
        paths: &[PathBuf],
        pipeline: Pipeline,
        cfg: LoaderConfig,
    ) -> Result<Self, DataError> {
        Self::new(
            paths.iter().map(|p| (p.clone(), 0)).collect(),
            pipeline,
            cfg,
        )
    }

    /// Number of items (before skipping bad images).
    pub fn len(&self) -> usize {
        self.shared.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.items.is_empty()
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.len(), self.shared.cfg.batch_size);
        if self.shared.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The (path, label) of dataset index `i`.
    pub fn item(&self, i: usize) -> Option<&(PathBuf, u32)> {
        self.shared.items.get(i)
    }

    /// Distinct bad images skipped so far (`on_bad_image = "skip"`).
    pub fn skipped(&self) -> usize {
        self.shared.bad.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// The images skipped so far, by path, with the reason.
    pub fn bad_images(&self) -> Vec<SkippedImage> {
        self.shared
            .bad
            .lock()
            .map(|b| {
                b.iter()
                    .map(|(path, error)| SkippedImage {
                        path: path.clone(),
                        error: error.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The sample order of an epoch.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if self.shared.cfg.shuffle {
            let mut key = [0u8; 32];
            key[0..8].copy_from_slice(&self.shared.cfg.seed.to_le_bytes());
            key[8..16].copy_from_slice(&epoch.to_le_bytes());
            key[24..32].copy_from_slice(b"shuffle!");
            order.shuffle(&mut ChaCha8Rng::from_seed(key));
        }
        order
    }

    /// Starts producing the batches of `epoch` in the background.
    pub fn epoch(&self, epoch: u64, device: &Device) -> EpochIter {
        let order = self.order(epoch);
        let b = self.shared.cfg.batch_size;
        let mut batches: Vec<Vec<usize>> = order.chunks(b).map(|c| c.to_vec()).collect();
        if self.shared.cfg.drop_last && batches.last().is_some_and(|l| l.len() < b) {
            batches.pop();
        }
        let (tx, rx) = sync_channel(self.shared.cfg.prefetch.max(1));
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("runner-data-feed".into())
            .spawn(move || {
                for idx in batches {
                    match shared.batch(&idx, epoch) {
                        Ok(None) => continue,
                        Ok(Some(raw)) => {
                            if tx.send(Ok(raw)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map(|_| EpochIter {
                rx: Some(rx),
                device: device.clone(),
                spawn_error: None,
            })
            .unwrap_or_else(|e| EpochIter {
                rx: None,
                device: device.clone(),
                spawn_error: Some(e.to_string()),
            })
    }
}

/// The batches of one epoch, in order.
pub struct EpochIter {
    rx: Option<Receiver<Result<RawBatch, DataError>>>,
    device: Device,
    spawn_error: Option<String>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.spawn_error.take() {
            return Some(Err(DataError::Loader(e)));
        }
        let raw = self.rx.as_ref()?.recv().ok()?;
        Some(raw.and_then(|r| {
            let n = r.labels.len();
            let (c, h, w) = r.shape;
            let images = Tensor::from_vec(r.data, (n, c, h, w), &self.device)?;
            let labels = Tensor::from_vec(r.labels, n, &self.device)?;
            Ok(Batch {
                images,
                labels,
                indices: r.indices,
            })
        }))
    }
}
