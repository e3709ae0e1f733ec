//! `runner inspect RECIPE`: the model's layers, output shapes, parameters, MACs and memory.

use std::path::Path;

use super::output::{print_json, table, Format};
use super::{parse_sets, CliError};

pub fn run(
    recipe: &Path,
    sets: &[String],
    classes: Option<usize>,
    format: Format,
) -> Result<(), CliError> {
    if classes == Some(0) {
        return Err(CliError::invalid("--classes: must be >= 1"));
    }
    let (_, r) = crate::recipe::load(recipe, &parse_sets(sets)?)?;
    let num_classes = match classes.or(r.model.num_classes) {
        Some(n) => n,
        None if r.data.root == "synth" => r.data.synth.identities,
        None => crate::data::CourseData::open(&r.data.root)
            .map_err(CliError::invalid)?
            .classes
            .len(),
    };
    let size = r.data.image_size as usize;
    let report = crate::model::inspect(&r.model, num_classes, (size, size), r.train.batch_size)
        .map_err(|e| match e {
            // a model the recipe's keys describe but cannot build: the input's fault
            crate::model::ModelError::Config { .. } => CliError::invalid(e),
            other => CliError::failed(other),
        })?;
    match format {
        Format::Json => print_json(&serde_json::to_value(&report).unwrap_or_default()),
        _ => {
            let headers: Vec<String> = ["layer", "output shape", "params"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let rows: Vec<Vec<String>> = report
                .layers
                .iter()
                .map(|l| {
                    vec![
                        l.name.clone(),
                        format!("{:?}", l.out_shape),
                        l.params.to_string(),
                    ]
                })
                .collect();
            crate::outln!("{}", table(&headers, &rows));
            crate::outln!(
                "\nparams_total {}  params_trainable {}  MACs/image {}  memory/batch({}) {:.1} MiB",
                report.params_total,
                report.params_trainable,
                si_count(report.macs as f64),
                r.train.batch_size,
                report.memory_per_batch_bytes as f64 / (1024.0 * 1024.0)
            );
        }
    }
    Ok(())
}

/// A count with an SI prefix: `1.94 M`, `4.46 G` (multiply-accumulates, as timm and
/// fvcore print them).
fn si_count(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} G", n / 1e9),
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n if n >= 1e3 => format!("{:.2} k", n / 1e3),
        n => format!("{n}"),
    }
}
