//! `runner data preview`: a PNG grid of training images after the recipe's train transforms
//! (denormalized when the pipeline normalizes), so a user sees what the model sees.

use super::transforms::{build, sample_rng, ImageTensor};
use super::{resolve_root, CourseData, DataError};
use crate::recipe::Recipe;
use image::RgbImage;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewSummary {
    pub path: PathBuf,
    pub images: usize,
    pub columns: usize,
    pub tile_width: usize,
    pub tile_height: usize,
}

/// Converts a CHW tensor back to 8-bit RGB, undoing `normalize` when given.
pub fn tensor_to_image(t: &ImageTensor, normalize: Option<([f32; 3], [f32; 3])>) -> RgbImage {
    let n = t.h * t.w;
    let mut img = RgbImage::new(t.w as u32, t.h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        for c in 0..3 {
            let src = if t.c == 3 { c } else { 0 };
            let mut v = t.data[src * n + i];
            if let Some((m, s)) = normalize {
                v = v * s[c] + m[c];
            }
            px.0[c] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    img
}

/// Writes a grid of `n` augmented training images (evenly spread over the training set, epoch 0
/// of the recipe's seed) to `out` as PNG.
pub fn preview(recipe: &Recipe, out: &Path, n: usize) -> Result<PreviewSummary, DataError> {
    let root = resolve_root(&recipe.data)?;
    let data = CourseData::open(&root)?;
    let pipeline = build(&recipe.transforms.train)?;
    let n = n.clamp(1, data.train.len());
    let step = data.train.len() as f64 / n as f64;
    let mut tiles = Vec::with_capacity(n);
    let skip = recipe.data.on_bad_image == crate::recipe::BadImagePolicy::Skip;
    let len = data.train.len();
    for k in 0..n {
        let start = ((k as f64 * step) as usize).min(len - 1);
        // with `on_bad_image = "skip"`, an unreadable image gives way to the next readable one
        let mut found = None;
        for idx in (start..len).chain(0..start) {
            match super::loader::decode(&data.train[idx].path) {
                Ok(img) => {
                    found = Some((idx, img));
                    break;
                }
                Err(_) if skip => continue,
                Err(e) => return Err(e),
            }
        }
        let Some((idx, img)) = found else {
            return Err(DataError::layout(
                root.join("classification").join("train"),
                "no training image could be read",
            ));
        };
        let mut rng = sample_rng(recipe.train.seed, 0, idx as u64);
        let t = pipeline.apply(img, &mut rng)?;
        tiles.push(tensor_to_image(&t, pipeline.normalization()));
    }
    let tw = tiles.iter().map(|t| t.width()).max().unwrap_or(1) as usize;
    let th = tiles.iter().map(|t| t.height()).max().unwrap_or(1) as usize;
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let gap = 2;
    let mut grid = RgbImage::from_pixel(
        (cols * (tw + gap) + gap) as u32,
        (rows * (th + gap) + gap) as u32,
        image::Rgb([255, 255, 255]),
    );
    for (k, tile) in tiles.iter().enumerate() {
        let x = gap + (k % cols) * (tw + gap);
        let y = gap + (k / cols) * (th + gap);
        image::imageops::replace(&mut grid, tile, x as i64, y as i64);
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    grid.save_with_format(out, image::ImageFormat::Png)
        .map_err(|e| DataError::Encode {
            path: out.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok(PreviewSummary {
        path: out.to_path_buf(),
        images: n,
        columns: cols,
        tile_width: tw,
        tile_height: th,
    })
}
