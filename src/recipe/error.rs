//! Recipe errors: every diagnostic names the file, the line and column where known, and the key,
//! and carries the span of source text it is about, so that it can be shown in place (see
//! `render.rs`).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Byte ranges of a key as written in its file, and of its value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spans {
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
}

/// Where a key was written: a file and a 1-based line and column (of the key), or the command
/// line (the flag as given, e.g. `--set train.epochs=2.5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File {
        path: PathBuf,
        line: usize,
        col: usize,
        /// The key's and the value's byte ranges in the file, where the parser gave them.
        spans: Spans,
    },
    CommandLine {
        flag: String,
    },
}

impl Origin {
    /// The start of `path` (line 1, column 1), for errors about a whole file.
    pub fn file_start(path: impl Into<PathBuf>) -> Origin {
        Origin::File {
            path: path.into(),
            line: 1,
            col: 1,
            spans: Spans::default(),
        }
    }

    /// A `--set KEY=VALUE` flag.
    pub fn set_flag(text: &str) -> Origin {
        Origin::CommandLine {
            flag: format!("--set {text}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Origin::File {
                path, line, col, ..
            } => write!(f, "{}:{}:{}", path.display(), line, col),
            Origin::CommandLine { flag } => f.write_str(flag),
        }
    }
}

/// Which part of a `key = value` a diagnostic is about: the key (an unknown key, an option that
/// does not apply) or the value (a wrong type, an out-of-range value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Key,
    Value,
}

/// One problem with a recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Where the offending key was written (the recipe file itself when unknown); for a file,
    /// the line and column are those of the first character `span` underlines.
    pub origin: Origin,
    /// The dotted key, e.g. `optimizer.lr` or `transforms.train[1].size`; empty for file-level errors.
    pub key: String,
    pub message: String,
    /// A suggestion (`did you mean `momentum`?`), shown as `help:`.
    pub help: Option<String>,
    /// More context (`valid keys: ...`), shown as `note:`.
    pub note: Option<String>,
    /// The byte range of `text` to underline.
    pub span: Option<Range<usize>>,
    /// The text `span` is in: the file's contents, or the command-line flag.
    pub text: Option<Arc<str>>,
    /// Other places in the same text worth showing, with a label (`first written here`).
    pub related: Vec<(Range<usize>, String)>,
}

impl Diagnostic {
    /// A diagnostic without a span (shown with its location only).
    pub fn new(origin: Origin, key: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            origin,
            key: key.into(),
            message: message.into(),
            help: None,
            note: None,
            span: None,
            text: None,
            related: Vec::new(),
        }
    }

    /// Points the diagnostic at `span` of `text` (a file's contents); its line and column
    /// become those of the span's start.
    pub fn at(mut self, text: &Arc<str>, span: Range<usize>) -> Diagnostic {
        let span = clamp(text, span);
        if let Origin::File { line, col, .. } = &mut self.origin {
            (*line, *col) = line_col(text, span.start);
        }
        self.span = Some(span);
        self.text = Some(text.clone());
        self
    }

    pub fn with_help(mut self, help: Option<String>) -> Diagnostic {
        self.help = help;
        self
    }

    pub fn with_note(mut self, note: Option<String>) -> Diagnostic {
        self.note = note;
        self
    }

    /// The message with its suggestion and note, on one line (what `Display` prints after the
    /// location and key): `unknown key `momentun`; did you mean `momentum`? (valid keys: ...)`.
    pub fn full_message(&self) -> String {
        let mut out = self.message.clone();
        if let Some(h) = &self.help {
            out.push_str("; ");
            out.push_str(h);
        }
        if let Some(n) = &self.note {
            out.push_str(&format!(" ({n})"));
        }
        out
    }

    /// For the flag of a command-line origin, the span of its key (`Focus::Key`) or value.
    pub fn flag_span(flag: &str, focus: Focus) -> Option<Range<usize>> {
        let start = flag.find(' ').map(|i| i + 1).unwrap_or(0);
        match flag[start..].find('=') {
            Some(eq) => Some(match focus {
                Focus::Key => start..start + eq,
                Focus::Value => start + eq + 1..flag.len(),
            }),
            None => Some(start..flag.len()),
        }
        .filter(|r| !r.is_empty())
    }
}

fn clamp(text: &str, span: Range<usize>) -> Range<usize> {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    start..end
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.full_message())
        } else {
            write!(
                f,
                "{}: `{}`: {}",
                self.origin,
                self.key,
                self.full_message()
            )
        }
    }
}

/// Why a recipe could not be loaded. Every variant is invalid input (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: cannot read recipe: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: is a directory, not a recipe file")]
    IsDirectory { path: PathBuf },
    #[error("{path}: not valid UTF-8 (byte {offset}); recipes are UTF-8 TOML")]
    NotUtf8 { path: PathBuf, offset: usize },
    /// Every problem found, ordered by file (the recipe first) and position, without duplicates.
    #[error("{}", join(.0))]
    Invalid(Vec<Diagnostic>),
}

fn join(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl RecipeError {
    pub fn one(origin: Origin, key: impl Into<String>, message: impl Into<String>) -> Self {
        RecipeError::Invalid(vec![Diagnostic::new(origin, key, message)])
    }

    /// The diagnostics (file-level errors become one diagnostic).
    pub fn diagnostics(&self) -> Vec<String> {
        match self {
            RecipeError::Invalid(d) => d.iter().map(|d| d.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before[i + 1..].chars().count())
        .unwrap_or_else(|| before.chars().count())
        + 1;
    (line, col)
}

/// The closest candidate to `word` when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `did you mean `x`?` for the closest candidate, if any.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    did_you_mean(word, candidates).map(|s| format!("did you mean `{s}`?"))
}
