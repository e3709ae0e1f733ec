//! `runner data stats`: identities, images per split, image sizes and class balance of a data
//! folder, as a serializable report.

use super::{CourseData, DataError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeCount {
    pub width: u32,
    pub height: u32,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    pub min: usize,
    pub max: usize,
    pub mean: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataStats {
    pub root: PathBuf,
    pub fingerprint: String,
    pub identities: usize,
    pub train_images: usize,
    pub dev_images: usize,
    pub test_images: usize,
    pub test_labelled: bool,
    pub known_identities: usize,
    pub known_images: usize,
    pub unknown_dev_images: usize,
    /// `unknown_dev` images labelled `n000000` (no known identity).
    pub unknown_dev_impostors: usize,
    pub unknown_test_images: usize,
    /// Distinct image sizes over every image, most frequent first.
    pub image_sizes: Vec<SizeCount>,
    /// Training images per identity.
    pub class_balance: Balance,
    /// Files whose header could not be read.
    pub unreadable: Vec<PathBuf>,
    /// The same image in two splits, identities shared between classification and
    /// verification.
    pub leakage: super::leakage::Leakage,
}

/// Images of one identity in one split (`runner data stats --format csv` writes one row each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityCount {
    /// `train`, `dev`, `test`, `known`, `unknown_dev` or `unknown_test`.
    pub split: &'static str,
    /// The identity folder or CSV label (`n000000`: no known identity); empty for the images
    /// of a split without labels.
    pub identity: String,
    pub images: usize,
}

/// Images per split and identity, splits in layout order and identities sorted.
pub fn identity_counts(root: &Path) -> Result<Vec<IdentityCount>, DataError> {
    let d = CourseData::open(root)?;
    let mut out = Vec::new();
    let mut push = |split: &'static str, counts: BTreeMap<String, usize>| {
        out.extend(counts.into_iter().map(|(identity, images)| IdentityCount {
            split,
            identity,
            images,
        }));
    };
    let by_label = |samples: &[super::Sample], names: &[String]| {
        let mut m: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
        for s in samples {
            if let Some(n) = names.get(s.label) {
                *m.entry(n.clone()).or_default() += 1;
            }
        }
        m
    };
    let by_csv = |files: &[PathBuf], labels: Option<&std::collections::HashMap<String, String>>| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for f in files {
            let label = labels
                .and_then(|l| l.get(&super::file_id(f)))
                .cloned()
                .unwrap_or_default();
            *m.entry(label).or_default() += 1;
        }
        m
    };
    push("train", by_label(&d.train, &d.classes));
    push("dev", by_label(&d.dev, &d.classes));
    push("test", by_csv(&d.test, d.test_labels.as_ref()));
    push("known", by_label(&d.known, &d.known_identities));
    push(
        "unknown_dev",
        by_csv(&d.unknown_dev, Some(&d.unknown_dev_labels)),
    );
    push(
        "unknown_test",
        by_csv(&d.unknown_test, d.unknown_test_labels.as_ref()),
    );
    Ok(out)
}

fn balance(counts: &[usize]) -> Balance {
    if counts.is_empty() {
        return Balance {
            min: 0,
            max: 0,
            mean: 0.0,
        };
    }
    Balance {
        min: counts.iter().copied().min().unwrap_or(0),
        max: counts.iter().copied().max().unwrap_or(0),
        mean: counts.iter().sum::<usize>() as f64 / counts.len() as f64,
    }
}

/// Counts a data folder in the course layout (reads image headers only).
pub fn stats(root: &Path) -> Result<DataStats, DataError> {
    let d = CourseData::open(root)?;
    let mut per_class = vec![0usize; d.classes.len()];
    for s in &d.train {
        per_class[s.label] += 1;
    }
    let paths = d
        .train
        .iter()
        .chain(&d.dev)
        .chain(&d.known)
        .map(|s| &s.path)
        .chain(&d.test)
        .chain(&d.unknown_dev)
        .chain(&d.unknown_test);
    let mut sizes: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for p in paths {
        match super::loader::dimensions(p) {
            Some(wh) => *sizes.entry(wh).or_default() += 1,
            None => unreadable.push(p.clone()),
        }
    }
    let mut image_sizes: Vec<SizeCount> = sizes
        .into_iter()
        .map(|((width, height), count)| SizeCount {
            width,
            height,
            count,
        })
        .collect();
    image_sizes.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then((a.width, a.height).cmp(&(b.width, b.height)))
    });
    let fingerprint = super::fingerprint(root)?;
    let leakage = super::leakage::find(&d, &fingerprint)?;
    Ok(DataStats {
        root: d.root.clone(),
        fingerprint,
        identities: d.classes.len(),
        train_images: d.train.len(),
        dev_images: d.dev.len(),
        test_images: d.test.len(),
        test_labelled: d.test_labels.is_some(),
        known_identities: d.known_identities.len(),
        known_images: d.known.len(),
        unknown_dev_images: d.unknown_dev.len(),
        // the images' labels (the CSV may hold rows for images that are not there)
        unknown_dev_impostors: d
            .unknown_dev
            .iter()
            .filter(|p| {
                d.unknown_dev_labels.get(&super::layout::file_id(p))
                    == Some(&super::layout::NO_MATCH.to_string())
            })
            .count(),
        unknown_test_images: d.unknown_test.len(),
        image_sizes,
        class_balance: balance(&per_class),
        unreadable,
        leakage,
    })
}
