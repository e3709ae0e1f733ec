//! The planner: expands a recipe's sweep into fully resolved runs, each with its run key, and
//! plans the runs they start from (`model.init_from = { recipe = ... }`) before them: a
//! pipeline, parents first.

pub mod key;
pub mod prune;
pub mod sampler;
pub mod search;
pub mod sweep;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::recipe::{self, Composed, Focus, InitFrom, Origin, Override, Recipe, RecipeError};

/// One run the recipe asks for.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// 0-based position in its recipe's sweep.
    pub index: usize,
    pub key: String,
    /// The swept values of this run (dotted key -> value), as JSON.
    pub overrides: BTreeMap<String, serde_json::Value>,
    /// The resolved recipe (no `[sweep]`; `model.init_from.parent_key` filled in).
    pub recipe: Recipe,
    pub data_fingerprint: String,
    /// The recipe file this run comes from (a parent's is another file).
    pub recipe_path: PathBuf,
    /// One of the planned recipe's own runs; false for a parent planned for them.
    pub target: bool,
}

impl PlannedRun {
    /// The key of the run this one starts from (`model.init_from = { recipe = ... }`).
    pub fn parent_key(&self) -> Option<&str> {
        self.recipe
            .model
            .init_from
            .as_ref()?
            .run()?
            .parent_key
            .as_deref()
    }
}

/// A fingerprint of the data a recipe reads (see `crate::data::fingerprint_for`).
pub type Fingerprinter<'a> = dyn Fn(&Recipe) -> Result<String, String> + 'a;

/// Plans every run of the recipe at `path` with the command line's `--set` overrides, after
/// the runs they start from (parents first, each once; `--set` applies to the recipe's own
/// runs only).
pub fn plan_file(
    path: &Path,
    cli: &[Override],
    fingerprint: &Fingerprinter,
) -> Result<Vec<PlannedRun>, RecipeError> {
    plan(recipe::compose(path)?, cli, fingerprint)
}

/// The one run `runner run` trains from a search recipe (`sweep.mode = "tpe"`): the recipe
/// without its `[sweep]`, with the command line's values (a search's child runs get their
/// trial's values this way), its swept keys kept as the run's overrides.
pub fn plan_search_point(
    path: &Path,
    cli: &[Override],
    fingerprint: &Fingerprinter,
) -> Result<Vec<PlannedRun>, RecipeError> {
    let mut base = recipe::compose(path)?;
    let (_, top) = recipe::resolve(base.clone(), cli)?;
    let keys: Vec<String> = top
        .sweep
        .map(|s| s.params.into_keys().collect())
        .unwrap_or_default();
    base.table.remove("sweep");
    let cli: Vec<Override> = cli
        .iter()
        .filter(|o| !o.key.starts_with("sweep"))
        .cloned()
        .collect();
    let mut runs = plan(base, &cli, fingerprint)?;
    for r in runs.iter_mut().filter(|r| r.target) {
        r.overrides = keys
            .iter()
            .map(|k| (k.clone(), lookup_json(&r.recipe, k)))
            .collect();
    }
    Ok(runs)
}

/// Plans every run of a composed recipe (and the runs they start from, first). Runs with the
/// same key are planned once.
pub fn plan(
    base: Composed,
    cli: &[Override],
    fingerprint: &Fingerprinter,
) -> Result<Vec<PlannedRun>, RecipeError> {
    let mut parents = Parents::default();
    let mut stack = vec![identity(&base.file)];
    let targets = plan_composed(base, cli, fingerprint, &mut stack, &mut parents)?;
    let mut out = parents.ordered;
    out.extend(targets);
    Ok(out)
}

/// The parents planned so far, by recipe file, in the order they must run.
#[derive(Default)]
struct Parents {
    by_file: BTreeMap<PathBuf, PlannedRun>,
    ordered: Vec<PlannedRun>,
}

/// A recipe file's identity for cycle detection and caching: its canonical path when it
/// exists.
fn identity(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| normalize(path))
}

