//! The course's submission file: CSV with the header `id,label`, one row per image, sorted by
//! id (byte-wise), written atomically (a temporary file in the same folder, then a rename).
//! Classification labels are identity names; verification labels are known identities or
//! `n000000`.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::VerifyError;

/// Writes `rows` (`(id, label)`) to `path` sorted by id; returns the number of rows.
/// Errors: no rows, an empty id, a duplicate id, or an I/O failure (naming the file).
/// Creates the parent folder if needed; an existing file is replaced only once the new one is
/// complete.
pub fn write_submission<I: AsRef<str>, L: AsRef<str>>(
    path: &Path,
    rows: &[(I, L)],
) -> Result<usize, VerifyError> {
    if rows.is_empty() {
        return Err(VerifyError::Empty { what: "submission" });
    }
    let mut sorted: Vec<(&str, &str)> =
        rows.iter().map(|(i, l)| (i.as_ref(), l.as_ref())).collect();
    if let Some(pos) = sorted.iter().position(|(i, _)| i.is_empty()) {
        return Err(VerifyError::EmptyId(pos));
    }
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(VerifyError::DuplicateId(w[0].0.to_string()));
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| VerifyError::Io { path: p, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = temp_path(path);
    let result = write_csv(&tmp, &sorted).and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| sorted.len())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "submission.csv".to_string());
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

fn write_csv(tmp: &Path, rows: &[(&str, &str)]) -> Result<(), VerifyError> {
    let csv_err = |source| VerifyError::Csv {
        path: tmp.to_path_buf(),
        source,
    };
    let file = fs::File::create(tmp).map_err(|source| VerifyError::Io {
        path: tmp.to_path_buf(),
        source,
    })?;
    let mut w = csv::Writer::from_writer(file);
    w.write_record(["id", "label"]).map_err(csv_err)?;
    for (id, label) in rows {
        w.write_record([id, label]).map_err(csv_err)?;
    }
    let mut file = w.into_inner().map_err(|e| VerifyError::Io {
        path: tmp.to_path_buf(),
        source: e.into_error(),
    })?;
    file.flush()
        .and_then(|()| file.sync_all())
        .map_err(|source| VerifyError::Io {
            path: tmp.to_path_buf(),
            source,
        })
}

/// Reads a submission file back as `(id, label)` rows, checking the header `id,label`.
pub fn read_submission(path: &Path) -> Result<Vec<(String, String)>, VerifyError> {
    let csv_err = |source| VerifyError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut r = csv::Reader::from_path(path).map_err(csv_err)?;
    let header: Vec<String> = r
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(String::from)
        .collect();
    if header != ["id", "label"] {
        return Err(VerifyError::BadHeader {
            path: path.to_path_buf(),
            found: header,
        });
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for rec in r.records() {
        let rec = rec.map_err(csv_err)?;
        let (id, label) = (rec.get(0).unwrap_or(""), rec.get(1).unwrap_or(""));
        if !seen.insert(id.to_string()) {
            return Err(VerifyError::DuplicateId(id.to_string()));
        }
        out.push((id.to_string(), label.to_string()));
    }
    Ok(out)
}
