//! The data checks made before any run exists: `runner validate`, and `run` / `sweep` before
//! a run row is recorded. The folder must be in the course layout (`CourseData::open`: the
//! folders, identity folders with images, the label files), and every image's header must be
//! readable. A header pass reads a few hundred bytes of each file: it finds files that are not
//! images, empty files and unknown formats, but not a JPEG cut short after its header, which
//! the loader still meets at run time (`data.on_bad_image`).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::CourseData;

/// What a reader of an error about `data.root` needs: where the folders go, and how a
/// relative root is resolved.
pub const LAYOUT_HELP: &str = "expected the course layout (docs/data.md):
  <data.root>/classification/train/<identity>/*.jpg
  <data.root>/classification/dev/<identity>/*.jpg
  <data.root>/verification/known/<identity>/*.jpg
  <data.root>/verification/unknown_dev/*.jpg and verification/verification_dev.csv
a relative data.root is resolved from the working directory (`use` paths are relative to the recipe file)";

/// An image whose header cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: String,
}

/// Every image file a data set holds, in its splits' order.
pub fn all_images(data: &CourseData) -> Vec<&Path> {
    data.train
        .iter()
        .chain(&data.dev)
        .chain(&data.known)
        .map(|s| s.path.as_path())
        .chain(data.test.iter().map(PathBuf::as_path))
        .chain(data.unknown_dev.iter().map(PathBuf::as_path))
        .chain(data.unknown_test.iter().map(PathBuf::as_path))
        .collect()
}

/// Reads an image's header (format and size), naming what is wrong when it cannot.
pub fn read_header(path: &Path) -> Result<(u32, u32), String> {
    image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .into_dimensions()
        .map_err(|e| e.to_string())
}

/// Every image of the data set whose header cannot be read (all of them, in path order),
/// read on all cores; `on_image` is called after each (progress).
pub fn unreadable_images(data: &CourseData, on_image: &(dyn Fn() + Sync)) -> Vec<Unreadable> {
    let mut bad: Vec<Unreadable> = all_images(data)
        .par_iter()
        .filter_map(|p| {
            let read = read_header(p);
            on_image();
            read.err().map(|error| Unreadable {
                path: p.to_path_buf(),
                error,
            })
        })
        .collect();
    bad.sort_by(|a, b| a.path.cmp(&b.path));
    bad
}

/// The message for unreadable images under `data.on_bad_image = "fail"`: every one of them.
pub fn unreadable_message(bad: &[Unreadable]) -> String {
    let list: Vec<String> = bad
        .iter()
        .map(|u| format!("  {}: {}", u.path.display(), u.error))
        .collect();
    format!(
        "{} unreadable image(s) (data.on_bad_image = \"fail\"):\n{}\nset data.on_bad_image = \"skip\" to train without them, or replace the files",
        bad.len(),
        list.join("\n")
    )
}
