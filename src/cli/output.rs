//! Output formats shared by the reporting commands: aligned text tables, JSON, CSV.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

/// `--format` of the commands whose output is not one table: `table` or `json` (no `csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ReportFormat {
    #[default]
    Table,
    Json,
}

impl From<ReportFormat> for Format {
    fn from(f: ReportFormat) -> Format {
        match f {
            ReportFormat::Table => Format::Table,
            ReportFormat::Json => Format::Json,
        }
    }
}

/// Prints JSON to stdout alone.
pub fn print_json(v: &serde_json::Value) {
    crate::outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

/// Renders rows as an aligned text table.
pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers);
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// Renders rows as CSV (RFC 4180 quoting through the csv crate).
/// `rows` under `headers` as CSV. A `-` (a missing value in tables) is an empty field.
pub fn csv(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(headers);
    for r in rows {
        let _ = w.write_record(r.iter().map(|f| if f == "-" { "" } else { f.as_str() }));
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// A JSON value as a short table cell.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => fmt_num(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A JSON value as a cell in `format`: exact for CSV (spreadsheets compute with it), short
/// for tables.
pub fn cell_in(v: &serde_json::Value, format: Format) -> String {
    match (format, v) {
        (Format::Csv, serde_json::Value::String(s)) => s.clone(),
        (Format::Csv, serde_json::Value::Null) => String::new(),
        (Format::Csv, other) => other.to_string(),
        _ => cell(v),
    }
}

/// A number as a cell in `format`: every digit for CSV, 4 significant digits for tables.
pub fn num_in(f: f64, format: Format) -> String {
    if format == Format::Csv {
        f.to_string()
    } else {
        fmt_num(f)
    }
}

pub use crate::console::{fmt_lr, fmt_num};
