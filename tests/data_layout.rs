//! The course layout reader: clear errors for missing parts, dev identities checked against
//! train, optional verification part, CSV labels, the pairs format and the fingerprint.

use runner::data::{fingerprint, read_pairs, CourseData};
use std::path::Path;

fn img(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]))
        .save(path)
        .unwrap();
}

fn minimal(root: &Path) {
    img(&root.join("classification/train/alice/1.png"));
    img(&root.join("classification/train/alice/2.png"));
    img(&root.join("classification/train/bob/1.png"));
    img(&root.join("classification/dev/bob/3.png"));
    img(&root.join("classification/test/b.png"));
    img(&root.join("classification/test/a.png"));
}

#[test]
fn reads_classification_only() {
    let t = tempfile::tempdir().unwrap();
    minimal(t.path());
    let d = CourseData::open(t.path()).unwrap();
    assert_eq!(d.classes, vec!["alice", "bob"]);
    assert_eq!(d.train.len(), 3);
    assert_eq!(d.dev.len(), 1);
    assert_eq!(d.dev[0].label, 1);
    assert_eq!(d.test.len(), 2);
    assert!(d.test[0].ends_with("a.png"));
    assert!(d.test_labels.is_none());
    assert!(d.known.is_empty() && d.unknown_dev.is_empty());
    assert!(!d.has_verification());
}

#[test]
fn reads_verification_and_labels() {
    let t = tempfile::tempdir().unwrap();
    minimal(t.path());
    let r = t.path();
    std::fs::write(
        r.join("classification/test_labels.csv"),
        "id,label\na.png,alice\nb.png,bob\n",
    )
    .unwrap();
    img(&r.join("verification/known/carol/1.png"));
    img(&r.join("verification/unknown_dev/u1.png"));
    img(&r.join("verification/unknown_dev/u2.png"));
    img(&r.join("verification/unknown_test/v1.png"));
    std::fs::write(
        r.join("verification/verification_dev.csv"),
        "id,label\nu1.png,carol\nu2.png,n000000\n",
    )
    .unwrap();
    let d = CourseData::open(r).unwrap();
    assert_eq!(d.test_labels.as_ref().unwrap()["a.png"], "alice");
    assert_eq!(d.known_identities, vec!["carol"]);
    assert_eq!(d.unknown_dev_labels["u2.png"], "n000000");
    assert_eq!(d.unknown_test.len(), 1);
    assert!(d.has_verification());
    // A gallery identity named like "no match" is refused, naming the folder.
    img(&r.join("verification/known/n000000/1.png"));
    let err = CourseData::open(r).unwrap_err().to_string();
    assert!(
        err.contains("known/n000000") && err.contains("no match"),
        "{err}"
    );
}

#[test]
fn clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let err = CourseData::open(t.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    let err = CourseData::open(t.path()).unwrap_err();
    assert!(err.to_string().contains("classification"), "{err}");
    minimal(t.path());
    img(&t.path().join("classification/dev/zed/1.png"));
    let err = CourseData::open(t.path()).unwrap_err();
    assert!(err.to_string().contains("zed"), "{err}");
    std::fs::remove_dir_all(t.path().join("classification/dev/zed")).unwrap();
    img(&t.path().join("verification/known/carol/1.png"));
    img(&t.path().join("verification/unknown_dev/u1.png"));
    let err = CourseData::open(t.path()).unwrap_err();
    assert!(err.to_string().contains("verification_dev.csv"), "{err}");
    std::fs::write(
        t.path().join("verification/verification_dev.csv"),
        "id,label\nu1.png,dave\n",
    )
    .unwrap();
    let err = CourseData::open(t.path()).unwrap_err();
    assert!(err.to_string().contains("dave"), "{err}");
}

#[test]
fn pairs_format() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("pairs.txt");
    std::fs::write(
        &p,
        "img1 img2 same\na/1.jpg b/2.jpg 1\n# comment\n\na/1.jpg /abs/3.jpg 0\n",
    )
    .unwrap();
    let pairs = read_pairs(&p).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].0, t.path().join("a/1.jpg"));
    assert!(pairs[0].2);
    assert_eq!(pairs[1].1, Path::new("/abs/3.jpg"));
    assert!(!pairs[1].2);
    std::fs::write(&p, "a b 1\nc d maybe\n").unwrap();
    let err = read_pairs(&p).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

