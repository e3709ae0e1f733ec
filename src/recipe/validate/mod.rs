//! Validation: typing a composed table into a `Recipe` and range / applicability checks on the
//! typed recipe, reporting every problem found, each mapped back to the file, line and column
//! (and span) that wrote it.
//!
//! Typing goes through `serde_path_to_error`, which stops at the first error. To find the
//! others, each error is recorded and its cause taken out of a working copy of the table, and
//! typing is tried again:
//! - an unknown key is removed (nothing depends on it);
//! - a value that does not type is removed, so the schema's default stands in for it; the
//!   range checks that would judge that stand-in (the key itself, the checks reading it, and a
//!   whole table when it was its `kind`) are not reported;
//! - a table that cannot be typed without a key it lacks (a transform without `kind`, a
//!   `[model]` whose `kind` was wrong) is replaced by a placeholder, and none of its checks,
//!   nor the checks across tables that read it, are reported.
//!
//! So a wrong `kind` gives one error, not one per option of the kind it is not.

mod inputs;
mod training;

use std::collections::BTreeSet;

use super::compose::Composed;
use super::error::{suggestion, Diagnostic, Focus, RecipeError};
use super::schema::*;

/// Everything validation found: the typed recipe when it typed, and every problem.
#[derive(Debug, Default)]
pub struct Validation {
    /// `None` when a problem was found.
    pub recipe: Option<Recipe>,
    pub errors: Vec<Diagnostic>,
    /// The keys of `errors` whose value did not type (as opposed to failing a range check).
    pub type_errors: BTreeSet<String>,
}

/// Types the composed table and checks ranges, collecting every problem found.
pub fn validate(composed: &Composed) -> Validation {
    let mut typed = type_recipe(composed);
    if typed.recipe.is_none() && typed.errors.is_empty() {
        // (not reached: typing stops early only after reporting why)
        let d = composed.diagnostic("", Focus::Key, "the recipe could not be typed");
        typed.errors.push(d);
    }
    let mut out = Validation {
        recipe: None,
        errors: typed.errors,
        type_errors: typed.bad.iter().cloned().collect(),
    };
    if let Some(mut recipe) = typed.recipe {
        image_size_from_eval(&mut recipe, composed);
        let mut c = Checker {
            composed,
            out: Vec::new(),
            bad: typed.bad,
            broken: typed.broken,
        };
        c.all(&recipe);
        out.errors.extend(c.out);
        if out.errors.is_empty() {
            out.recipe = Some(recipe);
        }
    }
    out.errors = ordered(out.errors, composed);
    out
}

/// An unwritten `data.image_size` is the side the eval transforms output (or the built-in
/// images' own), when that is known.
fn image_size_from_eval(r: &mut Recipe, composed: &Composed) {
    if composed.origins.contains_key("data.image_size") {
        return;
    }
    let native = (r.data.root == "synth").then_some(r.data.synth.size);
    if let Some((side, _)) = exact_square_side(&r.transforms.eval, native) {
        if side != r.data.image_size {
            r.data.image_size = side;
            r.data.image_size_from_eval = true;
        }
    }
}

/// Types the composed table. Errors name the key and where it was written; every key that does
/// not type is reported.
pub fn type_check(composed: &Composed) -> Result<Recipe, RecipeError> {
    let typed = type_recipe(composed);
    match typed.recipe {
        Some(r) if typed.errors.is_empty() => Ok(r),
        _ => Err(RecipeError::Invalid(ordered(typed.errors, composed))),
    }
}

/// Diagnostics by file (the recipe first, then fragments as read, then the command line) and
/// position, without duplicates; diagnostics at the same place keep the order they were found in.
pub fn ordered(mut diags: Vec<Diagnostic>, composed: &Composed) -> Vec<Diagnostic> {
    use super::error::Origin;
    let rank = |d: &Diagnostic| match &d.origin {
        Origin::File {
            path, line, col, ..
        } => {
            let file = composed
                .files
                .iter()
                .position(|f| f == path)
                .unwrap_or(composed.files.len());
            (file, *line, *col)
        }
        Origin::CommandLine { .. } => (usize::MAX, 0, 0),
    };
    diags.sort_by_key(|d| rank(d));
    let mut seen = BTreeSet::new();
    diags.retain(|d| seen.insert(d.to_string()));
    diags
}

