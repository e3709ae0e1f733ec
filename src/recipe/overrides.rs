//! `--set key=value` overrides and dotted-key assignment into a composed table.
//! Values are read as TOML (`0.1`, `true`, `[1, 2]`, `"x"`); anything that is not valid TOML is
//! taken as a string. The schema types them: a value the schema wants as a string is retried as
//! its text (see `load`).

use super::compose::{pointed, Composed, Sources};
use super::error::{Focus, Origin, RecipeError};

/// One `key=value` from the command line or a sweep point.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: String,
    pub value: toml::Value,
    /// The text as written (for retrying as a string).
    pub raw: Option<String>,
    pub origin: Origin,
}

impl Override {
    /// Parses `key=value`.
    pub fn parse(text: &str) -> Result<Override, RecipeError> {
        let origin = Origin::set_flag(text);
        let fail = |key: &str, msg: &str| {
            let d = pointed(&Sources::new(), origin.clone(), key, Focus::Key, msg);
            RecipeError::Invalid(vec![d])
        };
        let Some((key, raw)) = split_assignment(text) else {
            return Err(fail(
                text,
                "expected `key=value`, e.g. `--set optimizer.lr=0.05`",
            ));
        };
        let key = key.trim();
        if key.is_empty() || parse_path(key).is_none() {
            return Err(fail(
                key,
                "expected a dotted key such as `optimizer.lr`, `transforms.train[0].size` or \
                 `sweep.params.\"optimizer.lr\"` (a quoted part may hold dots, as in TOML)",
            ));
        }
        let raw = raw.trim();
        Ok(Override {
            key: key.to_string(),
            value: parse_value(raw),
            raw: Some(raw.to_string()),
            origin,
        })
    }
}

/// Reads a value as TOML, or as a plain string when it is not TOML.
pub fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// A path segment: a table key or an array index.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `key=value` at the first `=` outside a quoted part of the key.
fn split_assignment(text: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '=' => return Some((&text[..i], &text[i + 1..])),
            None => {}
        }
    }
    None
}

/// A dotted key's parts, as TOML writes keys: bare parts (`optimizer.lr`), quoted parts that
/// may hold dots (`sweep.params."optimizer.lr"`, or with single quotes), each followed by
/// list indexes (`transforms.train[0].size`). `None` when it is not such a key.
fn parse_path(key: &str) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    let mut rest = key.trim();
    loop {
        rest = rest.trim_start();
        let name;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut s = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => match chars.next()?.1 {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        other => s.push(other),
                    },
                    c => s.push(c),
                }
            }
            name = s;
            rest = &quoted[end?..];
        } else if let Some(quoted) = rest.strip_prefix('\'') {
            let close = quoted.find('\'')?;
            name = quoted[..close].to_string();
            rest = &quoted[close + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            name = rest[..end].trim_end().to_string();
            if name.is_empty() {
                return None;
            }
            rest = &rest[end..];
        }
        out.push(Segment::Key(name));
        rest = rest.trim_start();
        while let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']')?;
            out.push(Segment::Index(inner[..close].trim().parse().ok()?));
            rest = &inner[close + 1..];
        }
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix('.')?;
    }
}

/// Sets `ov.key` to `ov.value` in the composed table, creating tables on the way. On error the
/// table is unchanged.
pub fn apply(composed: &mut Composed, ov: &Override) -> Result<(), RecipeError> {
    let fail = |msg: String| {
        let d = pointed(
            &composed.sources,
            ov.origin.clone(),
            &ov.key,
            Focus::Key,
            msg,
        );
        RecipeError::Invalid(vec![d])
    };
    let path = parse_path(&ov.key).ok_or_else(|| fail("not a valid dotted key".to_string()))?;
    let mut root = toml::Value::Table(composed.table.clone());
    set_path(&mut root, &path, ov.value.clone()).map_err(fail)?;
    if let toml::Value::Table(t) = root {
        composed.table = t;
    }
    // origins are keyed as the files' are: parts joined by dots, unquoted
    let key = &path_key(&path);
    composed.origins.retain(|k, _| {
        !(k == key || k.starts_with(&format!("{key}.")) || k.starts_with(&format!("{key}[")))
    });
    composed.origins.insert(key.clone(), ov.origin.clone());
    Ok(())
}

