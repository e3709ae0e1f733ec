//! The raw-pixel nearest-neighbour baseline: dev accuracy of 1-NN (L2 on pixels resized to
//! 32x32) against the training images. The synthetic set is built so this stays poor.

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

/// 1-NN dev accuracy (in [0, 1]) on raw pixels.
pub fn raw_pixel_nn_accuracy(data: &CourseData) -> Result<f64, DataError> {
    if data.dev.is_empty() {
        return Err(DataError::layout(&data.root, "no dev images to score"));
    }
    let train: Vec<(Vec<f32>, usize)> = data
        .train
        .par_iter()
        .map(|s| load_vec(&s.path).map(|v| (v, s.label)))
        .collect::<Result<_, _>>()?;
    let correct: usize = data
        .dev
        .par_iter()
        .map(|s| -> Result<usize, DataError> {
            let q = load_vec(&s.path)?;
            let mut best = (f32::INFINITY, usize::MAX);
            for (v, label) in &train {
                let d: f32 = v.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum();
                if d < best.0 {
                    best = (d, *label);
                }
            }
            Ok(usize::from(best.1 == s.label))
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .sum();
    Ok(correct as f64 / data.dev.len() as f64)
}
