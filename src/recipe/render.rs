//! Shows recipe diagnostics in place, as cargo shows compiler errors (through
//! `annotate-snippets`, the crate rustc and cargo render theirs with), or as JSON events.
//!
//! ```text
//! error: `optimizer.momentun`: unknown key `momentun`
//!   --> recipes/r.toml:12:1
//!    |
//! 12 | momentun = 0.9
//!    | ^^^^^^^^
//!    |
//!    = help: did you mean `momentum`?
//!    = note: valid keys: kind, lr, momentum, ...
//! ```
//!
//! A `--set` error has no file: the flag is shown instead, with the caret under its key or value.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use super::error::{Diagnostic, Origin};

/// The title line's text: `` `key`: message `` (the message alone for file-level errors).
fn title(d: &Diagnostic) -> String {
    if d.key.is_empty() {
        d.message.clone()
    } else {
        format!("`{}`: {}", d.key, d.message)
    }
}

/// One diagnostic, cargo style: `error: ...`, ` --> file:line:col`, the source line with a
/// caret under the span, `= help:` and `= note:` lines. `styled`: with ANSI colours.
pub fn render(d: &Diagnostic, styled: bool) -> String {
    let renderer = if styled {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let title = title(d);
    let path = match &d.origin {
        Origin::File { path, .. } => Some(path.display().to_string()),
        Origin::CommandLine { .. } => None,
    };
    let mut group: Group = Group::with_title(Level::ERROR.primary_title(title.as_str()));
    match (&d.text, &d.span, &d.origin) {
        (Some(text), Some(span), origin) => {
            let mut snippet = Snippet::source(&**text)
                .annotation(AnnotationKind::Primary.span(span.clone()))
                .annotations(d.related.iter().map(|(span, label)| {
                    AnnotationKind::Context
                        .span(span.clone())
                        .label(label.as_str())
                }));
            snippet = match (origin, &path) {
                (Origin::File { .. }, Some(p)) => snippet.path(p.as_str()),
                // the flag is one line of its own, not a file's
                _ => snippet.line_numbering(false),
            };
            group = group.element(snippet);
        }
        (_, _, Origin::File { line, col, .. }) => {
            let p = path.as_deref().unwrap_or_default();
            group = group.element(
                annotate_snippets::Origin::path(p)
                    .line(*line)
                    .char_column(*col),
            );
        }
        (_, _, Origin::CommandLine { flag }) => {
            group = group.element(
                Snippet::<annotate_snippets::Annotation>::source(flag.as_str())
                    .line_numbering(false),
            );
        }
    }
    if let Some(h) = &d.help {
        group = group.element(Level::HELP.message(h.as_str()));
    }
    if let Some(n) = &d.note {
        group = group.element(Level::NOTE.message(n.as_str()));
    }
    renderer.render(&[group])
}

/// Every diagnostic, a blank line between them, and with more than one, a last line that
/// counts them (as rustc's "aborting due to N previous errors").
pub fn render_all(diags: &[Diagnostic], styled: bool) -> String {
    let mut out: Vec<String> = diags.iter().map(|d| render(d, styled)).collect();
    if diags.len() > 1 {
        let summary = format!("aborting due to {} previous errors", diags.len());
        let renderer = if styled {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        out.push(renderer.render(&[Group::with_title(
            Level::ERROR.primary_title(summary.as_str()),
        )]));
    }
    out.join("\n\n")
}

/// A diagnostic as a JSON `error` event: `message` (with its suggestion and note), `key`,
/// `file`, `line`, `col` (null for the command line, which has `flag`), and `code`, the exit
/// status, on the event that ends the command (null on the others).
pub fn json_event(d: &Diagnostic, code: Option<i32>) -> serde_json::Value {
    let key = (!d.key.is_empty()).then_some(d.key.as_str());
    match &d.origin {
        Origin::File {
            path, line, col, ..
        } => serde_json::json!({
            "event": "error",
            "message": d.full_message(),
            "key": key,
            "file": path.display().to_string(),
            "line": line,
            "col": col,
            "code": code,
        }),
        Origin::CommandLine { flag } => serde_json::json!({
            "event": "error",
            "message": d.full_message(),
            "key": key,
            "file": null,
            "line": null,
            "col": null,
            "flag": flag,
            "code": code,
        }),
    }
}