/// A step of a path into the recipe table.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `transforms.train[1].size`
fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    let mut out = Vec::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push(Seg::Index(*index)),
            Segment::Map { key } => out.push(Seg::Key(key.clone())),
            Segment::Enum { variant } => out.push(Seg::Key(variant.clone())),
            Segment::Unknown => break,
        }
    }
    out
}

/// Whether `path` is one transform of a list (`transforms.train[2]`).
fn is_transform(path: &[Seg]) -> bool {
    matches!(path, [Seg::Key(t), Seg::Key(_), Seg::Index(_)] if t == "transforms")
}

/// The value at `path`.
fn get_mut<'a>(root: &'a mut toml::Value, path: &[Seg]) -> Option<&'a mut toml::Value> {
    path.iter().try_fold(root, |cur, seg| match (seg, cur) {
        (Seg::Key(k), toml::Value::Table(t)) => t.get_mut(k),
        (Seg::Index(i), toml::Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

/// Removes the key at `path` from its table; whether it was there.
fn remove(root: &mut toml::Value, path: &[Seg]) -> bool {
    let Some((Seg::Key(last), parent)) = path.split_last() else {
        return false;
    };
    match get_mut(root, parent) {
        Some(toml::Value::Table(t)) => t.remove(last).is_some(),
        _ => false,
    }
}

/// What stands in for a table that cannot be typed, so that the rest of the recipe can be:
/// its checks are not reported.
fn placeholder(path: &[Seg]) -> Option<toml::Value> {
    let text = match path {
        [Seg::Key(k)] if k == "data" => r#"root = "synth""#,
        [Seg::Key(k)] if k == "model" => {
            r#"kind = "convnext"
preset = "atto""#
        }
        p if is_transform(p) => r#"kind = "to_tensor""#,
        _ => return None,
    };
    toml::from_str::<toml::Table>(text)
        .ok()
        .map(toml::Value::Table)
}

/// Replaces the table at `path` with its placeholder; whether it could.
fn stand_in(root: &mut toml::Value, path: &[Seg]) -> bool {
    let Some(value) = placeholder(path) else {
        return false;
    };
    if let Some((Seg::Key(last), parent)) = path.split_last() {
        if let Some(toml::Value::Table(t)) = get_mut(root, parent) {
            t.insert(last.clone(), value);
            return true;
        }
        return false;
    }
    match get_mut(root, path) {
        Some(slot) => {
            *slot = value;
            true
        }
        None => false,
    }
}

/// The result of typing with recovery.
#[derive(Debug, Default)]
struct Typed {
    /// The recipe with defaults and placeholders standing in for what did not type.
    recipe: Option<Recipe>,
    errors: Vec<Diagnostic>,
    /// Keys whose value did not type (the default stands in).
    bad: BTreeSet<String>,
    /// Tables replaced by a placeholder, or whose `kind` did not type.
    broken: BTreeSet<String>,
}

fn type_recipe(composed: &Composed) -> Typed {
    let mut work = toml::Value::Table(composed.table.clone());
    let mut out = Typed::default();
    // Each round takes one cause out; a recipe has far fewer keys than this.
    for _ in 0..1000 {
        let err = match serde_path_to_error::deserialize::<_, Recipe>(work.clone()) {
            Ok(r) => {
                out.recipe = Some(r);
                return out;
            }
            Err(e) => e,
        };
        let mut path = segments(err.path());
        let mut raw = err.inner().message().to_string();
        // A transform's fields are read from buffered content, so serde's path stops at the
        // transform: find the field by typing the transform with each field alone.
        if is_transform(&path) && !raw.starts_with("missing field") {
            if let Some(elem) = get_mut(&mut work, &path).cloned() {
                match transform_culprit(&elem) {
                    Some((field, msg)) => {
                        path.push(Seg::Key(field));
                        raw = msg;
                    }
                    None if raw.starts_with("unknown variant") => {
                        path.push(Seg::Key("kind".into()))
                    }
                    None => {}
                }
            }
        }
        if let Some(rest) = raw.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or(rest).to_string();
            let mut full = path.clone();
            full.push(Seg::Key(field));
            let key = dotted(&full);
            if !out.bad.contains(&key) {
                let d = composed.diagnostic(&key, Focus::Key, "missing required key");
                out.errors.push(d);
            }
            // The table lacks a key it cannot do without: a placeholder stands in for it
            // (for a missing section, in its place).
            let table = if path.is_empty() { full } else { path };
            if !stand_in(&mut work, &table) {
                return out;
            }
            out.broken.insert(dotted(&table));
            continue;
        }
        let explained = explain(&raw, &mut path);
        let key = dotted(&path);
        let unknown_key = raw.starts_with("unknown field");
        let focus = if unknown_key {
            Focus::Key
        } else {
            Focus::Value
        };
        let d = composed
            .diagnostic(&key, focus, explained.message)
            .with_help(explained.help)
            .with_note(explained.note);
        out.errors.push(d);
        if unknown_key {
            if !remove(&mut work, &path) {
                return out;
            }
            continue;
        }
        // A value that does not type: the default stands in for the whole key (a list with
        // a bad item goes whole); a transform that is not a table, its placeholder.
        let mut target = path.clone();
        while matches!(target.last(), Some(Seg::Index(_))) && !is_transform(&target) {
            target.pop();
        }
        let target_key = dotted(&target);
        out.bad.insert(key);
        out.bad.insert(target_key.clone());
        if is_transform(&target) {
            if !stand_in(&mut work, &target) {
                return out;
            }
            out.broken.insert(target_key);
            continue;
        }
        if !remove(&mut work, &target) {
            return out;
        }
        // without its `kind` (or a sweep's `mode`) none of a table's checks hold
        let parent = &target[..target.len().saturating_sub(1)];
        let last = target.last().cloned();
        let discriminator = match last {
            Some(Seg::Key(k)) => k == "kind" || (k == "mode" && dotted(parent) == "sweep"),
            _ => false,
        };
        if discriminator {
            out.broken.insert(dotted(parent));
        }
    }
    out
}

/// The field of a transform (a table with a `kind`) that does not type, and serde's message:
/// the transform typed with its `kind` and that field alone fails for another reason than a
/// missing field. `None` when the fields type (or the `kind` itself does not).
fn transform_culprit(elem: &toml::Value) -> Option<(String, String)> {
    let toml::Value::Table(t) = elem else {
        return None;
    };
    let kind = t.get("kind")?;
    let fails = |table: toml::Table| -> Option<String> {
        match toml::Value::Table(table).try_into::<TransformSpec>() {
            Ok(_) => None,
            Err(e) if e.message().starts_with("missing field") => None,
            Err(e) => Some(e.message().to_string()),
        }
    };
    let mut alone = toml::Table::new();
    alone.insert("kind".into(), kind.clone());
    if fails(alone.clone()).is_some() {
        return None;
    }
    t.iter()
        .filter(|(k, _)| k.as_str() != "kind")
        .find_map(|(k, v)| {
            let mut probe = alone.clone();
            probe.insert(k.clone(), v.clone());
            fails(probe).map(|msg| (k.clone(), msg))
        })
}

/// A message for people, with its suggestion and note.
struct Explained {
    message: String,
    help: Option<String>,
    note: Option<String>,
}

/// Rewrites serde's message for people, adding a suggestion for unknown keys and variants.
/// `path` gains the field when serde's path stops short of it.
fn explain(raw: &str, path: &mut Vec<Seg>) -> Explained {
    let plain = |message: String| Explained {
        message,
        help: None,
        note: None,
    };
    let ends_with = |path: &[Seg], f: &str| matches!(path.last(), Some(Seg::Key(k)) if k == f);
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates = backticked(expected);
        // serde_path_to_error's path already ends with the field; make sure it does.
        if !ends_with(path, field) {
            path.push(Seg::Key(field.to_string()));
        }
        return Explained {
            message: format!("unknown key `{field}`"),
            help: suggestion(field, candidates.iter().map(|s| s.as_str())),
            note: (!candidates.is_empty())
                .then(|| format!("valid keys: {}", candidates.join(", "))),
        };
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (variant, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates = backticked(expected);
        let is = |names: &[&str]| {
            candidates
                .iter()
                .map(|s| s.as_str())
                .eq(names.iter().copied())
        };
        let interpolation = is(&Interpolation::ALL.map(|i| i.name()));
        // (a transform's field is found by `transform_culprit`; this names it if not)
        let field = if interpolation {
            Some("interpolation")
        } else if is(&PaddingMode::NAMES) {
            Some("padding_mode")
        } else {
            None
        };
        if let Some(f) = field.filter(|f| !ends_with(path, f)) {
            path.push(Seg::Key(f.to_string()));
        }
        let what = if interpolation {
            "interpolation"
        } else if path.is_empty() || ends_with(path, "kind") {
            "kind"
        } else {
            "value"
        };
        let help = torchvision_name(variant, &candidates)
            .map(|s| format!("did you mean `{s}`?"))
            .or_else(|| suggestion(variant, candidates.iter().map(|s| s.as_str())));
        return Explained {
            message: format!("unknown {what} `{variant}`"),
            help,
            note: (!candidates.is_empty())
                .then(|| format!("expected one of: {}", candidates.join(", "))),
        };
    }
    if let Some(name) = raw.strip_prefix("data did not match any variant of untagged enum ") {
        let what = match name.trim() {
            "SizeSpec" => "`size`: an integer or [height, width]",
            "RangeSpec" => "a number or [min, max]",
            "LayerScale" => "a number (the initial gamma) or false",
            "Ema" => "the decay of the weights' moving average (e.g. 0.999) or false",
            "InitFrom" => {
                "a weights file (\"path.safetensors\") or another recipe's run ({ recipe = \"pretrain.toml\", pick = \"best\" | \"last\" })"
            }
            "PaddingSpec" => {
                "`padding`: an integer, [left/right, top/bottom] or [left, top, right, bottom]"
            }
            "EraseValue" => "`value`: a number, [r, g, b] (one per channel) or \"random\"",
            "SweepValues" => "a list of values or a distribution ({ uniform = [a, b] }, { loguniform = [a, b] }, { int = [a, b] }, { choice = [...] })",
            _ => "another type",
        };
        return plain(format!("expected {what}"));
    }
    plain(humanize_types(raw))
}

/// torchvision's class and function names (snake-cased) whose transform has another kind
/// here. Only a suggestion: the kinds themselves are fixed by the contract.
const TORCHVISION_KINDS: &[(&str, &str)] = &[
    ("random_horizontal_flip", "horizontal_flip"),
    ("hflip", "horizontal_flip"),
    ("random_sized_crop", "random_resized_crop"),
    ("scale", "resize"),
    ("pil_to_tensor", "to_tensor"),
    ("to_image", "to_tensor"),
    ("to_dtype", "to_tensor"),
    ("convert_image_dtype", "to_tensor"),
];

/// The kind a torchvision name (`RandomHorizontalFlip`, `random_horizontal_flip`, `ToTensor`,
/// ...) stands for, when it is one of `candidates` and not `word` itself.
fn torchvision_name<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    let snake = snake_case(word);
    let target = TORCHVISION_KINDS
        .iter()
        .find(|(tv, _)| *tv == snake)
        .map(|(_, ours)| *ours)
        .unwrap_or(snake.as_str());
    candidates
        .iter()
        .find(|c| c.as_str() == target && c.as_str() != word)
        .map(|c| c.as_str())
}

/// `RandomHorizontalFlip` -> `random_horizontal_flip` (already snake-cased names unchanged).
fn snake_case(word: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = word.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '-' || c == ' ' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// Serde names Rust types; say what a recipe author writes instead.
fn humanize_types(raw: &str) -> String {
    let mut out = raw.to_string();
    for (rust, human) in [
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected u8", "expected an integer in 0..=255"),
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        (
            "expected internally tagged enum TransformSpec",
            "expected a transform: { kind = \"...\", ... }",
        ),
    ] {
        out = out.replace(rust, human);
    }
    out
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, p)| p.to_string())
        .collect()
}

