//! `runner export RUN|CHECKPOINT --out FILE`: the model's weights alone, as safetensors with
//! timm (ConvNeXt) / torchvision (ResNet, MobileNet) parameter names, for those libraries or
//! for another recipe's `model.init_from`.

use std::path::Path;

use super::{CliError, Global};

pub fn run(g: &Global, reference: &str, out: &Path) -> Result<(), CliError> {
    let store = if g.db.exists() {
        Some(crate::store::Store::open(&g.db)?)
    } else {
        None
    };
    let loaded =
        crate::engine::restore::load_model(store.as_ref(), reference).map_err(|e| match e {
            crate::engine::EngineError::Store(s) => CliError::from(s),
            other => CliError::invalid(other),
        })?;
    let ck =
        crate::train::checkpoint::read_checkpoint(&loaded.checkpoint).map_err(CliError::failed)?;
    let tmp = out.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&ck.model, &tmp)
        .and_then(|_| std::fs::rename(&tmp, out).map_err(candle_core::Error::from))
        .map_err(|e| CliError::failed(format!("{}: {e}", out.display())))?;
    eprintln!(
        "wrote {} ({} tensors, epoch {} of {})",
        out.display(),
        ck.model.len(),
        ck.meta.epoch,
        loaded.checkpoint.display()
    );
    Ok(())
}
