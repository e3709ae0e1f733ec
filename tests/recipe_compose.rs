//! Composition, overrides and sweep planning through the library.

use std::path::Path;

use runner::plan::{plan_file, PlannedRun};
use runner::recipe::{self, Origin, Override, SchedulerKind};

fn fingerprint(r: &runner::recipe::Recipe) -> Result<String, String> {
    runner::data::fingerprint_for(r)
}

fn plan(path: &str, sets: &[&str]) -> Vec<PlannedRun> {
    let ovs: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    plan_file(Path::new(path), &ovs, &fingerprint).unwrap()
}

#[test]
fn three_fragments_plus_own_keys_resolve_to_expected_config() {
    let (composed, r) = recipe::load(Path::new("tests/recipes/composed.toml"), &[]).unwrap();
    // From frags/base.toml (through frags/model.toml), overridden by the recipe.
    assert_eq!(r.data.root, "synth");
    assert_eq!(r.data.image_size, 48);
    assert_eq!(r.train.epochs, 7, "the recipe's own key wins");
    assert_eq!(r.train.batch_size, 16, "kept from the nested fragment");
    // frags/model.toml
    assert_eq!(r.model.depths.as_deref(), Some(&[1, 1, 1, 1][..]));
    assert_eq!(r.model.dims.as_deref(), Some(&[8, 16, 24, 32][..]));
    assert_eq!(r.model.drop_path, 0.2);
    // frags/optim.toml merged key by key with the recipe's [optimizer].
    assert_eq!(r.optimizer.lr(), 0.05);
    assert_eq!(r.optimizer.momentum(), 0.9);
    assert_eq!(r.optimizer.weight_decay(), 1e-4);
    // frags/sched.toml
    assert_eq!(r.scheduler.kind, SchedulerKind::Step);
    assert_eq!(r.scheduler.step_size, Some(3));
    assert_eq!(r.scheduler.gamma(), 0.5);
    // Defaults match PyTorch's where nothing is said.
    assert_eq!(r.loss.label_smoothing, 0.0);
    assert_eq!(r.optimizer.dampening(), 0.0);
    assert!(!r.optimizer.nesterov());
    // Origins point at the file and line that wrote each key.
    match composed.origin_of("optimizer.momentum") {
        Origin::File { path, line, .. } => {
            assert!(path.ends_with("frags/optim.toml"), "{path:?}");
            assert_eq!(line, 4);
        }
        o => panic!("unexpected origin {o:?}"),
    }
    match composed.origin_of("optimizer.lr") {
        Origin::File { path, line, .. } => {
            assert!(path.ends_with("composed.toml"));
            assert_eq!(line, 5);
        }
        o => panic!("unexpected origin {o:?}"),
    }
    assert_eq!(
        composed.files.len(),
        5,
        "recipe + 4 fragments: {:?}",
        composed.files
    );
}

#[test]
fn key_order_and_cosmetic_fields_do_not_change_run_keys() {
    let a = plan("tests/recipes/composed.toml", &[]);
    let b = plan("tests/recipes/composed_reordered.toml", &[]);
    assert_eq!(a.len(), 6);
    let ka: Vec<_> = a.iter().map(|r| r.key.clone()).collect();
    let kb: Vec<_> = b.iter().map(|r| r.key.clone()).collect();
    assert_eq!(ka, kb);
    // Distinct configurations get distinct keys.
    let mut uniq = ka.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 6);
    // Writing a default explicitly is the same run.
    let explicit = plan("tests/recipes/composed.toml", &["optimizer.dampening=0.0"]);
    assert_eq!(explicit[0].key, a[0].key);
    // A real change is a different run.
    let changed = plan("tests/recipes/composed.toml", &["optimizer.dampening=0.1"]);
    assert_ne!(changed[0].key, a[0].key);
}

#[test]
fn convnext_lr_recipe_plans_six_runs() {
    let runs = plan("recipes/convnext_lr.toml", &[]);
    assert_eq!(runs.len(), 6);
    let mut pairs: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r.overrides["optimizer.lr"].to_string(),
                r.overrides["model.drop_path"].to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 6, "3 learning rates x 2 drop-path rates");
    for r in &runs {
        assert!(r.recipe.sweep.is_none());
        assert_eq!(
            r.recipe.optimizer.lr(),
            r.overrides["optimizer.lr"].as_f64().unwrap()
        );
    }
}

#[test]
fn set_overrides_a_swept_key_and_collapses_the_sweep() {
    let runs = plan("recipes/convnext_lr.toml", &["optimizer.lr=0.3"]);
    assert_eq!(runs.len(), 2, "only drop_path still varies");
    assert!(runs.iter().all(|r| r.recipe.optimizer.lr() == 0.3));
}