/// Range and applicability checks of a typed recipe. Returns every problem found.
pub fn check(recipe: &Recipe, composed: &Composed) -> Result<(), RecipeError> {
    let mut c = Checker {
        composed,
        out: Vec::new(),
        bad: BTreeSet::new(),
        broken: BTreeSet::new(),
    };
    c.all(recipe);
    if c.out.is_empty() {
        Ok(())
    } else {
        Err(RecipeError::Invalid(ordered(c.out, composed)))
    }
}

/// Whether `key` is `table` or inside it.
fn within(key: &str, table: &str) -> bool {
    key == table
        || key
            .strip_prefix(table)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// A lower bound on the shorter side, in pixels, of the images a transform list outputs, with
/// the index of the transform that sets it (`None`: the images keep their own size, whose
/// shorter side is `native`). `None` when it cannot be known without the images: `native`
/// unknown and no transform fixing the size, or a `resize` with `max_size` (its shorter side
/// then depends on the aspect ratio) last.
pub fn output_side_bound(
    list: &[TransformSpec],
    native: Option<u32>,
) -> Option<(u32, Option<usize>)> {
    let shorter = |s: &SizeSpec| match s {
        SizeSpec::Square(v) => *v,
        SizeSpec::HeightWidth([h, w]) => (*h).min(*w),
    };
    let mut bound = native.map(|n| (n, None));
    for (i, t) in list.iter().enumerate() {
        match t {
            TransformSpec::Resize {
                size: SizeSpec::Square(_),
                max_size: Some(_),
                ..
            } => bound = None,
            TransformSpec::Resize { size, .. }
            | TransformSpec::CenterCrop { size }
            | TransformSpec::RandomCrop { size, .. }
            | TransformSpec::RandomResizedCrop { size, .. } => {
                bound = Some((shorter(size), Some(i)))
            }
            // the rest keep the size (a rotation with `expand` only grows it)
            _ => {}
        }
    }
    bound
}

/// The exact side of the square images a transform list outputs, with the index of the
/// transform that sets it (`None`: the images keep their own square size `native`). `None` when
/// it cannot be known without the images, or the output is not square.
pub fn exact_square_side(
    list: &[TransformSpec],
    native: Option<u32>,
) -> Option<(u32, Option<usize>)> {
    let mut side = native.map(|n| (n, None));
    for (i, t) in list.iter().enumerate() {
        match t {
            // the shorter side only: square stays square, an unknown aspect stays unknown
            TransformSpec::Resize {
                size: SizeSpec::Square(v),
                max_size,
                ..
            } => {
                side = match (side, max_size) {
                    (Some(_), None) => Some((*v, Some(i))),
                    _ => None,
                }
            }
            TransformSpec::Resize { size, .. }
            | TransformSpec::CenterCrop { size }
            | TransformSpec::RandomCrop { size, .. }
            | TransformSpec::RandomResizedCrop { size, .. } => {
                side = match size {
                    SizeSpec::Square(v) => Some((*v, Some(i))),
                    SizeSpec::HeightWidth([h, w]) if h == w => Some((*h, Some(i))),
                    SizeSpec::HeightWidth(_) => None,
                }
            }
            TransformSpec::RandomRotation { expand: true, .. } => side = None,
            _ => {}
        }
    }
    side
}

/// The metric names a monitor may watch (the store's epoch columns).
pub use crate::recipe::metrics::METRICS;

struct Checker<'a> {
    composed: &'a Composed,
    out: Vec<Diagnostic>,
    /// Keys whose value did not type: a default stands in for it.
    bad: BTreeSet<String>,
    /// Tables a placeholder stands in for, or whose `kind` did not type.
    broken: BTreeSet<String>,
}

