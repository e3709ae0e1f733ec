//! Leakage between splits: the same image (byte for byte) in two splits (train, dev, test,
//! known, unknown_dev, unknown_test), and identity names that classification and verification
//! share although the course layout keeps them disjoint. Published face benchmarks have been
//! found to overlap their training sets; a hand-made split can too. Content hashes are cached
//! by the data's fingerprint (`~/.cache/runner/content-hashes/<fingerprint>.json`, or
//! `$XDG_CACHE_HOME`), so a second check of an unchanged folder reads no image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CourseData, DataError};

/// One image content found in more than one split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedImage {
    /// The splits it is in, in layout order.
    pub splits: Vec<String>,
    /// Every file with that content (relative to the data folder).
    pub files: Vec<PathBuf>,
}

/// What leaks between a data set's splits.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Leakage {
    /// Images with identical content in two or more splits.
    pub shared_images: Vec<SharedImage>,
    /// Identity names both in `classification/train` and in `verification/known`.
    pub shared_identities: Vec<String>,
    /// Whether the content hashes came from the cache.
    pub cached: bool,
}

impl Leakage {
    pub fn is_empty(&self) -> bool {
        self.shared_images.is_empty() && self.shared_identities.is_empty()
    }

    /// One line per finding, for a warning before training.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.shared_images {
            let files: Vec<String> = s.files.iter().map(|f| f.display().to_string()).collect();
            out.push(format!(
                "the same image is in {}: {}",
                s.splits.join(" and "),
                files.join(", ")
            ));
        }
        if !self.shared_identities.is_empty() {
            out.push(format!(
                "identities in both classification/train and verification/known (the layout keeps them disjoint): {}",
                self.shared_identities.join(", ")
            ));
        }
        out
    }
}

/// The cache of a data set's content hashes: relative path -> sha256.
#[derive(Debug, Default, Serialize, Deserialize)]
struct HashCache {
    fingerprint: String,
    hashes: BTreeMap<String, String>,
}

fn cache_file(fingerprint: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("runner")
            .join("content-hashes")
            .join(format!("{fingerprint}.json")),
    )
}

/// The splits' images, as (split, path).
fn split_images(data: &CourseData) -> Vec<(&'static str, &Path)> {
    let mut out: Vec<(&'static str, &Path)> = Vec::new();
    out.extend(data.train.iter().map(|s| ("train", s.path.as_path())));
    out.extend(data.dev.iter().map(|s| ("dev", s.path.as_path())));
    out.extend(data.test.iter().map(|p| ("test", p.as_path())));
    out.extend(data.known.iter().map(|s| ("known", s.path.as_path())));
    out.extend(
        data.unknown_dev
            .iter()
            .map(|p| ("unknown_dev", p.as_path())),
    );
    out.extend(
        data.unknown_test
            .iter()
            .map(|p| ("unknown_test", p.as_path())),
    );
    out
}

/// Finds the leakage in a data set (`fingerprint`: its `data::fingerprint`, the cache's key).
pub fn find(data: &CourseData, fingerprint: &str) -> Result<Leakage, DataError> {
    find_counted(data, fingerprint, &|_, _| {})
}

/// `find`, with `progress(hashed, to hash)` called as files are hashed (none when the
/// cache holds the hashes).
pub fn find_counted(
    data: &CourseData,
    fingerprint: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Leakage, DataError> {
    let images = split_images(data);
    let rel = |p: &Path| {
        p.strip_prefix(&data.root)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let cache_path = cache_file(fingerprint);
    let cached: Option<HashCache> = cache_path
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &HashCache| c.fingerprint == fingerprint);
    let from_cache = cached.is_some();
    let hashes: BTreeMap<String, String> = match cached {
        Some(c) => c.hashes,
        None => {
            let done = std::sync::atomic::AtomicU64::new(0);
            let total = images.len() as u64;
            let hashed: Result<Vec<(String, String)>, DataError> = images
                .par_iter()
                .map(|(_, p)| {
                    let bytes = std::fs::read(p).map_err(|e| DataError::io(*p, e))?;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress(n, total);
                    Ok((rel(p), hex::encode(Sha256::digest(&bytes))))
                })
                .collect();
            let hashes: BTreeMap<String, String> = hashed?.into_iter().collect();
            if let Some(path) = &cache_path {
                // a cache that cannot be written only costs the next check its time
                let cache = HashCache {
                    fingerprint: fingerprint.to_string(),
                    hashes: hashes.clone(),
                };
                if let (Some(dir), Ok(text)) = (path.parent(), serde_json::to_vec(&cache)) {
                    let tmp = path.with_extension("json.tmp");
                    let _ = std::fs::create_dir_all(dir)
                        .and_then(|_| std::fs::write(&tmp, text))
                        .and_then(|_| std::fs::rename(&tmp, path));
                }
            }
            hashes
        }
    };
    // content -> (splits, files)
    let mut by_content: BTreeMap<&str, (Vec<&'static str>, Vec<PathBuf>)> = BTreeMap::new();
    for (split, p) in &images {
        let r = rel(p);
        let Some(h) = hashes.get(&r) else { continue };
        let entry = by_content.entry(h.as_str()).or_default();
        if !entry.0.contains(split) {
            entry.0.push(split);
        }
        entry.1.push(PathBuf::from(r));
    }
    let shared_images = by_content
        .into_values()
        .filter(|(splits, _)| splits.len() > 1)
        .map(|(splits, files)| SharedImage {
            splits: splits.into_iter().map(String::from).collect(),
            files,
        })
        .collect();
    let shared_identities = data
        .classes
        .iter()
        .filter(|c| data.known_identities.contains(c))
        .cloned()
        .collect();
    Ok(Leakage {
        shared_images,
        shared_identities,
        cached: from_cache,
    })
}
