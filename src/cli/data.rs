//! `runner data synth | stats | preview`.

use std::path::Path;

use clap::ValueEnum;

use super::output::{csv, print_json, table, Format};
use super::{parse_sets, CliError};
use crate::engine::progress::Reporter;
use crate::recipe::{Difficulty, SynthConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DifficultyArg {
    Easy,
    Medium,
    Hard,
}

impl From<DifficultyArg> for Difficulty {
    fn from(d: DifficultyArg) -> Difficulty {
        match d {
            DifficultyArg::Easy => Difficulty::Easy,
            DifficultyArg::Medium => Difficulty::Medium,
            DifficultyArg::Hard => Difficulty::Hard,
        }
    }
}

pub fn synth(out: &Path, cfg: &SynthConfig, reporter: &Reporter) -> Result<(), CliError> {
    if cfg.identities < 2 || cfg.images_per_identity < 3 || cfg.size < 16 {
        return Err(CliError::invalid(
            "--identities must be >= 2, --images-per-identity >= 3 and --size >= 16",
        ));
    }
    if out.exists() {
        return Err(CliError::invalid(format!(
            "{}: already exists; choose a new --out folder",
            out.display()
        )));
    }
    let expected = crate::data::synth::image_count(cfg) as u64;
    let progress = reporter.task("data synth", "images", expected);
    let summary =
        crate::data::synth::generate_with_progress(cfg, out, &|done, _| progress.set(done))
            .map_err(CliError::failed)?;
    progress.finish();
    // a folder of the user's choosing, not the built-in set `data.root = "synth"` generates
    reporter.info(&crate::engine::preflight::summary_notice(
        "wrote a synthetic data set to",
        &summary,
    ));
    print_json(&serde_json::to_value(&summary).unwrap_or_default());
    Ok(())
}

pub fn stats(dir: &Path, format: Format) -> Result<(), CliError> {
    if format == Format::Csv {
        // one row per split and identity: what a spreadsheet wants from a data set
        let counts = crate::data::stats::identity_counts(dir).map_err(CliError::invalid)?;
        let headers = ["split", "identity", "images"].map(String::from);
        let rows: Vec<Vec<String>> = counts
            .into_iter()
            .map(|c| vec![c.split.to_string(), c.identity, c.images.to_string()])
            .collect();
        crate::out!("{}", csv(&headers, &rows));
        return Ok(());
    }
    let s = crate::data::stats::stats(dir).map_err(CliError::invalid)?;
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    match format {
        Format::Json => print_json(&v),
        Format::Table | Format::Csv => {
            // leakage is listed after the table, a finding a line
            if let Some(o) = v.as_object_mut() {
                o.remove("leakage");
            }
            let mut rows = Vec::new();
            super::runs::flatten("", &v, &mut rows);
            let headers = vec!["statistic".to_string(), "value".to_string()];
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(k, v)| vec![k, super::output::cell(&v)])
                .collect();
            crate::outln!("{}", table(&headers, &rows));
            let lines = s.leakage.lines();
            if lines.is_empty() {
                crate::outln!("\nleakage: none (no image in two splits, no identity shared by classification and verification)");
            } else {
                crate::outln!("\nleakage:");
                for l in lines {
                    crate::outln!("  {l}");
                }
            }
        }
    }
    Ok(())
}

pub fn preview(recipe: &Path, sets: &[String], out: &Path, count: usize) -> Result<(), CliError> {
    let (_, r) = crate::recipe::load(recipe, &parse_sets(sets)?)?;
    crate::data::preview::preview(&r, out, count).map_err(|e| {
        if e.is_invalid_input() {
            CliError::invalid(e)
        } else {
            CliError::failed(e)
        }
    })?;
    crate::errln!("wrote {}", out.display());
    Ok(())
}

/// `runner data baseline RECIPE`: what raw pixels and chance reach on the recipe's data.
pub fn baseline(recipe: &Path, sets: &[String], format: Format) -> Result<(), CliError> {
    let (_, r) = crate::recipe::load(recipe, &parse_sets(sets)?)?;
    let root = crate::data::resolve_root(&r.data).map_err(CliError::failed)?;
    let data = crate::data::CourseData::open(&root).map_err(CliError::invalid)?;
    // the verification baselines match unknown_dev against the gallery
    for part in [crate::data::Part::Known, crate::data::Part::UnknownDev] {
        data.require(part)
            .map_err(|e| CliError::invalid(format!("data baseline: {e}")))?;
    }
    let b = crate::engine::verification::baselines(&data, &r).map_err(CliError::failed)?;
    let v = serde_json::to_value(&b).unwrap_or_default();
    match format {
        Format::Json => print_json(&v),
        _ => {
            let mut rows = Vec::new();
            super::runs::flatten("", &v, &mut rows);
            for (k, v) in rows {
                crate::outln!("{k:<38} {}", super::output::cell(&v));
            }
        }
    }
    Ok(())
}
