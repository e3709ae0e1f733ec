//! The raw-pixel nearest-neighbour baseline: dev accuracy of 1-NN (L2 on pixels resized to
//! 32x32) against the training images. The synthetic set is built so this stays poor.

use super::loader::SkippedImage;
use super::transforms::resize::resize_bilinear;
use super::{CourseData, DataError};
use rayon::prelude::*;
use std::path::Path;

/// Side the images are resized to before comparing pixels.
pub const NN_SIDE: u32 = 32;

/// An image as a vector of its pixels (resized to `NN_SIDE`), in [0, 1].
pub fn load_vec(path: &Path) -> Result<Vec<f32>, DataError> {
    // decoded as training decodes it (by content, strict JPEG)
    let img = super::loader::decode(path)?;
    let small = resize_bilinear(&img, NN_SIDE, NN_SIDE);
    Ok(small.as_raw().iter().map(|&v| v as f32 / 255.0).collect())
}

/// Pixel vectors in path order (`None`: skipped as unreadable), and the skipped images.
pub type Loaded = (Vec<Option<Vec<f32>>>, Vec<SkippedImage>);

/// Every image of `paths` as a pixel vector, in order. With `skip` (`data.on_bad_image =
/// "skip"`) an unreadable image is `None` and listed; otherwise it fails the whole call.
pub fn load_all(paths: &[&Path], skip: bool) -> Result<Loaded, DataError> {
    let loaded: Vec<Result<Vec<f32>, DataError>> = paths.par_iter().map(|p| load_vec(p)).collect();
    let (mut out, mut skipped) = (Vec::with_capacity(paths.len()), Vec::new());
    for (r, p) in loaded.into_iter().zip(paths) {
        match r {
            Ok(v) => out.push(Some(v)),
            Err(e) if skip => {
                skipped.push(SkippedImage {
                    path: p.to_path_buf(),
                    error: e.to_string(),
                });
                out.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, skipped))
}

/// The paths of a split's samples.
fn paths_of(split: &[super::Sample]) -> Vec<&Path> {
    split.iter().map(|s| s.path.as_path()).collect()
}

/// 1-NN dev accuracy (in [0, 1]) on raw pixels, over the dev images read (with `skip`,
/// unreadable images are left out of both sides and returned).
pub fn raw_pixel_nn_accuracy(
    data: &CourseData,
    skip: bool,
) -> Result<(f64, Vec<SkippedImage>), DataError> {
    let (train, mut skipped) = load_all(&paths_of(&data.train), skip)?;
    let train: Vec<(Vec<f32>, usize)> = train
        .into_iter()
        .zip(&data.train)
        .filter_map(|(v, s)| v.map(|v| (v, s.label)))
        .collect();
    let (dev, dev_skipped) = load_all(&paths_of(&data.dev), skip)?;
    skipped.extend(dev_skipped);
    let queries: Vec<(&Vec<f32>, usize)> = dev
        .iter()
        .zip(&data.dev)
        .filter_map(|(v, s)| v.as_ref().map(|v| (v, s.label)))
        .collect();
    if queries.is_empty() || train.is_empty() {
        return Err(DataError::layout(
            &data.root,
            "no readable dev and training images to score",
        ));
    }
    let correct: usize = queries
        .par_iter()
        .map(|(q, want)| {
            let mut best = (f32::INFINITY, usize::MAX);
            for (v, label) in &train {
                let d: f32 = v.iter().zip(q.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
                if d < best.0 {
                    best = (d, *label);
                }
            }
            usize::from(best.1 == *want)
        })
        .sum();
    Ok((correct as f64 / queries.len() as f64, skipped))
}
