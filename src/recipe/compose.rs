//! Composition: a recipe file and the fragments it `use`s (recursively, paths relative to the
//! naming file) merge key by key into one TOML table; we remember where each key was written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{line_col, Origin, RecipeError};

/// Where each dotted key of a composed table was written.
pub type Origins = BTreeMap<String, Origin>;

/// A composed recipe before typing: the merged table and the origin of every key.
#[derive(Debug, Clone)]
pub struct Composed {
    pub file: PathBuf,
    pub table: toml::Table,
    pub origins: Origins,
    /// Every file read, the recipe first.
    pub files: Vec<PathBuf>,
}

impl Composed {
    /// Where `key` was written: the key itself; else the first of its sub-keys that was written
    /// (`--set nosection.x=1` for `nosection`); else, walking up, the `kind` that made it
    /// apply (`--set scheduler.kind=step` for a missing `scheduler.step_size`) or the closest
    /// written ancestor; the recipe file otherwise.
    pub fn origin_of(&self, key: &str) -> Origin {
        if let Some(o) = self.origins.get(key) {
            return o.clone();
        }
        if !key.is_empty() {
            let (dot, bracket) = (format!("{key}."), format!("{key}["));
            if let Some(o) = self
                .origins
                .iter()
                .find(|(k, _)| k.starts_with(&dot) || k.starts_with(&bracket))
                .map(|(_, o)| o)
            {
                return o.clone();
            }
        }
        let mut k = key.to_string();
        while let Some(i) = k.rfind(['.', '[']) {
            k.truncate(i);
            for candidate in [format!("{k}.kind"), k.clone()] {
                if let Some(o) = self.origins.get(&candidate) {
                    return o.clone();
                }
            }
        }
        Origin::File {
            path: self.file.clone(),
            line: 1,
            col: 1,
        }
    }
}

/// Reads `path` and everything it uses into one table.
pub fn compose(path: &Path) -> Result<Composed, RecipeError> {
    let mut stack = Vec::new();
    let mut files = Vec::new();
    let (table, origins) = load_layer(path, &mut stack, &mut files, None).map_err(|e| match e {
        RecipeError::Invalid(mut diags) => {
            for d in &mut diags {
                if matches!(&d.origin, Origin::File { path: p, .. } if p != path) {
                    d.message
                        .push_str(&format!(" (composing {})", path.display()));
                }
            }
            RecipeError::Invalid(diags)
        }
        other => other,
    })?;
    Ok(Composed {
        file: path.to_path_buf(),
        table,
        origins,
        files,
    })
}

