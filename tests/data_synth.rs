//! The synthetic generator: byte-identical output for a seed, disjoint identities, impostors
//! only among the unknowns, the course layout, resolve_root caching.

use runner::data::{fingerprint, generate, resolve_root, CourseData};
use runner::recipe::{DataConfig, Difficulty, SynthConfig};
use std::collections::BTreeMap;
use std::path::Path;

fn tiny(seed: u64) -> SynthConfig {
    SynthConfig {
        identities: 4,
        images_per_identity: 3,
        verify_identities: 2,
        impostors: 1,
        size: 32,
        seed,
        difficulty: Difficulty::Medium,
    }
}

fn all_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn same_seed_same_bytes_and_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    let sa = generate(&tiny(5), &a).unwrap();
    generate(&tiny(5), &b).unwrap();
    generate(&tiny(6), &c).unwrap();
    let (fa, fb, fc) = (all_files(&a), all_files(&b), all_files(&c));
    assert_eq!(fa, fb, "same seed must give identical files");
    assert_ne!(fa, fc, "another seed must differ");
    assert_eq!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
    // no temporary folder left behind
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");

    let d = CourseData::open(&a).unwrap();
    assert_eq!(d.classes.len(), 4);
    assert_eq!(d.train.len(), sa.train_images);
    assert_eq!(d.dev.len(), sa.dev_images);
    assert_eq!(d.test.len(), sa.test_images);
    assert_eq!(d.test_labels.as_ref().unwrap().len(), d.test.len());
    assert_eq!(d.known_identities.len(), 2);
    assert_eq!(d.unknown_dev.len(), sa.unknown_dev_images);
    assert!(!d.unknown_test.is_empty());
    // classification and verification identities are disjoint
    for k in &d.known_identities {
        assert!(!d.classes.contains(k), "{k} in both");
    }
    // impostors: labelled n000000, never in known/
    let impostors = d
        .unknown_dev_labels
        .values()
        .filter(|l| *l == "n000000")
        .count();
    assert!(impostors >= 1);
    for l in d.unknown_dev_labels.values() {
        assert!(l == "n000000" || d.known_identities.contains(l));
    }
    let img = image::open(&d.train[0].path).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
}

#[test]
fn refuses_non_empty_output() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("x.txt"), "x").unwrap();
    let err = generate(&tiny(0), tmp.path()).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn resolve_root_generates_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = DataConfig {
        root: "synth".into(),
        image_size: 32,
        num_workers: None,
        cache: false,
        on_bad_image: Default::default(),
        cache_dir: Some(tmp.path().to_string_lossy().into_owned()),
        synth: tiny(1),
    };
    let r1 = resolve_root(&cfg).unwrap();
    assert!(r1
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("synth-"));
    let fp = fingerprint(&r1).unwrap();
    let r2 = resolve_root(&cfg).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(fp, fingerprint(&r2).unwrap());
    let mut other = cfg.clone();
    other.synth.seed = 2;
    assert_ne!(resolve_root(&other).unwrap(), r1);
    let missing = DataConfig {
        root: tmp.path().join("nope").to_string_lossy().into_owned(),
        ..cfg
    };
    let err = resolve_root(&missing).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

/// Raw pixels must not be enough: 1-NN on pixels stays far below what a CNN reaches.
#[test]
fn raw_pixel_nearest_neighbour_is_poor() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        identities: 20,
        images_per_identity: 10,
        verify_identities: 0,
        impostors: 0,
        size: 32,
        seed: 0,
        difficulty: Difficulty::Medium,
    };
    generate(&cfg, &tmp.path().join("d")).unwrap();
    let d = CourseData::open(tmp.path().join("d")).unwrap();
    let acc = runner::data::raw_pixel_nn_accuracy(&d).unwrap();
    eprintln!("raw-pixel 1-NN dev accuracy (20 ids x 10 images, 32 px): {acc:.3}");
    assert!(acc < 0.3, "raw-pixel NN accuracy {acc}");
}

/// The figure for the README: the default set (100 identities x 20 images, 64 px) at each
/// difficulty. Slow-ish (a few seconds each); run with `--ignored`.
#[test]
#[ignore]
fn raw_pixel_nearest_neighbour_default_sets() {
    for difficulty in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            difficulty,
            verify_identities: 0,
            impostors: 0,
            ..SynthConfig::default()
        };
        generate(&cfg, &tmp.path().join("d")).unwrap();
        let d = CourseData::open(tmp.path().join("d")).unwrap();
        let acc = runner::data::raw_pixel_nn_accuracy(&d).unwrap();
        eprintln!(
            "{difficulty:?}: raw-pixel 1-NN dev accuracy {acc:.4} ({} dev images)",
            d.dev.len()
        );
        if difficulty == Difficulty::Medium {
            assert!(acc < 0.3);
        }
    }
}
