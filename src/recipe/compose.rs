//! Composition: a recipe file and the fragments it `use`s (recursively, paths relative to the
//! naming file) merge key by key into one TOML table; we remember where each key was written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{line_col, Diagnostic, Focus, Origin, RecipeError, Spans};

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
    /// The text of every file read (by the path its origins name), to show errors in place.
    pub sources: BTreeMap<PathBuf, Arc<str>>,
    /// Errors found composing that did not stop it (a missing fragment, a malformed one):
    /// `resolve` reports them with its own.
    pub problems: Vec<Diagnostic>,
    /// Whether every fragment was read (a missing one may have been replaced by the nearest
    /// name, and `problems` says so). When not, validating the rest would judge a recipe
    /// with holes, so `resolve` reports `problems` alone.
    pub complete: bool,
}

impl Composed {
    /// Where `key` was written: the key itself; else the first of its sub-keys that was written
    /// (`--set nosection.x=1` for `nosection`); else, walking up, the `kind` that made it
    /// apply (`--set scheduler.kind=step` for a missing `scheduler.step_size`) or the closest
    /// written ancestor; the recipe file otherwise.
    pub fn origin_of(&self, key: &str) -> Origin {
        self.located(key).0
    }

    /// `origin_of(key)`, and whether it is the key's own (not a relative's).
    fn located(&self, key: &str) -> (Origin, bool) {
        if let Some(o) = self.origins.get(key) {
            return (o.clone(), true);
        }
        (self.origin_near(key), false)
    }

    fn origin_near(&self, key: &str) -> Origin {
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
        Origin::file_start(&self.file)
    }

    /// A diagnostic about `key`, located where `origin_of(key)` says, and pointing at the key
    /// or its value as written (`focus`); a relative's origin is pointed at by its key.
    pub fn diagnostic(&self, key: &str, focus: Focus, message: impl Into<String>) -> Diagnostic {
        let (origin, own) = self.located(key);
        let focus = if own { focus } else { Focus::Key };
        pointed(&self.sources, origin, key, focus, message)
    }
}

/// Reads `path` and everything it uses into one table.
pub fn compose(path: &Path) -> Result<Composed, RecipeError> {
    let mut c = Composing::default();
    let named_by_recipe = |mut diags: Vec<Diagnostic>| {
        for d in &mut diags {
            if matches!(&d.origin, Origin::File { path: p, .. } if p != path) {
                d.message
                    .push_str(&format!(" (composing {})", path.display()));
            }
        }
        diags
    };
    let (table, origins) = load_layer(path, &mut c, None).map_err(|e| match e {
        RecipeError::Invalid(diags) => RecipeError::Invalid(named_by_recipe(diags)),
        other => other,
    })?;
    Ok(Composed {
        file: path.to_path_buf(),
        table,
        origins,
        files: c.files,
        sources: c.sources,
        problems: named_by_recipe(c.problems),
        complete: c.complete,
    })
}

/// The state of one composition: the files on the `use` chain (for cycles), every file read
/// with its text, and the errors that did not stop it.
struct Composing {
    stack: Vec<PathBuf>,
    files: Vec<PathBuf>,
    sources: Sources,
    problems: Vec<Diagnostic>,
    complete: bool,
}

impl Default for Composing {
    fn default() -> Self {
        Composing {
            stack: Vec::new(),
            files: Vec::new(),
            sources: Sources::new(),
            problems: Vec::new(),
            complete: true,
        }
    }
}