/// Reads a file as UTF-8 text with errors that name it.
pub fn read_text(path: &Path) -> Result<String, RecipeError> {
    if path.is_dir() {
        return Err(RecipeError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| RecipeError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

fn load_layer(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    files: &mut Vec<PathBuf>,
    used_at: Option<Origin>,
) -> Result<(toml::Table, Origins), RecipeError> {
    if !path.exists() {
        let msg = format!("fragment `{}` does not exist", path.display());
        return Err(match used_at {
            Some(origin) => RecipeError::one(origin, "use", msg),
            None => RecipeError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            },
        });
    }
    let canonical = path.canonicalize().map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(pos) = stack.iter().position(|p| p == &canonical) {
        let chain: Vec<String> = stack[pos..]
            .iter()
            .chain(std::iter::once(&canonical))
            .map(|p| p.display().to_string())
            .collect();
        let origin = used_at.unwrap_or(Origin::File {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
        });
        return Err(RecipeError::one(
            origin,
            "use",
            format!("fragment cycle: {}", chain.join(" -> ")),
        ));
    }
    let src = read_text(path).map_err(|e| match (&used_at, e) {
        // a fragment that cannot be read is reported where `use` names it
        (Some(origin), RecipeError::IsDirectory { path }) => RecipeError::one(
            origin.clone(),
            "use",
            format!("`{}` is a directory, not a recipe fragment", path.display()),
        ),
        (_, e) => e,
    })?;
    let file_origin = |offset: usize| {
        let (line, col) = line_col(&src, offset);
        Origin::File {
            path: path.to_path_buf(),
            line,
            col,
        }
    };
    let doc = toml_edit::Document::parse(src.as_str()).map_err(|e| {
        let origin = file_origin(e.span().map(|s| s.start).unwrap_or(0));
        RecipeError::one(
            origin,
            "",
            format!("malformed TOML: {}", e.message().trim()),
        )
    })?;
    let mut own_origins = Origins::new();
    if let Some(table) = doc.as_item().as_table() {
        collect_table(table, "", &src, path, &mut own_origins);
    }
    let mut own: toml::Table = toml::from_str(&src).map_err(|e| {
        let origin = file_origin(e.span().map(|s| s.start).unwrap_or(0));
        RecipeError::one(
            origin,
            "",
            format!("malformed TOML: {}", e.message().trim()),
        )
    })?;
    files.push(path.to_path_buf());

    let uses = match own.remove("use") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let key = format!("use[{i}]");
                match item {
                    toml::Value::String(s) => out.push((s, origin_in(&own_origins, &key, path))),
                    other => {
                        return Err(RecipeError::one(
                            origin_in(&own_origins, &key, path),
                            key,
                            format!(
                                "expected a fragment path (a string), found {}",
                                other.type_str()
                            ),
                        ))
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(RecipeError::one(
                origin_in(&own_origins, "use", path),
                "use",
                format!(
                    "expected a list of fragment paths, found {}",
                    other.type_str()
                ),
            ))
        }
    };
    own_origins.retain(|k, _| k != "use" && !k.starts_with("use["));

    stack.push(canonical);
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mut merged = toml::Table::new();
    let mut origins = Origins::new();
    for (rel, origin) in uses {
        let frag_path = base_dir.join(&rel);
        let (frag, frag_origins) = load_layer(&frag_path, stack, files, Some(origin))?;
        merge_into(&mut merged, &mut origins, frag, frag_origins, "");
    }
    stack.pop();
    merge_into(&mut merged, &mut origins, own, own_origins, "");
    Ok((merged, origins))
}

fn origin_in(origins: &Origins, key: &str, path: &Path) -> Origin {
    origins.get(key).cloned().unwrap_or(Origin::File {
        path: path.to_path_buf(),
        line: 1,
        col: 1,
    })
}

/// Merges `over` into `base` key by key: tables merge recursively, anything else is replaced.
/// A table whose `kind` changes is replaced whole (the old kind's options do not apply).
pub fn merge_into(
    base: &mut toml::Table,
    base_origins: &mut Origins,
    over: toml::Table,
    over_origins: Origins,
    prefix: &str,
) {
    // Origins: drop the base's for every subtree that `over` replaces, then add `over`'s.
    for (key, value) in over {
        let path = join_key(prefix, &key);
        let replace_whole = match (base.get(&key), &value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => {
                matches!((old.get("kind"), new.get("kind")), (Some(a), Some(b)) if a != b)
            }
            _ => true,
        };
        if replace_whole {
            remove_subtree(base_origins, &path);
            base.insert(key, value);
        } else if let (Some(toml::Value::Table(old)), toml::Value::Table(new)) =
            (base.get_mut(&key), value)
        {
            merge_into(old, base_origins, new, Origins::new(), &path);
        }
    }
    base_origins.extend(over_origins);
}

fn remove_subtree(origins: &mut Origins, path: &str) {
    origins.retain(|k, _| {
        !(k == path || k.starts_with(&format!("{path}.")) || k.starts_with(&format!("{path}[")))
    });
}

pub fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn collect_table(
    table: &toml_edit::Table,
    prefix: &str,
    src: &str,
    file: &Path,
    out: &mut Origins,
) {
    for (key, item) in table.iter() {
        let path = join_key(prefix, key);
        let span = table
            .key(key)
            .and_then(|k| k.span())
            .or_else(|| item.span());
        record(out, &path, span, src, file);
        collect_item(item, &path, src, file, out);
    }
}

fn collect_item(item: &toml_edit::Item, path: &str, src: &str, file: &Path, out: &mut Origins) {
    match item {
        toml_edit::Item::Table(t) => collect_table(t, path, src, file, out),
        toml_edit::Item::ArrayOfTables(arr) => {
            for (i, t) in arr.iter().enumerate() {
                let p = format!("{path}[{i}]");
                record(out, &p, t.span(), src, file);
                collect_table(t, &p, src, file, out);
            }
        }
        toml_edit::Item::Value(v) => collect_value(v, path, src, file, out),
        toml_edit::Item::None => {}
    }
}

fn collect_value(v: &toml_edit::Value, path: &str, src: &str, file: &Path, out: &mut Origins) {
    match v {
        toml_edit::Value::Array(arr) => {
            for (i, elem) in arr.iter().enumerate() {
                let p = format!("{path}[{i}]");
                record(out, &p, elem.span(), src, file);
                collect_value(elem, &p, src, file, out);
            }
        }
        toml_edit::Value::InlineTable(t) => {
            for (key, elem) in t.iter() {
                let p = join_key(path, key);
                let span = t.key(key).and_then(|k| k.span()).or_else(|| elem.span());
                record(out, &p, span, src, file);
                collect_value(elem, &p, src, file, out);
            }
        }
        _ => {}
    }
}

fn record(
    out: &mut Origins,
    path: &str,
    span: Option<std::ops::Range<usize>>,
    src: &str,
    file: &Path,
) {
    if let Some(span) = span {
        let (line, col) = line_col(src, span.start);
        out.entry(path.to_string()).or_insert(Origin::File {
            path: file.to_path_buf(),
            line,
            col,
        });
    }
}
