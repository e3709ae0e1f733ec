//! The course data layout reader (`classification/`, `verification/`) and the pairs-list format.

use super::DataError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The label the verification CSVs use for "no known identity".
pub const NO_MATCH: &str = "n000000";

/// One labelled image; `label` indexes `CourseData::classes` (or `known_identities` for `known`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

/// Everything a data folder in the course layout holds, with paths sorted.
#[derive(Debug, Clone)]
pub struct CourseData {
    pub root: PathBuf,
    /// Sorted identity names of `classification/train`.
    pub classes: Vec<String>,
    pub train: Vec<Sample>,
    /// Labels index `classes`.
    pub dev: Vec<Sample>,
    /// `classification/test/*`, sorted.
    pub test: Vec<PathBuf>,
    /// `classification/test_labels.csv`: file name -> identity name, when present.
    pub test_labels: Option<HashMap<String, String>>,
    /// `verification/known/<identity>/*`; labels index `known_identities`.
    pub known: Vec<Sample>,
    pub known_identities: Vec<String>,
    pub unknown_dev: Vec<PathBuf>,
    /// `verification/verification_dev.csv`: file name -> known identity or `n000000`.
    pub unknown_dev_labels: HashMap<String, String>,
    pub unknown_test: Vec<PathBuf>,
    /// `verification/verification_test.csv`, when present.
    pub unknown_test_labels: Option<HashMap<String, String>>,
}

/// A part of the course layout that a command may need ([`CourseData::require`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `classification/dev`
    Dev,
    /// `classification/test`
    Test,
    /// `verification/known`, the gallery
    Known,
    /// `verification/unknown_dev`
    UnknownDev,
    /// `verification/unknown_test`
    UnknownTest,
}

/// Image file extensions the layout accepts.
pub fn is_image(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg") | Some("jpeg") | Some("png")
    )
}