/// The existing file nearest to a missing `path`: each missing component replaced by the
/// entry of its folder with the same name but for case, or else the closest likely typo.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    let mut at = PathBuf::new();
    for part in path.components() {
        let next = at.join(part);
        if next.exists() {
            at = next;
            continue;
        }
        let name = part.as_os_str().to_str()?;
        let dir = if at.as_os_str().is_empty() {
            Path::new(".")
        } else {
            at.as_path()
        };
        let names: Vec<String> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let pick = names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(name))
            .map(String::as_str)
            .or_else(|| super::error::did_you_mean(name, names.iter().map(String::as_str)))?;
        at = at.join(pick);
    }
    at.is_file().then_some(at)
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
    c: &mut Composing,
    used_at: Option<(Origin, &str)>,
) -> Result<(toml::Table, Origins), RecipeError> {
    // An error about the `use` entry that named this file, shown there.
    let at_use_diag = |sources: &Sources, msg: String| {
        let origin = used_at
            .as_ref()
            .map(|(o, _)| o.clone())
            .unwrap_or(Origin::file_start(path));
        pointed(sources, origin, "use", Focus::Value, msg)
    };
    let at_use =
        |sources: &Sources, msg: String| RecipeError::Invalid(vec![at_use_diag(sources, msg)]);
    if !path.exists() {
        let msg = format!("fragment `{}` does not exist", path.display());
        let Some((_, written)) = used_at else {
            return Err(RecipeError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        };
        // the nearest name stands in, so the rest of the recipe is still checked
        if let Some(near) = nearest_existing(path) {
            let shown = suggested_use(written, path, &near);
            let d = at_use_diag(&c.sources, msg)
                .with_help(Some(format!("did you mean `{shown}`?")))
                .with_note(Some(format!(
                    "the rest of the recipe was checked with `{shown}` in its place"
                )));
            c.problems.push(d);
            return load_layer(&near, c, used_at);
        }
        let d = at_use_diag(&c.sources, msg).with_note(Some(
            "the recipe's values are checked once this fragment is found: they may depend on it"
                .into(),
        ));
        return Err(RecipeError::Invalid(vec![d]));
    }
    let canonical = path.canonicalize().map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(pos) = c.stack.iter().position(|p| p == &canonical) {
        let chain: Vec<String> = c.stack[pos..]
            .iter()
            .chain(std::iter::once(&canonical))
            .map(|p| p.display().to_string())
            .collect();
        return Err(at_use(
            &c.sources,
            format!("fragment cycle: {}", chain.join(" -> ")),
        ));
    }
    let src = read_text(path).map_err(|e| match (&used_at, e) {
        // a fragment that cannot be read is reported where `use` names it
        (Some(_), RecipeError::IsDirectory { path }) => at_use(
            &c.sources,
            format!("`{}` is a directory, not a recipe fragment", path.display()),
        ),
        (_, e) => e,
    })?;
    let text: Arc<str> = Arc::from(src.as_str());
    let malformed = |e: &toml_edit::TomlError| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim();
        let d = if message == "duplicate key" {
            duplicate_key(path, &text, span)
        } else {
            Diagnostic::new(
                Origin::file_start(path),
                "",
                format!("malformed TOML: {message}"),
            )
            .at(&text, span)
        };
        RecipeError::Invalid(vec![d])
    };
    let doc = toml_edit::Document::parse(src.as_str()).map_err(|e| malformed(&e))?;
    let mut own_origins = Origins::new();
    if let Some(table) = doc.as_item().as_table() {
        collect_table(table, "", &src, path, &mut own_origins);
    }
    let mut own: toml::Table = toml::from_str(&src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let d = Diagnostic::new(
            Origin::file_start(path),
            "",
            format!("malformed TOML: {}", e.message().trim()),
        );
        RecipeError::Invalid(vec![d.at(&text, span)])
    })?;
    c.files.push(path.to_path_buf());
    c.sources.insert(path.to_path_buf(), text.clone());

    let uses = match own.remove("use") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let key = format!("use[{i}]");
                let origin = origin_in(&own_origins, &key, path);
                match item {
                    toml::Value::String(s) => out.push((s, origin)),
                    other => {
                        let msg = format!(
                            "expected a fragment path (a string), found {}",
                            other.type_str()
                        );
                        let d = pointed(&c.sources, origin, &key, Focus::Value, msg);
                        return Err(RecipeError::Invalid(vec![d]));
                    }
                }
            }
            out
        }
        Some(other) => {
            let msg = format!(
                "expected a list of fragment paths, found {}",
                other.type_str()
            );
            let origin = origin_in(&own_origins, "use", path);
            let d = pointed(&c.sources, origin, "use", Focus::Value, msg);
            return Err(RecipeError::Invalid(vec![d]));
        }
    };
    own_origins.retain(|k, _| k != "use" && !k.starts_with("use["));

    c.stack.push(canonical);
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mut merged = toml::Table::new();
    let mut origins = Origins::new();
    // a fragment that fails is reported, and the others are still read
    for (rel, origin) in uses {
        let frag_path = base_dir.join(&rel);
        match load_layer(&frag_path, c, Some((origin, &rel))) {
            Ok((frag, frag_origins)) => {
                merge_into(&mut merged, &mut origins, frag, frag_origins, "")
            }
            Err(RecipeError::Invalid(diags)) => {
                c.problems.extend(diags);
                c.complete = false;
            }
            Err(other) => {
                c.stack.pop();
                return Err(other);
            }
        }
    }
    c.stack.pop();
    merge_into(&mut merged, &mut origins, own, own_origins, "");
    Ok((merged, origins))
}

/// How a `use` entry written as `written` (naming the missing `missing`) would name `near`:
/// the entry with its last parts replaced, as the user wrote it.
fn suggested_use(written: &str, missing: &Path, near: &Path) -> String {
    // the parts of `missing` and `near` differ only where a name was corrected: rewrite the
    // written entry's trailing parts (as many as the two paths have)
    let ours: Vec<_> = near.components().collect();
    let theirs: Vec<_> = missing.components().collect();
    if ours.len() != theirs.len() {
        return near.display().to_string();
    }
    let mut parts: Vec<String> = written.split('/').map(str::to_string).collect();
    let n = parts.len().min(ours.len());
    for k in 0..n {
        let (a, b) = (&ours[ours.len() - 1 - k], &theirs[theirs.len() - 1 - k]);
        if a != b {
            let at = parts.len() - 1 - k;
            parts[at] = a.as_os_str().to_string_lossy().into_owned();
        }
    }
    parts.join("/")
}

