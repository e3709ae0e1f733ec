//! The synthetic generator: byte-identical output for a seed, disjoint identities, impostors
//! only among the unknowns, the course layout, resolve_root caching.

use runner::data::synth::{identity_role, render_image, synth_files, traits, IdentityRole};
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
fn output_does_not_depend_on_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        identities: 6,
        images_per_identity: 5,
        ..tiny(3)
    };
    let mut sets = Vec::new();
    for threads in [1, 2, 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = tmp.path().join(format!("t{threads}"));
        pool.install(|| generate(&cfg, &out)).unwrap();
        sets.push((threads, all_files(&out)));
    }
    for (threads, files) in &sets[1..] {
        assert_eq!(files, &sets[0].1, "{threads} threads vs 1");
    }
}

/// The generator's own record of which identity rendered each file.
fn record(cfg: &SynthConfig) -> BTreeMap<String, (usize, usize)> {
    synth_files(cfg)
        .unwrap()
        .into_iter()
        .map(|f| {
            let rel = f.rel.to_string_lossy().replace('\\', "/");
            (rel, (f.identity, f.index))
        })
        .collect()
}

fn jpeg(img: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100));
    img.write_with_encoder(enc).unwrap();
    buf
}

#[test]
fn every_file_comes_from_the_identity_its_labels_claim() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        identities: 5,
        images_per_identity: 10,
        verify_identities: 4,
        impostors: 3,
        ..tiny(9)
    };
    let root = tmp.path().join("d");
    generate(&cfg, &root).unwrap();
    let rec = record(&cfg);
    let files = all_files(&root);
    // the record lists exactly the images written, and each is the record's rendering
    let images: Vec<&String> = files.keys().filter(|k| k.ends_with(".jpg")).collect();
    assert_eq!(images, rec.keys().collect::<Vec<_>>());
    for (rel, &(identity, index)) in &rec {
        let (img, q) = render_image(&cfg, identity, index);
        assert!(
            files[rel] == jpeg(&img, q),
            "{rel} is not ({identity}, {index})"
        );
    }
    let role = |id: usize| identity_role(&cfg, id).unwrap();
    let d = CourseData::open(&root).unwrap();
    let name_of = |rel: &str| rel.split('/').nth(2).unwrap().to_string();
    let mut known_ids = std::collections::BTreeSet::new();
    for (rel, &(id, _)) in &rec {
        if rel.starts_with("verification/known/") {
            // no impostor (nor classification identity) renders a gallery image, and the
            // folder is the identity that rendered it
            assert_eq!(role(id), IdentityRole::Verification, "{rel}");
            assert_eq!(
                name_of(rel),
                runner::data::synth::identity_name(id),
                "{rel}"
            );
            known_ids.insert(id);
        }
        if rel.starts_with("classification/train/") || rel.starts_with("classification/dev/") {
            assert_eq!(role(id), IdentityRole::Classification, "{rel}");
            assert_eq!(
                name_of(rel),
                runner::data::synth::identity_name(id),
                "{rel}"
            );
        }
    }
    assert_eq!(known_ids.len(), cfg.verify_identities);
    // unknown_dev: a known label was rendered by that identity; n000000 by an impostor that
    // renders nothing in known/
    let mut impostors = 0;
    for (file, label) in &d.unknown_dev_labels {
        let (id, _) = rec[&format!("verification/unknown_dev/{file}")];
        if label == "n000000" {
            assert_eq!(role(id), IdentityRole::Impostor, "{file}");
            assert!(!known_ids.contains(&id));
            impostors += 1;
        } else {
            assert_eq!(label, &runner::data::synth::identity_name(id), "{file}");
            assert!(known_ids.contains(&id), "{file}: {label} has no gallery");
        }
    }
    assert!(impostors >= cfg.impostors, "{impostors} impostor images");
    for (file, label) in d.test_labels.as_ref().unwrap() {
        let (id, _) = rec[&format!("classification/test/{file}")];
        assert_eq!(role(id), IdentityRole::Classification, "{file}");
        assert_eq!(label, &runner::data::synth::identity_name(id), "{file}");
    }
    // classification, verification and impostor identities are distinct trait draws, not
    // only distinct folder names
    let all: std::collections::BTreeSet<usize> = rec.values().map(|(id, _)| *id).collect();
    assert_eq!(
        all.len(),
        cfg.identities + cfg.verify_identities + cfg.impostors
    );
    let mut draws = std::collections::BTreeMap::new();
    for &id in &all {
        let mut rng = runner::data::synth::derived_rng(cfg.seed, id as u64, 0, b"identity");
        let t = format!("{:?}", traits::IdentityTraits::sample(&mut rng));
        if let Some(other) = draws.insert(t, id) {
            panic!("identities {other} and {id} share their traits");
        }
    }
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
        image_size_from_eval: false,
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
    let acc = runner::data::raw_pixel_nn_accuracy(&d, false).unwrap().0;
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
        let acc = runner::data::raw_pixel_nn_accuracy(&d, false).unwrap().0;
        eprintln!(
            "{difficulty:?}: raw-pixel 1-NN dev accuracy {acc:.4} ({} dev images)",
            d.dev.len()
        );
        if difficulty == Difficulty::Medium {
            assert!(acc < 0.3);
        }
    }
}

/// An interrupted generation (some images written into `<out>.partial`, the rest not) is
/// continued, not restarted: the images there are kept, the rest rendered, and the set comes
/// out byte for byte as one uninterrupted generation; the summary says how many were kept,
/// how large the set is and how long it took.
#[test]
fn an_interrupted_generation_continues_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(11);
    let whole = tmp.path().join("whole");
    let s = generate(&cfg, &whole).unwrap();
    assert_eq!(s.resumed_images, 0);
    let files = all_files(&whole);
    assert_eq!(
        s.bytes,
        files.values().map(|b| b.len() as u64).sum::<u64>(),
        "bytes on disk"
    );
    // what a kill mid-generation leaves: every other image, and no CSV yet
    let out = tmp.path().join("again");
    let partial = runner::data::synth::partial_dir(&out);
    let mut kept = 0;
    for (i, (rel, bytes)) in files.iter().enumerate() {
        if i % 2 == 0 && rel.ends_with(".jpg") {
            let p = partial.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            kept += 1;
        }
    }
    let s2 = generate(&cfg, &out).unwrap();
    assert_eq!(s2.resumed_images, kept);
    assert!(!partial.exists(), "renamed into place");
    assert_eq!(all_files(&out), files);
}