impl Checker<'_> {
    fn all(&mut self, recipe: &Recipe) {
        self.data(&recipe.data);
        self.transforms("transforms.train", &recipe.transforms.train);
        self.transforms("transforms.eval", &recipe.transforms.eval);
        self.model(&recipe.model);
        self.input_size(recipe);
        self.loss(&recipe.loss);
        self.optimizer(&recipe.optimizer);
        self.scheduler(&recipe.scheduler, recipe.train.epochs);
        self.train(&recipe.train);
        self.checkpoint(&recipe.checkpoint);
        self.verification(&recipe.verification);
        self.plateau_monitor_logged(recipe);
        if let Some(s) = &recipe.sweep {
            self.sweep(s);
            if let Some(p) = &s.prune {
                self.prune(p, recipe);
            }
        }
        if let Some(s) = &recipe.slurm {
            self.slurm(s);
        }
    }

    /// Whether the value at `key` is a stand-in (a default or placeholder for one that did
    /// not type): checking it would judge the stand-in.
    fn stood_in(&self, key: &str) -> bool {
        self.bad.contains(key) || self.broken.iter().any(|t| within(key, t))
    }

    /// Whether any of `keys`, or anything inside them, is a stand-in.
    fn reads_stand_in(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| {
            self.stood_in(k)
                || self
                    .bad
                    .iter()
                    .chain(self.broken.iter())
                    .any(|b| within(b, k))
        })
    }

    fn report(&mut self, key: &str, focus: Focus, message: String, help: Option<String>) {
        if self.stood_in(key) {
            return;
        }
        let d = self
            .composed
            .diagnostic(key, focus, message)
            .with_help(help);
        self.out.push(d);
    }

    fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.report(key, Focus::Value, message.into(), None);
    }

    /// `fail`, unless one of the keys the check reads (besides `key`) is a stand-in.
    fn fail_reading(&mut self, key: &str, reads: &[&str], message: impl Into<String>) {
        if !self.reads_stand_in(reads) {
            self.fail(key, message);
        }
    }

    fn require(&mut self, ok: bool, key: &str, message: &str) {
        if !ok {
            self.fail(key, message);
        }
    }

    fn positive(&mut self, key: &str, v: f64) {
        self.require(
            v.is_finite() && v > 0.0,
            key,
            &format!("must be > 0 (got {v})"),
        );
    }

    fn unit_open(&mut self, key: &str, v: f64) {
        self.require(
            (0.0..1.0).contains(&v),
            key,
            &format!("must be in [0, 1) (got {v})"),
        );
    }

    fn probability(&mut self, key: &str, v: f64) {
        self.require(
            (0.0..=1.0).contains(&v),
            key,
            &format!("must be a probability in [0, 1] (got {v})"),
        );
    }

    fn ordered(&mut self, key: &str, r: [f64; 2]) {
        self.require(
            r[0].is_finite() && r[1].is_finite() && r[0] <= r[1],
            key,
            &format!(
                "must be [min, max] with min <= max (got [{}, {}])",
                r[0], r[1]
            ),
        );
    }

    fn not_for(&mut self, set: bool, key: &str, kind: &str) {
        if set {
            let msg = format!("does not apply to kind `{kind}`");
            self.report(key, Focus::Key, msg, None);
        }
    }
}