/// `a/./b/../c` as `a/c` (lexically; keeps a leading `..`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if out
                    .components()
                    .next_back()
                    .is_some_and(|l| matches!(l, Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn plan_composed(
    base: Composed,
    cli: &[Override],
    fingerprint: &Fingerprinter,
    stack: &mut Vec<PathBuf>,
    parents: &mut Parents,
) -> Result<Vec<PlannedRun>, RecipeError> {
    // Every swept key is checked on its own first, with the recipe's own errors, so that one
    // error (an empty list, an unknown key, an invalid recipe) does not hide the others.
    let top = match recipe::resolve(base.clone(), cli) {
        Ok((_, top)) => top,
        Err(RecipeError::Invalid(mut found)) => {
            found.extend(swept_key_errors(&base, cli, &found));
            return Err(RecipeError::Invalid(found));
        }
        Err(other) => return Err(other),
    };
    let own = swept_key_errors(&base, cli, &[]);
    if !own.is_empty() {
        return Err(RecipeError::Invalid(own));
    }
    if top
        .sweep
        .as_ref()
        .is_some_and(|s| s.mode == recipe::SweepMode::Tpe)
    {
        // a search: its trials are planned as they are proposed (`search::Search`); only the
        // runs they start from are planned now
        let mut fingerprints = BTreeMap::new();
        let point = Vec::new();
        plan_point(
            &base,
            cli,
            &point,
            fingerprint,
            stack,
            parents,
            &mut fingerprints,
        )?;
        return Ok(Vec::new());
    }
    let points = sweep::expand(top.sweep.as_ref());
    let mut runs: Vec<PlannedRun> = Vec::new();
    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    for point in points {
        let mut run = plan_point(
            &base,
            cli,
            &point,
            fingerprint,
            stack,
            parents,
            &mut fingerprints,
        )?;
        if runs.iter().any(|r| r.key == run.key) {
            continue;
        }
        run.index = runs.len();
        runs.push(run);
    }
    Ok(runs)
}

/// The run of one sweep point (its `index` 0): the recipe without `[sweep]`, the point's
/// values, then the command line's; the runs it starts from planned into `parents`; data
/// fingerprints cached in `fingerprints` by the data section.
fn plan_point(
    base: &Composed,
    cli: &[Override],
    point: &sweep::Point,
    fingerprint: &Fingerprinter,
    stack: &mut Vec<PathBuf>,
    parents: &mut Parents,
    fingerprints: &mut BTreeMap<String, String>,
) -> Result<PlannedRun, RecipeError> {
    let mut composed = base.clone();
    composed.table.remove("sweep");
    let mut ovs: Vec<Override> = point
        .iter()
        .map(|(k, v)| Override {
            key: k.clone(),
            value: v.clone(),
            raw: None,
            origin: base.origin_of(&format!("sweep.params.{k}")),
        })
        .collect();
    // The command line wins over swept values.
    ovs.extend(cli.iter().filter(|o| !o.key.starts_with("sweep")).cloned());
    let (resolved, mut recipe) = recipe::resolve(composed, &ovs)?;
    link_parent(&resolved, &mut recipe, fingerprint, stack, parents)?;
    let data_key = serde_json::to_string(&recipe.data).unwrap_or_default();
    let fp = match fingerprints.get(&data_key) {
        Some(fp) => fp.clone(),
        None => {
            let fp = fingerprint(&recipe).map_err(|msg| {
                let d = base.diagnostic("data.root", recipe::Focus::Value, msg);
                RecipeError::Invalid(vec![d])
            })?;
            fingerprints.insert(data_key, fp.clone());
            fp
        }
    };
    let key = key::run_key(&recipe, &fp);
    let overrides = point
        .iter()
        .map(|(k, _)| (k.clone(), lookup_json(&recipe, k)))
        .collect();
    Ok(PlannedRun {
        index: 0,
        key,
        overrides,
        recipe,
        data_fingerprint: fp,
        recipe_path: base.file.clone(),
        target: true,
    })
}

/// The errors each swept key's values make on their own (every value, or a distribution's
/// bounds, applied alone to the recipe), less those in `known` (the recipe's own), each once.
/// Empty when the `[sweep]` does not type (validation reports that).
fn swept_key_errors(
    base: &Composed,
    cli: &[Override],
    known: &[recipe::Diagnostic],
) -> Vec<recipe::Diagnostic> {
    let mut with_cli = base.clone();
    for ov in cli.iter().filter(|o| o.key.starts_with("sweep")) {
        if recipe::overrides::apply(&mut with_cli, ov).is_err() {
            return Vec::new();
        }
    }
    let Some(table) = with_cli.table.get("sweep").cloned() else {
        return Vec::new();
    };
    let Ok(config) = table.try_into::<recipe::SweepConfig>() else {
        return Vec::new();
    };
    let mut without = base.clone();
    without.table.remove("sweep");
    let same = |a: &recipe::Diagnostic, b: &recipe::Diagnostic| {
        a.key == b.key && a.message == b.message && a.span == b.span
    };
    let mut out: Vec<recipe::Diagnostic> = Vec::new();
    for (key, values) in &config.params {
        let origin = with_cli.origin_of(&format!("sweep.params.{key}"));
        for value in sweep::values_to_check(values) {
            let mut ovs = vec![Override {
                key: key.clone(),
                value,
                raw: None,
                origin: origin.clone(),
            }];
            ovs.extend(cli.iter().filter(|o| !o.key.starts_with("sweep")).cloned());
            let Err(RecipeError::Invalid(found)) = recipe::resolve(without.clone(), &ovs) else {
                continue;
            };
            for d in found {
                let seen = known.iter().chain(out.iter()).any(|k| same(k, &d));
                if !seen {
                    out.push(d);
                }
            }
        }
    }
    // in the order they were written; the runs' combinations wait for these
    out.sort_by_key(|d| match &d.origin {
        Origin::File {
            path, line, col, ..
        } => (0, path.clone(), *line, *col),
        Origin::CommandLine { .. } => (1, PathBuf::new(), 0, 0),
    });
    if let Some(last) = out.last_mut() {
        let note = "combinations of the swept values are checked once each value passes alone";
        last.note = Some(match last.note.take() {
            Some(n) => format!("{n}; {note}"),
            None => note.to_string(),
        });
    }
    out
}

/// `model.init_from = { recipe = ... }`: plans the parent recipe (relative to the file that
/// names it; once per file), and writes its path from the working directory and its run's
/// key into `recipe`. A cycle, a missing file or a parent with a `[sweep]` is an error at the
/// `model.init_from.recipe` that names it.
fn link_parent(
    composed: &Composed,
    recipe: &mut Recipe,
    fingerprint: &Fingerprinter,
    stack: &mut Vec<PathBuf>,
    parents: &mut Parents,
) -> Result<(), RecipeError> {
    let Some(InitFrom::Run(link)) = recipe.model.init_from.as_mut() else {
        return Ok(());
    };
    const KEY: &str = "model.init_from.recipe";
    let fail =
        |msg: String| RecipeError::Invalid(vec![composed.diagnostic(KEY, Focus::Value, msg)]);
    let base_dir = match composed.origin_of(KEY) {
        Origin::File { path, .. } => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        Origin::CommandLine { .. } => PathBuf::new(),
    };
    let path = normalize(&base_dir.join(&link.recipe));
    if !path.is_file() {
        return Err(fail(format!(
            "recipe `{}` does not exist ({}; the path is relative to the file that names it)",
            link.recipe,
            path.display()
        )));
    }
    let id = identity(&path);
    if let Some(at) = stack.iter().position(|p| *p == id) {
        let chain: Vec<String> = stack[at..]
            .iter()
            .chain(std::iter::once(&id))
            .map(|p| p.display().to_string())
            .collect();
        return Err(fail(format!(
            "a cycle of recipes that start from each other: {}",
            chain.join(" -> ")
        )));
    }
    let parent = match parents.by_file.get(&id) {
        Some(p) => p.clone(),
        None => {
            let parent_composed = recipe::compose(&path)?;
            if parent_composed.table.contains_key("sweep") {
                return Err(fail(format!(
                    "recipe `{}` has a [sweep]: a recipe other runs start from must plan one run",
                    path.display()
                )));
            }
            stack.push(id.clone());
            let planned = plan_composed(parent_composed, &[], fingerprint, stack, parents);
            stack.pop();
            let mut planned = planned?;
            let Some(mut p) = planned.pop() else {
                return Err(fail(format!("recipe `{}` plans no run", path.display())));
            };
            p.target = false;
            parents.by_file.insert(id, p.clone());
            parents.ordered.push(p.clone());
            p
        }
    };
    link.recipe = path.display().to_string();
    link.parent_key = Some(parent.key);
    Ok(())
}

/// The value at a dotted key of a resolved recipe, as JSON (Null when absent).
pub fn lookup_json(recipe: &Recipe, dotted: &str) -> serde_json::Value {
    let v = serde_json::to_value(recipe).unwrap_or(serde_json::Value::Null);
    lookup_value(&v, dotted)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// The value at a dotted key (with `[i]` indices) of a JSON value.
pub fn lookup_value<'a>(v: &'a serde_json::Value, dotted: &str) -> Option<&'a serde_json::Value> {
    let mut cur = v;
    for part in dotted.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        cur = cur.get(name)?;
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}
