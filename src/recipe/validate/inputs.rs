//! Checks of what goes into the model: the data section, input sizes against the model and
//! the transforms, each transform's parameters, and the model section.

use super::*;

impl Checker<'_> {
    pub(super) fn data(&mut self, d: &DataConfig) {
        if d.root != "synth" && !std::path::Path::new(&d.root).is_dir() {
            self.fail(
                "data.root",
                format!(
                    "data directory `{}` does not exist (relative paths are from the current directory; use \"synth\" for the built-in data)",
                    d.root
                ),
            );
        }
        self.require(d.image_size >= 8, "data.image_size", "must be >= 8");
        if d.num_workers == Some(0) {
            self.fail(
                "data.num_workers",
                "must be >= 1 (omit it to use all cores)",
            );
        }
        let s = &d.synth;
        self.require(s.identities >= 2, "data.synth.identities", "must be >= 2");
        self.require(
            s.images_per_identity >= 3,
            "data.synth.images_per_identity",
            "must be >= 3 (train, dev and test each need one)",
        );
        self.require(s.size >= 16, "data.synth.size", "must be >= 16");
    }

    /// The model's input must survive its downsampling: `data.image_size` (the size `inspect`
    /// and `bench` use) and what the transforms output (or, without a resizing transform,
    /// the built-in images' own size). A folder's images are checked when a run starts.
    pub(super) fn input_size(&mut self, r: &Recipe) {
        let reads = [
            "model",
            "transforms",
            "data.image_size",
            "data.root",
            "data.synth.size",
        ];
        if self.reads_stand_in(&reads) {
            return;
        }
        let min = crate::model::min_input_side(&r.model);
        let why = crate::model::min_input_reason(&r.model);
        let size = r.data.image_size;
        if size >= 8 && size < min {
            self.fail(
                "data.image_size",
                format!("must be >= {min} (got {size}): {why}; ResNet and MobileNet accept 8"),
            );
        }
        let native = (r.data.root == "synth").then_some(r.data.synth.size);
        let mut native_reported = false;
        for (name, list) in [("train", &r.transforms.train), ("eval", &r.transforms.eval)] {
            match output_side_bound(list, native) {
                Some((side, Some(i))) if side < min => self.fail(
                    &format!("transforms.{name}[{i}].size"),
                    format!("makes {name} images {side} px, too small for the model: {why}"),
                ),
                Some((side, None)) if side < min && !native_reported => {
                    native_reported = true;
                    self.fail(
                        "data.synth.size",
                        format!(
                            "the images ({side} px) reach the model at their own size (transforms.{name} does not resize them), too small: {why}; raise data.synth.size or add a resize"
                        ),
                    )
                }
                _ => {}
            }
        }
        self.size_agrees(r, native);
    }

    /// A written `data.image_size` is the side the model is said to see (`inspect`, `bench`,
    /// the run's configuration): it must be what the eval transforms output, or the images'
    /// own size when they do not resize (an unwritten one is taken from them). Unknown without
    /// the images (a folder, no resizing transform), or for a non-square output: not checked.
    fn size_agrees(&mut self, r: &Recipe, native: Option<u32>) {
        if !self.composed.origins.contains_key("data.image_size") {
            return;
        }
        let Some((side, at)) = exact_square_side(&r.transforms.eval, native) else {
            return;
        };
        let size = r.data.image_size;
        if side == size || size < 8 {
            return;
        }
        let (key, produced) = match at {
            Some(i) => (
                format!("transforms.eval[{i}].size"),
                format!("transforms.eval[{i}] makes eval images {side} px"),
            ),
            None => (
                "data.synth.size".to_string(),
                format!(
                    "the eval images reach the model at their own size, {side} px (data.synth.size; transforms.eval does not resize them)"
                ),
            ),
        };
        self.fail(
            "data.image_size",
            format!(
                "is {size} px, but {produced}: the two must agree (set data.image_size = {side}, change {key}, or leave data.image_size out to take it from the transforms)"
            ),
        );
    }

    pub(super) fn transforms(&mut self, prefix: &str, list: &[TransformSpec]) {
        for (i, t) in list.iter().enumerate() {
            let k = |name: &str| format!("{prefix}[{i}].{name}");
            match t {
                TransformSpec::Resize { size, max_size, .. } => {
                    self.size(&k("size"), size);
                    if let Some(m) = max_size {
                        match size {
                            SizeSpec::HeightWidth(_) => self.fail(
                                &k("max_size"),
                                "is only allowed with an int size (the shorter side), not [h, w] (as in torchvision)",
                            ),
                            SizeSpec::Square(s) => self.require(
                                m > s,
                                &k("max_size"),
                                &format!("must be greater than size ({s}), got {m}"),
                            ),
                        }
                    }
                }
                TransformSpec::CenterCrop { size } | TransformSpec::RandomCrop { size, .. } => {
                    self.size(&k("size"), size)
                }
                TransformSpec::RandomResizedCrop {
                    size, scale, ratio, ..
                } => {
                    self.size(&k("size"), size);
                    self.ordered(&k("scale"), *scale);
                    self.require(scale[0] > 0.0, &k("scale"), "must be > 0");
                    self.ordered(&k("ratio"), *ratio);
                    self.require(ratio[0] > 0.0, &k("ratio"), "must be > 0");
                }
                TransformSpec::HorizontalFlip { p } => self.probability(&k("p"), *p),
                TransformSpec::RandomRotation {
                    degrees, center, ..
                } => {
                    if let RangeSpec::Range(r) = degrees {
                        self.ordered(&k("degrees"), *r);
                    } else if let RangeSpec::Scalar(v) = degrees {
                        self.require(*v >= 0.0, &k("degrees"), "must be >= 0");
                    }
                    if let Some(c) = center {
                        self.require(
                            c.iter().all(|v| v.is_finite()),
                            &k("center"),
                            "must be [x, y] with finite numbers (pixels from the top-left corner)",
                        );
                    }
                }
                TransformSpec::RandomPerspective {
                    distortion_scale,
                    p,
                    ..
                } => {
                    self.probability(&k("distortion_scale"), *distortion_scale);
                    self.probability(&k("p"), *p);
                }
                TransformSpec::ColorJitter {
                    brightness,
                    contrast,
                    saturation,
                    hue,
                } => {
                    for (name, r) in [
                        ("brightness", brightness),
                        ("contrast", contrast),
                        ("saturation", saturation),
                    ] {
                        match r {
                            Some(RangeSpec::Scalar(v)) => {
                                self.require(*v >= 0.0, &k(name), "must be >= 0")
                            }
                            Some(RangeSpec::Range(r)) => {
                                self.ordered(&k(name), *r);
                                self.require(r[0] >= 0.0, &k(name), "must be >= 0");
                            }
                            None => {}
                        }
                    }
                    match hue {
                        Some(RangeSpec::Scalar(v)) => {
                            self.require((0.0..=0.5).contains(v), &k("hue"), "must be in [0, 0.5]")
                        }
                        Some(RangeSpec::Range(r)) => {
                            self.ordered(&k("hue"), *r);
                            self.require(
                                r[0] >= -0.5 && r[1] <= 0.5,
                                &k("hue"),
                                "must lie in [-0.5, 0.5]",
                            );
                        }
                        None => {}
                    }
                }
                TransformSpec::RandAugment {
                    num_ops,
                    magnitude,
                    num_magnitude_bins,
                    ..
                } => {
                    self.require(*num_ops >= 1, &k("num_ops"), "must be >= 1");
                    self.require(
                        *num_magnitude_bins >= 2,
                        &k("num_magnitude_bins"),
                        "must be >= 2",
                    );
                    if magnitude >= num_magnitude_bins {
                        self.fail_reading(
                            &k("magnitude"),
                            &[&k("num_magnitude_bins")],
                            "must be < num_magnitude_bins",
                        );
                    }
                }
                TransformSpec::ToTensor {} => {}
                TransformSpec::Normalize { std, .. } => self.require(
                    std.iter().all(|s| *s > 0.0),
                    &k("std"),
                    "every std must be > 0",
                ),
                TransformSpec::RandomErasing {
                    p,
                    scale,
                    ratio,
                    value,
                } => {
                    self.probability(&k("p"), *p);
                    self.ordered(&k("scale"), *scale);
                    self.ordered(&k("ratio"), *ratio);
                    let finite = match value {
                        EraseValue::Number(v) => v.is_finite(),
                        EraseValue::PerChannel(v) => v.iter().all(|x| x.is_finite()),
                        EraseValue::Random(_) => true,
                    };
                    self.require(finite, &k("value"), "must be finite");
                }
            }
        }
    }

    pub(super) fn size(&mut self, key: &str, s: &SizeSpec) {
        let ok = match s {
            SizeSpec::Square(v) => *v >= 1,
            SizeSpec::HeightWidth([h, w]) => *h >= 1 && *w >= 1,
        };
        self.require(ok, key, "must be >= 1");
    }

    pub(super) fn model(&mut self, m: &ModelConfig) {
        let presets: &[&str] = match m.kind {
            ModelKind::Convnext => &["atto", "femto", "pico", "nano", "tiny", "small", "base"],
            ModelKind::Resnet => &["18", "34", "50"],
            ModelKind::MobilenetV2 => &[],
            ModelKind::MobilenetV3 => &["large", "small"],
        };
        if let Some(p) = &m.preset {
            if !presets.contains(&p.as_str()) {
                let note = if presets.is_empty() {
                    "this model kind has no presets".to_string()
                } else {
                    format!("expected one of: {}", presets.join(", "))
                };
                if !self.stood_in("model.preset") {
                    let d = self
                        .composed
                        .diagnostic(
                            "model.preset",
                            Focus::Value,
                            format!("unknown preset `{p}`"),
                        )
                        .with_help(suggestion(p, presets.iter().copied()))
                        .with_note(Some(note));
                    self.out.push(d);
                }
            }
        }
        let convnext = m.kind == ModelKind::Convnext;
        self.not_for(
            !convnext && m.depths.is_some(),
            "model.depths",
            kind_str(m.kind),
        );
        self.not_for(
            !convnext && m.dims.is_some(),
            "model.dims",
            kind_str(m.kind),
        );
        if convnext && !self.reads_stand_in(&["model.depths", "model.dims", "model.preset"]) {
            match (&m.depths, &m.dims, &m.preset) {
                (None, None, None) => self.fail(
                    "model.preset",
                    "a ConvNeXt needs a preset (\"tiny\", \"nano\", ...) or depths and dims",
                ),
                (Some(d), Some(w), _) => {
                    self.require(
                        d.len() == w.len() && !d.is_empty(),
                        "model.dims",
                        "depths and dims must have the same, non-zero length",
                    );
                    self.require(
                        d.iter().all(|x| *x >= 1),
                        "model.depths",
                        "every depth must be >= 1",
                    );
                    self.require(
                        w.iter().all(|x| *x >= 1),
                        "model.dims",
                        "every dim must be >= 1",
                    );
                }
                (Some(_), None, None) | (None, Some(_), None) => {
                    self.fail("model.depths", "give both depths and dims (or a preset)")
                }
                _ => {}
            }
        }
        if m.kind == ModelKind::Resnet && m.preset.is_none() {
            self.fail(
                "model.preset",
                "a ResNet needs a preset: \"18\", \"34\" or \"50\"",
            );
        }
        self.unit_open("model.drop_path", m.drop_path);
        self.unit_open("model.dropout", m.dropout);
        self.positive("model.width_mult", m.width_mult);
        if let LayerScale::Init(v) = m.layer_scale {
            self.require(v >= 0.0, "model.layer_scale", "must be >= 0 (or false)");
        }
        if m.embedding_dim == Some(0) {
            self.fail("model.embedding_dim", "must be >= 1");
        }
        if m.num_classes == Some(0) {
            self.fail("model.num_classes", "must be >= 1");
        }
        match &m.init_from {
            Some(InitFrom::Weights(p)) if !std::path::Path::new(p).is_file() => self.fail(
                "model.init_from",
                format!("weights file `{p}` does not exist"),
            ),
            Some(InitFrom::Run(r)) => {
                // the planner checks that the recipe exists (relative to the file naming it)
                self.require(
                    !r.recipe.is_empty(),
                    "model.init_from.recipe",
                    "must name a recipe file",
                );
                if r.parent_key.is_some()
                    && self
                        .composed
                        .origins
                        .contains_key("model.init_from.parent_key")
                {
                    self.fail(
                        "model.init_from.parent_key",
                        "is filled in by the planner (the parent run's key); remove it",
                    );
                }
            }
            _ => {}
        }
    }
}