/// The file name of `path` as the CSVs' `id` column writes it.
pub fn file_id(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a file or folder name is hidden (`.ipynb_checkpoints`, macOS's `._x.jpg`,
/// `.DS_Store`): never data.
pub fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The entries of `dir`, sorted, hidden ones left out.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if !is_hidden(&entry.path()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Sorted image files directly inside `dir`.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter(|p| p.is_file() && is_image(p))
        .collect())
}

/// `dir/<identity>/*` -> (sorted identity names, images per identity in that order).
fn read_identity_folders(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, DataError> {
    if !dir.is_dir() {
        return Err(DataError::MissingFolder(dir.to_path_buf()));
    }
    let mut out = Vec::new();
    for sub in list_dir(dir)? {
        if !sub.is_dir() {
            continue;
        }
        let name = file_id(&sub);
        let images = list_images(&sub)?;
        if images.is_empty() {
            // an identity without images would be a class nothing trains (torchvision's
            // ImageFolder refuses it too)
            return Err(DataError::layout(
                sub,
                "identity folder without images (.jpg, .jpeg, .png); remove it or add images",
            ));
        }
        out.push((name, images));
    }
    Ok(out)
}

/// Reads an `id,label` CSV (with header) into file name -> label.
pub fn read_id_label_csv(path: &Path) -> Result<HashMap<String, String>, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| DataError::Csv {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    let headers = rdr
        .headers()
        .map_err(|e| DataError::Csv {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (id_col, label_col) = match (col("id"), col("label")) {
        (Some(i), Some(l)) => (i, l),
        _ => {
            return Err(DataError::Csv {
                path: path.to_path_buf(),
                msg: format!(
                    "expected header `id,label`, found `{}`",
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            })
        }
    };
    let mut out = HashMap::new();
    for (line, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| DataError::Csv {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let (Some(id), Some(label)) = (rec.get(id_col), rec.get(label_col)) else {
            return Err(DataError::Csv {
                path: path.to_path_buf(),
                msg: format!("row {} lacks id or label", line + 2),
            });
        };
        if let Some(first) = out.insert(id.to_string(), label.to_string()) {
            if first != label {
                return Err(DataError::Csv {
                    path: path.to_path_buf(),
                    msg: format!(
                        "row {}: `{id}` is labelled again, `{label}` after `{first}`",
                        line + 2
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// Every image of an unknown split has a row, naming a known identity or `n000000`.
fn check_unknown_labels(
    csv_path: &Path,
    labels: &HashMap<String, String>,
    images: &[PathBuf],
    split: &str,
    known_identities: &[String],
) -> Result<(), DataError> {
    for p in images {
        let id = file_id(p);
        match labels.get(&id) {
            None => {
                return Err(DataError::layout(
                    csv_path,
                    format!("no label for image `{id}` of verification/{split}"),
                ))
            }
            Some(l) if l != NO_MATCH && !known_identities.contains(l) => {
                return Err(DataError::layout(
                    csv_path,
                    format!("label `{l}` of `{id}` is neither a known identity nor {NO_MATCH}"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn optional_csv(path: &Path) -> Result<Option<HashMap<String, String>>, DataError> {
    if path.is_file() {
        read_id_label_csv(path).map(Some)
    } else {
        Ok(None)
    }
}

impl CourseData {
    /// Reads a data folder in the course layout. `verification/` is optional (absent: empty).
    pub fn open(root: impl AsRef<Path>) -> Result<CourseData, DataError> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(DataError::MissingFolder(root));
        }
        let cls = root.join("classification");
        if !cls.is_dir() {
            return Err(DataError::MissingFolder(cls));
        }
        let train_dirs = read_identity_folders(&cls.join("train"))?;
        if train_dirs.is_empty() {
            return Err(DataError::layout(
                cls.join("train"),
                "no identity folders (expected classification/train/<identity>/*.jpg)",
            ));
        }
        let classes: Vec<String> = train_dirs.iter().map(|(n, _)| n.clone()).collect();
        let index: HashMap<&str, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut train = Vec::new();
        for (label, (_, files)) in train_dirs.iter().enumerate() {
            train.extend(files.iter().map(|p| Sample {
                path: p.clone(),
                label,
            }));
        }
        if train.is_empty() {
            return Err(DataError::layout(cls.join("train"), "no images"));
        }
        let dev_dir = cls.join("dev");
        let mut dev = Vec::new();
        for (name, files) in read_identity_folders(&dev_dir)? {
            let Some(&label) = index.get(name.as_str()) else {
                return Err(DataError::layout(
                    dev_dir.join(&name),
                    format!("dev identity `{name}` has no folder in classification/train"),
                ));
            };
            dev.extend(files.into_iter().map(|path| Sample { path, label }));
        }
        let test_dir = cls.join("test");
        let test = if test_dir.is_dir() {
            list_images(&test_dir)?
        } else {
            Vec::new()
        };
        let test_labels = optional_csv(&cls.join("test_labels.csv"))?;
        if let Some(labels) = &test_labels {
            // A test image without a row would silently count as misclassified.
            let csv_path = cls.join("test_labels.csv");
            if let Some(p) = test.iter().find(|p| !labels.contains_key(&file_id(p))) {
                return Err(DataError::layout(
                    &csv_path,
                    format!("no label for image `{}` of classification/test", file_id(p)),
                ));
            }
            // A label no training identity has could never be predicted: a typo.
            let mut rows: Vec<(&String, &String)> = labels.iter().collect();
            rows.sort();
            if let Some((id, l)) = rows.into_iter().find(|(_, l)| !classes.contains(*l)) {
                return Err(DataError::layout(
                    &csv_path,
                    format!("label `{l}` of `{id}` is not a training identity"),
                ));
            }
        }

        let ver = root.join("verification");
        let mut known = Vec::new();
        let mut known_identities = Vec::new();
        let mut unknown_dev = Vec::new();
        let mut unknown_dev_labels = HashMap::new();
        let mut unknown_test = Vec::new();
        let mut unknown_test_labels = None;
        if ver.is_dir() {
            let known_dir = ver.join("known");
            for (label, (name, files)) in read_identity_folders(&known_dir)?.into_iter().enumerate()
            {
                if name == NO_MATCH {
                    // the label of "no known identity" cannot be an identity of the gallery
                    return Err(DataError::layout(
                        known_dir.join(&name),
                        format!(
                            "`{NO_MATCH}` means \"no match\"; a gallery identity cannot use it"
                        ),
                    ));
                }
                known_identities.push(name);
                known.extend(files.into_iter().map(|path| Sample { path, label }));
            }
            let ud = ver.join("unknown_dev");
            if ud.is_dir() {
                unknown_dev = list_images(&ud)?;
                let csv_path = ver.join("verification_dev.csv");
                if !csv_path.is_file() {
                    return Err(DataError::MissingFile(csv_path));
                }
                unknown_dev_labels = read_id_label_csv(&csv_path)?;
                check_unknown_labels(
                    &csv_path,
                    &unknown_dev_labels,
                    &unknown_dev,
                    "unknown_dev",
                    &known_identities,
                )?;
            }
            let ut = ver.join("unknown_test");
            if ut.is_dir() {
                unknown_test = list_images(&ut)?;
            }
            let csv_path = ver.join("verification_test.csv");
            unknown_test_labels = optional_csv(&csv_path)?;
            if let Some(labels) = &unknown_test_labels {
                check_unknown_labels(
                    &csv_path,
                    labels,
                    &unknown_test,
                    "unknown_test",
                    &known_identities,
                )?;
            }
        }
        Ok(CourseData {
            root,
            classes,
            train,
            dev,
            test,
            test_labels,
            known,
            known_identities,
            unknown_dev,
            unknown_dev_labels,
            unknown_test,
            unknown_test_labels,
        })
    }

    /// Fails, naming the folder, when a part of the layout a command needs is missing or
    /// has no images. Reading a set leaves `classification/test` and `verification/` optional
    /// (training does without them); scoring or predicting on them does not.
    pub fn require(&self, part: Part) -> Result<(), DataError> {
        let (folder, empty) = match part {
            Part::Dev => ("classification/dev", self.dev.is_empty()),
            Part::Test => ("classification/test", self.test.is_empty()),
            Part::Known => ("verification/known", self.known.is_empty()),
            Part::UnknownDev => ("verification/unknown_dev", self.unknown_dev.is_empty()),
            Part::UnknownTest => ("verification/unknown_test", self.unknown_test.is_empty()),
        };
        let dir = self.root.join(folder);
        if !dir.is_dir() {
            return Err(DataError::MissingFolder(dir));
        }
        if empty {
            return Err(DataError::layout(dir, "no images"));
        }
        Ok(())
    }

    /// Whether the set has a verification part with labelled `unknown_dev` images.
    pub fn has_verification(&self) -> bool {
        !self.known.is_empty() && !self.unknown_dev.is_empty()
    }
}

/// Whether a pairs-list field names an image: an image file name (`.jpg`, `.jpeg`, `.png`), or
/// a file that exists (relative to the list's folder).
fn looks_like_image(field: &str, base: &Path) -> bool {
    let p = Path::new(field);
    is_image(p) || base.join(p).is_file()
}

/// Reads a pairs list: `img1 img2 same` per line (same: 1/0, true/false or yes/no); relative
/// paths are taken relative to the list's folder. Blank lines and `#` comments are skipped.
/// The first other line may be a header (`img1 img2 same`): it is skipped when its third
/// field is not a label and neither of its first two names an image. Any other bad label is
/// an error naming the file and line.
pub fn read_pairs(path: &Path) -> Result<Vec<(PathBuf, PathBuf, bool)>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let may_be_header = std::mem::replace(&mut first, false);
        let parts: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .collect();
        let bad = |msg: &str| DataError::layout(path, format!("line {}: {msg}: `{line}`", i + 1));
        if parts.len() != 3 {
            return Err(bad("expected `img1 img2 same`"));
        }
        let same = match parts[2].to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => {
                if may_be_header && !parts[..2].iter().any(|p| looks_like_image(p, base)) {
                    continue; // header such as `img1 img2 same`
                }
                return Err(bad("third column must be 1/0, true/false or yes/no"));
            }
        };
        let resolve = |s: &str| {
            let p = PathBuf::from(s);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        out.push((resolve(parts[0]), resolve(parts[1]), same));
    }
    Ok(out)
}
