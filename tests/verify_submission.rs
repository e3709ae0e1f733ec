//! The course CSV: header `id,label`, sorted by id, atomic, one row per image.

use runner::verify::{read_submission, write_submission, VerifyError, NO_MATCH};

#[test]
fn writes_sorted_rows_with_the_exact_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("submission.csv");
    let rows = [
        ("c.jpg", NO_MATCH),
        ("a.jpg", "n000123"),
        ("b.jpg", "n000007"),
    ];
    assert_eq!(write_submission(&path, &rows).unwrap(), 3);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "id,label\na.jpg,n000123\nb.jpg,n000007\nc.jpg,n000000\n"
    );
    let back = read_submission(&path).unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back[0], ("a.jpg".to_string(), "n000123".to_string()));
}

#[test]
fn replaces_atomically_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.csv");
    write_submission(&path, &[("x", "n000001")]).unwrap();
    // A failed write (duplicate id) leaves the old file untouched.
    let err = write_submission(&path, &[("y", "a"), ("y", "b")]).unwrap_err();
    assert!(matches!(err, VerifyError::DuplicateId(ref id) if id == "y"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "id,label\nx,n000001\n"
    );
    write_submission(&path, &[(String::from("z"), String::from("n000002"))]).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "id,label\nz,n000002\n"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["s.csv"]);
}

#[test]
fn quotes_awkward_ids_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.csv");
    write_submission(&path, &[("a,b.jpg", "n1"), ("q\"x", "n2")]).unwrap();
    let back = read_submission(&path).unwrap();
    assert_eq!(back[0].0, "a,b.jpg");
    assert_eq!(back[1].0, "q\"x");
    let empty: [(&str, &str); 0] = [];
    assert!(matches!(
        write_submission(&path, &empty),
        Err(VerifyError::Empty { .. })
    ));
    assert!(matches!(
        write_submission(&path, &[("", "n1")]),
        Err(VerifyError::EmptyId(0))
    ));
    std::fs::write(&path, "image,label\na,b\n").unwrap();
    assert!(matches!(
        read_submission(&path),
        Err(VerifyError::BadHeader { .. })
    ));
    // Writing into a path whose parent is a file fails with the path named.
    let blocked = dir.path().join("s.csv").join("x.csv");
    let err = write_submission(&blocked, &[("a", "b")]).unwrap_err();
    assert!(err.to_string().contains("s.csv"), "{err}");
}