/// A parsed dotted key written as the origins write keys (`sweep.params.optimizer.lr` for
/// `sweep.params."optimizer.lr"`, `transforms.train[0].size`).
fn path_key(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The value at a dotted key (`optimizer.kind`, `transforms.train[0].kind`), if present.
pub fn get<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let path = parse_path(key)?;
    let (first, rest) = path.split_first()?;
    let Segment::Key(k) = first else {
        return None;
    };
    rest.iter()
        .try_fold(table.get(k)?, |cur, seg| match (seg, cur) {
            (Segment::Key(k), toml::Value::Table(t)) => t.get(k),
            (Segment::Index(i), toml::Value::Array(a)) => a.get(*i),
            _ => None,
        })
}

/// Removes the key at a dotted path (`optimizer.betas`, `transforms.train[0].size`) and its
/// origins; whether it was there.
pub fn remove(composed: &mut Composed, key: &str) -> bool {
    let Some(path) = parse_path(key) else {
        return false;
    };
    let Some((Segment::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let mut root = toml::Value::Table(std::mem::take(&mut composed.table));
    let parent = parents
        .iter()
        .try_fold(&mut root, |cur, seg| match (seg, cur) {
            (Segment::Key(k), toml::Value::Table(t)) => t.get_mut(k),
            (Segment::Index(i), toml::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        });
    let removed = match parent {
        Some(toml::Value::Table(t)) => t.remove(last).is_some(),
        _ => false,
    };
    if let toml::Value::Table(t) = root {
        composed.table = t;
    }
    let (dot, bracket) = (format!("{key}."), format!("{key}["));
    composed
        .origins
        .retain(|k, _| !(k == key || k.starts_with(&dot) || k.starts_with(&bracket)));
    removed
}

fn set_path(cur: &mut toml::Value, path: &[Segment], value: toml::Value) -> Result<(), String> {
    let Some((seg, rest)) = path.split_first() else {
        *cur = value;
        return Ok(());
    };
    match seg {
        Segment::Key(k) => {
            let toml::Value::Table(t) = cur else {
                return Err(format!("`{k}` is inside a value that is not a table"));
            };
            let child = t.entry(k.clone()).or_insert_with(|| match rest.first() {
                Some(Segment::Index(_)) => toml::Value::Array(Vec::new()),
                _ => toml::Value::Table(toml::Table::new()),
            });
            set_path(child, rest, value)
        }
        Segment::Index(idx) => {
            let toml::Value::Array(a) = cur else {
                return Err("indexes a value that is not a list".to_string());
            };
            let len = a.len();
            let elem = a
                .get_mut(*idx)
                .ok_or_else(|| format!("index {idx} is out of range (the list has {len} items)"))?;
            set_path(elem, rest, value)
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn quoted_key_parts_keep_their_dots() {
        assert_eq!(
            parse_path(r#"sweep.params."optimizer.lr""#),
            Some(vec![
                Segment::Key("sweep".into()),
                Segment::Key("params".into()),
                Segment::Key("optimizer.lr".into())
            ])
        );
        assert_eq!(
            parse_path("sweep.params.'model.drop_path'"),
            Some(vec![
                Segment::Key("sweep".into()),
                Segment::Key("params".into()),
                Segment::Key("model.drop_path".into())
            ])
        );
        assert_eq!(
            parse_path("transforms.train[0].size"),
            Some(vec![
                Segment::Key("transforms".into()),
                Segment::Key("train".into()),
                Segment::Index(0),
                Segment::Key("size".into())
            ])
        );
        assert_eq!(parse_path("a..b"), None);
        assert_eq!(parse_path(r#"a."b"#), None);
        assert_eq!(parse_path("a[x]"), None);
        assert_eq!(
            split_assignment(r#"sweep.params."a=b"=[1]"#),
            Some((r#"sweep.params."a=b""#, "[1]"))
        );
    }
}
