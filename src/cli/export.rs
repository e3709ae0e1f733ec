//! `runner export RUN|CHECKPOINT --out FILE`: the model's weights alone, as safetensors with
//! timm (ConvNeXt) / torchvision (ResNet, MobileNet) parameter names and layout, for those
//! libraries, candle-transformers, or another recipe's `model.init_from` (docs/interop.md).

use std::path::Path;

use super::{CliError, Global};
use crate::engine::progress::Reporter;
use crate::engine::restore;

pub fn run(
    g: &Global,
    reference: &str,
    metric: Option<&str>,
    out: &Path,
    reporter: &Reporter,
) -> Result<(), CliError> {
    let store = if g.db.exists() {
        Some(crate::store::Store::open(&g.db)?)
    } else {
        None
    };
    let invalid = |e: crate::engine::EngineError| match e {
        crate::engine::EngineError::Store(s) => CliError::from(s),
        other => CliError::invalid(other),
    };
    // The checkpoint's tensors as they are: no model is built (that would also need the loss's
    // margin head, whose class weights `margin_head.weight` the file holds for ArcFace /
    // CosFace runs).
    let checkpoint =
        restore::resolve_checkpoint(store.as_ref(), reference, metric).map_err(invalid)?;
    let ck =
        crate::train::checkpoint::read_checkpoint(&checkpoint).map_err(|e| invalid(e.into()))?;
    let recipe = restore::checkpoint_recipe(&ck, &checkpoint).map_err(invalid)?;
    // the moving average when the run kept one (`train.ema`)
    let with_ema = !ck.ema.is_empty();
    let weights = if with_ema { ck.ema } else { ck.model };
    let exported = crate::model::interop::export_weights(&recipe.model, &recipe.loss, weights)
        .map_err(CliError::failed)?;
    for note in &exported.notes {
        reporter.warn(&format!("export: {note}"));
    }
    let tmp = out.with_extension("safetensors.tmp");
    // 0644 like checkpoints and CSVs (the safetensors writer creates its file 0600)
    candle_core::safetensors::save(&exported.tensors, &tmp)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
            std::fs::rename(&tmp, out).map_err(candle_core::Error::from)
        })
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CliError::failed(format!("{}: {e}", out.display()))
        })?;
    let layout = if exported.reshaped.is_empty() {
        String::new()
    } else {
        format!(
            "; timm conv_mlp layout: {} block MLP weights as [out, in, 1, 1]",
            exported.reshaped.len()
        )
    };
    reporter.info(&format!(
        "wrote {} ({} tensors{}, epoch {} of {}{layout})",
        out.display(),
        exported.tensors.len(),
        if with_ema {
            ", the weights' moving average"
        } else {
            ""
        },
        ck.meta.epoch,
        checkpoint.display()
    ));
    Ok(())
}
