//! Parameters as named tensors: which names are buffers, loading `init_from` safetensors by
//! name, and counting parameters from shapes alone (no allocation).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};

use super::ModelError;

/// True for BatchNorm buffers (running statistics), which are saved but never optimised.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

/// What `load_init_from_partial` did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// In the model, not in the file.
    pub missing: Vec<String>,
    /// In both, with different shapes: `name: model shape vs file shape`.
    pub mismatched: Vec<String>,
    /// In the file, not in the model.
    pub unused: Vec<String>,
    /// Loaded from another layout of the same values (also in `loaded`): a 1x1-conv weight
    /// `[out, in, 1, 1]` into a Linear weight `[out, in]` (timm's conv_mlp ConvNeXt blocks).
    pub reshaped: Vec<String>,
}

/// Whether a file tensor of shape `file` holds the values of a model parameter of shape
/// `model` in another layout that loading converts: a 1x1 convolution's weight `[out, in, 1,
/// 1]` for a Linear layer's `[out, in]` (the same product over the channels; timm writes the
/// MLP of its atto, femto, pico and nano ConvNeXt blocks so).
fn pointwise_as_linear(file: &[usize], model: &[usize]) -> bool {
    matches!((file, model), ([o, i, 1, 1], [mo, mi]) if o == mo && i == mi)
}

/// Loads every variable of `varmap` from the safetensors file at `path`, by name. Fails (and
/// changes nothing) when a parameter is missing or has another shape; a missing
/// `num_batches_tracked` is tolerated, and a 1x1-conv weight `[out, in, 1, 1]` loads into a
/// Linear weight `[out, in]` (timm's conv_mlp ConvNeXt layout, which `runner export` writes
/// for atto to nano).
pub fn load_init_from(varmap: &VarMap, path: &Path) -> Result<LoadReport, ModelError> {
    let report = plan_load(varmap, path)?;
    if !report.missing.is_empty() || !report.mismatched.is_empty() {
        return Err(ModelError::Load {
            path: path.display().to_string(),
            missing: report.missing,
            mismatched: report.mismatched,
        });
    }
    apply_load(varmap, path, &report)?;
    Ok(report)
}

/// Like `load_init_from` but skips missing and mismatched names (e.g. a classifier of another
/// size) and reports them.
pub fn load_init_from_partial(varmap: &VarMap, path: &Path) -> Result<LoadReport, ModelError> {
    let report = plan_load(varmap, path)?;
    apply_load(varmap, path, &report)?;
    Ok(report)
}

fn read_file(path: &Path) -> Result<HashMap<String, Tensor>, ModelError> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| ModelError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

fn plan_load(varmap: &VarMap, path: &Path) -> Result<LoadReport, ModelError> {
    let file = read_file(path)?;
    let data = varmap.data().lock().map_err(|_| ModelError::Poisoned)?;
    let mut r = LoadReport::default();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        match file.get(name) {
            None if name.ends_with("num_batches_tracked") => {}
            None => r.missing.push(name.clone()),
            Some(t) if t.dims() == var.dims() => r.loaded.push(name.clone()),
            Some(t) if pointwise_as_linear(t.dims(), var.dims()) => {
                r.loaded.push(name.clone());
                r.reshaped.push(name.clone());
            }
            Some(t) => r.mismatched.push(format!(
                "{name}: model {:?} vs file {:?}",
                var.dims(),
                t.dims()
            )),
        }
    }
    let mut unused: Vec<String> = file
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    unused.sort();
    r.unused = unused;
    Ok(r)
}

fn apply_load(varmap: &VarMap, path: &Path, r: &LoadReport) -> Result<(), ModelError> {
    let file = read_file(path)?;
    let data = varmap.data().lock().map_err(|_| ModelError::Poisoned)?;
    for name in &r.loaded {
        if let (Some(var), Some(t)) = (data.get(name), file.get(name)) {
            // plan_load accepted the shape: the same, or a 1x1-conv layout of it
            let t = t
                .reshape(var.dims())?
                .to_device(var.device())?
                .to_dtype(var.dtype())?;
            var.set(&t)?;
        }
    }
    Ok(())
}

/// Parameter count of a VarMap: `(total, trainable)`, buffers excluded from both (PyTorch's
/// `sum(p.numel() for p in model.parameters())`).
pub fn count_varmap(varmap: &VarMap) -> (usize, usize) {
    let data = match varmap.data().lock() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let n: usize = data
        .iter()
        .filter(|(k, _)| !is_buffer(k))
        .map(|(_, v)| v.elem_count())
        .sum();
    (n, n)
}

/// A parameter name and its shape.
pub type NamedShape = (String, Vec<usize>);

/// A VarBuilder backend that records names and shapes and hands out zero-stride views of one
/// scalar: a model can be constructed (not run) without allocating its weights.
#[derive(Debug, Default, Clone)]
pub struct ShapeRecorder {
    pub shapes: Arc<Mutex<Vec<NamedShape>>>,
}

impl ShapeRecorder {
    /// A VarBuilder recording into `self`.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, Device::Cpu)
    }

    /// Recorded `(name, shape)` pairs in creation order.
    pub fn entries(&self) -> Vec<NamedShape> {
        match self.shapes.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Number of parameters recorded (buffers excluded).
    pub fn param_count(&self) -> usize {
        self.entries()
            .iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

impl candle_nn::var_builder::SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut v) = self.shapes.lock() {
            v.push((name.to_string(), s.dims().to_vec()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("ShapeRecorder: no tensor {name} (shape unknown)")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// Parameter count of the model `cfg` describes, from shapes only.
pub fn count_params(
    cfg: &crate::recipe::ModelConfig,
    num_classes: usize,
) -> Result<usize, ModelError> {
    let rec = ShapeRecorder::default();
    let _model = super::build(cfg, num_classes, rec.var_builder())?;
    Ok(rec.param_count())
}