/// A first line is a header only when it looks like one; a bad label on a first line of
/// image paths is an error naming the file and line, not a silently dropped pair.
#[test]
fn pairs_header_only_when_it_looks_like_one() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("pairs.txt");
    for bad in ["maybe", "2", "y"] {
        std::fs::write(&p, format!("a.jpg b.jpg {bad}\nc.jpg d.jpg 1\n")).unwrap();
        let err = read_pairs(&p).expect_err(bad).to_string();
        assert!(
            err.contains("pairs.txt") && err.contains("line 1") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    // existing files without an image extension are image paths too
    std::fs::write(t.path().join("x"), b"").unwrap();
    std::fs::write(&p, "x x maybe\nc.jpg d.jpg 1\n").unwrap();
    assert!(read_pairs(&p).is_err());
    // headers: known words, with or without commas, also after leading comments
    for header in [
        "img1 img2 same",
        "image_a,image_b,label",
        "# list v1\n\n#x\nleft right match",
    ] {
        std::fs::write(&p, format!("{header}\nc.jpg d.jpg 1\ne.jpg f.jpg no\n")).unwrap();
        let pairs = read_pairs(&p).unwrap_or_else(|e| panic!("{header}: {e}"));
        assert_eq!(pairs.len(), 2, "{header}");
        assert_eq!(pairs[0].0, t.path().join("c.jpg"));
        assert!(pairs[0].2 && !pairs[1].2);
    }
    // only the first line may be a header
    std::fs::write(&p, "c.jpg d.jpg 1\nimg1 img2 same\n").unwrap();
    let err = read_pairs(&p).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn fingerprint_is_stable_across_copies() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    minimal(&a);
    minimal(&b);
    assert_eq!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
    img(&b.join("classification/train/bob/9.png"));
    assert_ne!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
}

/// A test or unknown_test label file that leaves an image out is a layout error naming the
/// file and the image, not a silently lower accuracy.
#[test]
fn label_files_must_cover_every_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([
            "data",
            "synth",
            "--out",
            root.to_str().unwrap(),
            "--identities",
            "6",
        ])
        .args(["--size", "32"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(runner::data::CourseData::open(&root).is_ok());
    for csv in [
        "classification/test_labels.csv",
        "verification/verification_test.csv",
    ] {
        let path = root.join(csv);
        let full = std::fs::read_to_string(&path).unwrap();
        let header_only = full.lines().next().unwrap().to_string() + "\n";
        std::fs::write(&path, header_only).unwrap();
        let err = runner::data::CourseData::open(&root)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(csv) && err.contains("no label for image"),
            "{err}"
        );
        std::fs::write(&path, full).unwrap();
    }
}

#[test]
fn hidden_entries_are_not_data_and_empty_identities_or_relabelled_rows_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    minimal(r);
    let before = fingerprint(r).unwrap();
    // Notebook checkpoints, macOS resource forks and a dangling link: ignored everywhere.
    img(&r.join("classification/train/.ipynb_checkpoints/x-checkpoint.png"));
    img(&r.join("classification/train/alice/._1.png"));
    img(&r.join("classification/test/._a.png"));
    std::os::unix::fs::symlink("/nonexistent", r.join("classification/README")).unwrap();
    std::os::unix::fs::symlink("..", r.join("classification/loop")).unwrap();
    let d = CourseData::open(r).unwrap();
    assert_eq!(d.classes, vec!["alice", "bob"]);
    assert_eq!(d.train.len(), 3);
    assert_eq!(d.test.len(), 2);
    assert_eq!(
        fingerprint(r).unwrap(),
        before,
        "hidden files change nothing"
    );
    // An identity folder without images would be a class nothing trains.
    std::fs::create_dir_all(r.join("classification/train/carol")).unwrap();
    let err = CourseData::open(r).unwrap_err().to_string();
    assert!(
        err.contains("train/carol") && err.contains("without images"),
        "{err}"
    );
    std::fs::remove_dir(r.join("classification/train/carol")).unwrap();
    // A label file that labels one image twice, differently, names the row.
    std::fs::write(
        r.join("classification/test_labels.csv"),
        "id,label\na.png,alice\nb.png,bob\na.png,bob\n",
    )
    .unwrap();
    let err = CourseData::open(r).unwrap_err().to_string();
    assert!(err.contains("row 4") && err.contains("a.png"), "{err}");
    // A test label no training identity has could never be predicted.
    std::fs::write(
        r.join("classification/test_labels.csv"),
        "id,label\na.png,alice\nb.png,zed\n",
    )
    .unwrap();
    let err = CourseData::open(r).unwrap_err().to_string();
    assert!(err.contains("`zed`") && err.contains("b.png"), "{err}");
}