#[test]
fn random_sweep_is_reproducible_from_its_seed() {
    let a = plan("tests/recipes/random.toml", &[]);
    let b = plan("tests/recipes/random.toml", &[]);
    assert_eq!(a.len(), 5);
    let cfg = |runs: &[PlannedRun]| -> Vec<String> {
        runs.iter()
            .map(|r| serde_json::to_string(&r.overrides).unwrap())
            .collect()
    };
    assert_eq!(cfg(&a), cfg(&b));
    for r in &a {
        let lr = r.recipe.optimizer.lr();
        assert!((1e-4..=1e-1).contains(&lr), "lr {lr}");
        let m = r.recipe.optimizer.momentum();
        assert!((0.8..=0.99).contains(&m));
        assert!((8..=64).contains(&r.recipe.train.batch_size));
        assert!([0.0, 0.1, 0.2].contains(&r.recipe.model.drop_path));
    }
    // Another seed draws other configurations.
    let c = plan("tests/recipes/random.toml", &["sweep.seed=8"]);
    assert_ne!(cfg(&a), cfg(&c));
}

#[test]
fn zip_sweep_pairs_values_element_by_element() {
    let runs = plan("tests/recipes/zip.toml", &[]);
    let pairs: Vec<(f64, usize)> = runs
        .iter()
        .map(|r| (r.recipe.optimizer.lr(), r.recipe.train.batch_size))
        .collect();
    assert_eq!(pairs, vec![(0.1, 64), (0.05, 32), (0.01, 16)]);
}

#[test]
fn set_values_are_typed_by_the_schema() {
    let sets = [
        "model.kind=resnet",
        "model.preset=18",
        "model.depths=[1,1,1,1]",
    ];
    let ovs: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    // depths do not apply to a ResNet: a clear error naming the key.
    let err = recipe::load(Path::new("tests/recipes/composed.toml"), &ovs).unwrap_err();
    assert!(err.to_string().contains("model.depths"), "{err}");
    // A bare number where the schema wants a string is read as that string.
    let ovs: Vec<Override> = ["model.kind=resnet", "model.preset=18"]
        .iter()
        .map(|s| Override::parse(s).unwrap())
        .collect();
    let mut composed = recipe::compose(Path::new("tests/recipes/composed.toml")).unwrap();
    if let Some(toml::Value::Table(m)) = composed.table.get_mut("model") {
        m.remove("depths");
        m.remove("dims");
    }
    let (_, r) = recipe::resolve(composed, &ovs).unwrap();
    assert_eq!(r.model.preset.as_deref(), Some("18"));
    // A string where a number is wanted stays an error.
    let bad = Override::parse("optimizer.lr=fast").unwrap();
    let err = recipe::load(Path::new("tests/recipes/composed.toml"), &[bad]).unwrap_err();
    assert!(err.to_string().contains("--set"), "{err}");
    assert!(err.to_string().contains("optimizer.lr"), "{err}");
}

#[test]
fn changing_a_kind_replaces_the_table_instead_of_merging_stale_options() {
    // frags/optim.toml is SGD with momentum; switching to AdamW drops SGD's keys.
    let ovs = [Override::parse("optimizer={ kind = \"adamw\", lr = 0.001 }").unwrap()];
    let (_, r) = recipe::load(Path::new("tests/recipes/composed.toml"), &ovs).unwrap();
    assert_eq!(r.optimizer.kind, runner::recipe::OptimizerKind::Adamw);
    assert_eq!(r.optimizer.weight_decay(), 0.01, "AdamW's PyTorch default");
}

#[test]
fn a_kind_changed_by_set_drops_only_the_old_kinds_options() {
    // frags/optim.toml is SGD (momentum 0.9, weight decay 1e-4); the recipe sets lr 0.05.
    let ovs = [Override::parse("optimizer.kind=adamw").unwrap()];
    let (_, r) = recipe::load(Path::new("tests/recipes/composed.toml"), &ovs).unwrap();
    assert_eq!(r.optimizer.kind, runner::recipe::OptimizerKind::Adamw);
    assert_eq!(r.optimizer.lr(), 0.05, "an option both kinds take is kept");
    assert_eq!(r.optimizer.weight_decay(), 1e-4, "kept as well");
    // An option of the old kind set on the command line is still an error, naming it.
    let ovs =
        ["optimizer.kind=adamw", "optimizer.momentum=0.8"].map(|s| Override::parse(s).unwrap());
    let err = recipe::load(Path::new("tests/recipes/composed.toml"), &ovs).unwrap_err();
    assert!(err.to_string().contains("optimizer.momentum"), "{err}");
    // A ConvNeXt's depths and dims give way to a ResNet preset.
    let ovs = ["model.kind=resnet", "model.preset=18"].map(|s| Override::parse(s).unwrap());
    let (_, r) = recipe::load(Path::new("tests/recipes/composed.toml"), &ovs).unwrap();
    assert_eq!(r.model.preset.as_deref(), Some("18"));
    assert_eq!(r.model.dims, None);
    // A transform in a list: random_resized_crop's scale and ratio go, its size stays.
    let ovs = [Override::parse("transforms.train[0].kind=center_crop").unwrap()];
    let (_, r) = recipe::load(Path::new("recipes/quickstart.toml"), &ovs).unwrap();
    let first = serde_json::to_value(&r.transforms.train[0]).unwrap();
    assert_eq!(first["kind"], "center_crop", "{first}");
    assert_eq!(first["size"], 32, "{first}");
}