fn origin_in(origins: &Origins, key: &str, path: &Path) -> Origin {
    origins
        .get(key)
        .cloned()
        .unwrap_or_else(|| Origin::file_start(path))
}

/// The text of every file read, by path.
pub type Sources = BTreeMap<PathBuf, Arc<str>>;

/// A diagnostic about `key` written at `origin`, pointing at its key or value (`focus`) in the
/// file's text when `sources` has it, or at the key or value of a command-line flag.
pub fn pointed(
    sources: &Sources,
    origin: Origin,
    key: &str,
    focus: Focus,
    message: impl Into<String>,
) -> Diagnostic {
    let mut d = Diagnostic::new(origin.clone(), key, message);
    match &origin {
        Origin::File { path, spans, .. } => {
            let span = match focus {
                Focus::Key => spans.key.clone().or_else(|| spans.value.clone()),
                Focus::Value => spans.value.clone().or_else(|| spans.key.clone()),
            };
            if let (Some(text), Some(span)) = (sources.get(path), span) {
                d = d.at(text, span);
            }
        }
        Origin::CommandLine { flag } => {
            d.span = Diagnostic::flag_span(flag, focus);
            d.text = Some(Arc::from(flag.as_str()));
        }
    }
    d
}

/// The parser's "duplicate key" (at the second occurrence), naming the key with its table
/// and showing where it was first written. To find both, the second occurrence is renamed to
/// a mark and the text parsed again: the mark's path is the key's, and the key itself is then
/// found where it was first written.
fn duplicate_key(path: &Path, text: &Arc<str>, span: std::ops::Range<usize>) -> Diagnostic {
    const MARK: &str = "__runner_duplicate_key__";
    let span = span.start.min(text.len())..span.end.clamp(span.start.min(text.len()), text.len());
    let written = &text[span.clone()];
    let name = match toml_edit::Key::parse(written.trim()) {
        Ok(keys) => keys.last().map(|k| k.get().to_string()).unwrap_or_default(),
        Err(_) => written.trim().to_string(),
    };
    let renamed = format!("{}{MARK}{}", &text[..span.start], &text[span.end..]);
    let mut found = Origins::new();
    if let Ok(doc) = toml_edit::Document::parse(renamed.as_str()) {
        collect_table(doc.as_table(), "", &renamed, path, &mut found);
    }
    let key = found
        .keys()
        .find_map(|k| k.strip_suffix(MARK))
        .map(|prefix| format!("{prefix}{name}"))
        .unwrap_or_else(|| name.clone());
    let mut d = Diagnostic::new(Origin::file_start(path), key.clone(), "duplicate key")
        .at(text, span.clone());
    // the first occurrence comes before the second, where both texts are the same
    let first = match found.get(&key) {
        Some(Origin::File { spans, .. }) => spans.key.clone().filter(|f| f.end <= span.start),
        _ => None,
    };
    if let Some(first) = first {
        let (l, c) = line_col(text, first.start);
        d.note = Some(format!("first written at line {l}, column {c}"));
        d.related.push((first, "first written here".to_string()));
    }
    if key.is_empty() {
        d.message = "malformed TOML: duplicate key".to_string();
    }
    d
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
        let key_span = table.key(key).and_then(|k| k.span());
        record(out, &path, key_span, item.span(), src, file);
        collect_item(item, &path, src, file, out);
    }
}

fn collect_item(item: &toml_edit::Item, path: &str, src: &str, file: &Path, out: &mut Origins) {
    match item {
        toml_edit::Item::Table(t) => collect_table(t, path, src, file, out),
        toml_edit::Item::ArrayOfTables(arr) => {
            for (i, t) in arr.iter().enumerate() {
                let p = format!("{path}[{i}]");
                record(out, &p, None, t.span(), src, file);
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
                record(out, &p, None, elem.span(), src, file);
                collect_value(elem, &p, src, file, out);
            }
        }
        toml_edit::Value::InlineTable(t) => {
            for (key, elem) in t.iter() {
                let p = join_key(path, key);
                let key_span = t.key(key).and_then(|k| k.span());
                record(out, &p, key_span, elem.span(), src, file);
                collect_value(elem, &p, src, file, out);
            }
        }
        _ => {}
    }
}

/// Records where `path` is written: its line and column (of the key, else the value) and both
/// spans. The first record of a path wins.
fn record(
    out: &mut Origins,
    path: &str,
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    src: &str,
    file: &Path,
) {
    if let Some(start) = key.as_ref().or(value.as_ref()).map(|s| s.start) {
        let (line, col) = line_col(src, start);
        out.entry(path.to_string()).or_insert(Origin::File {
            path: file.to_path_buf(),
            line,
            col,
            spans: Spans { key, value },
        });
    }
}