fn kind_str(k: ModelKind) -> &'static str {
    match k {
        ModelKind::Convnext => "convnext",
        ModelKind::Resnet => "resnet",
        ModelKind::MobilenetV2 => "mobilenet_v2",
        ModelKind::MobilenetV3 => "mobilenet_v3",
    }
}

fn sched_str(k: SchedulerKind) -> &'static str {
    match k {
        SchedulerKind::None => "none",
        SchedulerKind::Step => "step",
        SchedulerKind::Multistep => "multistep",
        SchedulerKind::Cosine => "cosine",
        SchedulerKind::Plateau => "plateau",
    }
}

/// Slurm's time limit formats: MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS,
/// DAYS-HOURS:MINUTES, DAYS-HOURS:MINUTES:SECONDS (or "infinite").
pub fn slurm_time_ok(t: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if t == "infinite" || t == "UNLIMITED" {
        return true;
    }
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    if days.is_some_and(|d| !digits(d)) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    parts.iter().all(|p| digits(p))
        && match days {
            Some(_) => (1..=3).contains(&parts.len()),
            None => (1..=3).contains(&parts.len()),
        }
}

/// A Slurm memory size: digits with an optional K, M, G or T.
pub fn slurm_mem_ok(m: &str) -> bool {
    let num = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !num.is_empty() && num.len() + 1 >= m.len() && num.chars().all(|c| c.is_ascii_digit())
}