#[test]
fn set_errors_quote_the_value_as_written_and_name_the_command_line() {
    for (set, needle) in [
        ("train.epochs=2.5", "floating point `2.5`"),
        ("train.epochs=-1", "integer `-1`"),
        ("nosection.x=1", "unknown key `nosection`"),
        ("scheduler.kind=step", "scheduler.step_size"),
    ] {
        let ovs = [Override::parse(set).unwrap()];
        let err = recipe::load(Path::new("recipes/quickstart.toml"), &ovs)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{set}: {err}");
        assert!(err.starts_with("--set"), "{set}: blamed on {err}");
    }
}

#[test]
fn every_shipped_recipe_and_template_set_validates() {
    for entry in std::fs::read_dir("recipes").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let runs = plan_file(&path, &[], &fingerprint)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // a TPE search plans its trials as it goes: its first one must plan
            let search = runner::plan::search::Search::of_file(&path, &[], &fingerprint)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            match search {
                Some(mut s) => {
                    assert!(s.trials > 0, "{}", path.display());
                    let first = runner::plan::sampler::Sampler::propose(&s.sampler(), 0, &[]);
                    s.planned(0, &first, &fingerprint)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                None => assert!(!runs.is_empty(), "{}", path.display()),
            }
        }
    }
}

/// The key `tests/recipes/transforms_keys.toml` had before RandomCrop's `padding_mode` and
/// padding lists, RandomRotation's `expand` / `center` and RandomErasing's non-numeric
/// `value` existed (computed by the build before them).
const TRANSFORMS_KEY_BEFORE_NEW_OPTIONS: &str = "4734eaa6435cf6ca";

#[test]
fn new_transform_options_leave_existing_run_keys_unchanged() {
    let base = plan("tests/recipes/transforms_keys.toml", &[]);
    assert_eq!(base.len(), 1);
    assert_eq!(base[0].key, TRANSFORMS_KEY_BEFORE_NEW_OPTIONS);
    // the canonical form has none of the new keys at their defaults
    let canon = runner::plan::key::canonical_config(&base[0].recipe).to_string();
    for k in ["padding_mode", "expand", "center"] {
        assert!(!canon.contains(k), "{k} in {canon}");
    }
    let text = std::fs::read_to_string("tests/recipes/transforms_keys.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_of = |edit: &dyn Fn(&str) -> String| {
        let p = dir.path().join("r.toml");
        std::fs::write(&p, edit(&text)).unwrap();
        let runs = plan_file(&p, &[], &fingerprint).unwrap();
        runs[0].key.clone()
    };
    // writing the defaults (or another spelling of the same padding) is the same run
    let explicit = key_of(&|t| {
        t.replace(
            "size = 56, padding = 4 }",
            "size = 56, padding = [4, 4, 4, 4], padding_mode = \"constant\" }",
        )
        .replace("degrees = 10 }", "degrees = 10, expand = false }")
    });
    assert_eq!(explicit, TRANSFORMS_KEY_BEFORE_NEW_OPTIONS);
    let two = key_of(&|t| t.replace("padding = 4 }", "padding = [4, 4] }"));
    assert_eq!(two, TRANSFORMS_KEY_BEFORE_NEW_OPTIONS);
    // a new value is a new run
    for (from, to) in [
        ("padding = 4 }", "padding = 4, padding_mode = \"reflect\" }"),
        ("padding = 4 }", "padding = [4, 2] }"),
        ("degrees = 10 }", "degrees = 10, expand = true }"),
        ("degrees = 10 }", "degrees = 10, center = [0, 0] }"),
        ("value = 0.5 }", "value = \"random\" }"),
        ("value = 0.5 }", "value = [0.5, 0.5, 0.4] }"),
    ] {
        assert!(text.contains(from), "{from}");
        let k = key_of(&|t| t.replacen(from, to, 1));
        assert_ne!(k, TRANSFORMS_KEY_BEFORE_NEW_OPTIONS, "{to}");
    }
}

#[test]
fn every_cluster_template_validates_on_the_quick_start() {
    let dir = tempfile::tempdir().unwrap();
    let quickstart = std::fs::canonicalize("recipes/quickstart.toml").unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir("templates/cluster").unwrap() {
        let path = std::fs::canonicalize(entry.unwrap().path()).unwrap();
        let r = dir.path().join("r.toml");
        std::fs::write(
            &r,
            format!(
                "use = [{:?}, {:?}]\n",
                quickstart.display().to_string(),
                path.display().to_string()
            ),
        )
        .unwrap();
        let runs =
            plan_file(&r, &[], &fingerprint).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(runs[0].recipe.slurm.is_some(), "{}", path.display());
        // not part of the run key
        let plain = plan_file(&quickstart, &[], &fingerprint).unwrap();
        assert_eq!(runs[0].key, plain[0].key, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 3);
}
