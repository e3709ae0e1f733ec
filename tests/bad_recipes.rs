//! Every broken recipe in tests/bad_recipes/ exits with status 2, names the file and the key
//! (with line:column where TOML has one), never panics, and leaves the store unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

fn expected_key(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let first = text.lines().next()?;
    first
        .strip_prefix("# expect-key:")
        .map(|k| k.trim().to_string())
}

fn bad_recipes() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("tests/bad_recipes")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "fragments"))
        .collect();
    out.sort();
    out
}

#[test]
fn at_least_fifteen_bad_recipes_each_fail_cleanly() {
    let recipes = bad_recipes();
    assert!(recipes.len() >= 15, "only {} bad recipes", recipes.len());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    // A store with content, to prove invalid input does not touch it.
    runner::store::Store::open(&db).unwrap();
    let before = std::fs::read(&db).unwrap();
    for recipe in recipes {
        for cmd in ["validate", "plan"] {
            let out = Command::new(env!("CARGO_BIN_EXE_runner"))
                .args(["--db", db.to_str().unwrap(), cmd, recipe.to_str().unwrap()])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let name = recipe.display().to_string();
            assert_eq!(out.status.code(), Some(2), "{name} {cmd}: {stderr}");
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
            assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
            let file_name = recipe.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                stderr.contains(&file_name),
                "{name}: message must name the file: {stderr}"
            );
            if recipe.is_file() {
                if let Some(key) = expected_key(&recipe).filter(|k| !k.is_empty()) {
                    assert!(
                        stderr.contains(&format!("`{key}`")),
                        "{name}: message must name key {key}: {stderr}"
                    );
                    // `FILE:LINE:COL`: a file (the recipe, or the fragment that wrote the
                    // key) named with a line and column
                    let has_line_col = stderr.match_indices(".toml:").any(|(i, m)| {
                        let rest = &stderr[i + m.len()..];
                        let mut parts = rest.splitn(3, |c: char| !c.is_ascii_digit());
                        let line = parts.next().unwrap_or_default();
                        let sep = rest[line.len()..].starts_with(':');
                        let col = rest[line.len()..].trim_start_matches(':');
                        let col_digits = col.chars().take_while(|c| c.is_ascii_digit()).count();
                        !line.is_empty() && sep && col_digits > 0
                    });
                    assert!(
                        has_line_col,
                        "{name}: message must give FILE:LINE:COLUMN: {stderr}"
                    );
                }
            }
        }
    }
    let after = std::fs::read(&db).unwrap();
    assert_eq!(before, after, "the store must be unchanged");
}

#[test]
fn unknown_key_suggests_the_nearest_valid_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", "tests/bad_recipes/unknown_key.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown_key.toml:12:1"), "{stderr}");
    assert!(stderr.contains("did you mean `momentum`?"), "{stderr}");
}

#[test]
fn fragment_cycle_names_the_chain() {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", "tests/bad_recipes/fragment_cycle.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fragment cycle"), "{stderr}");
    assert!(
        stderr.contains("cycle_a.toml") && stderr.contains("cycle_b.toml"),
        "{stderr}"
    );
}

#[test]
fn malformed_set_argument_is_invalid_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["plan", "recipes/quickstart.toml", "--set", "no-equals-sign"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key=value"));
}

fn validate_stderr(recipe: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["validate", recipe])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{recipe}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn torchvision_class_names_suggest_our_kind() {
    let stderr = validate_stderr("tests/bad_recipes/torchvision_transform_name.toml");
    assert!(
        stderr.contains("`transforms.train[1].kind`: unknown kind `random_horizontal_flip`\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("= help: did you mean `horizontal_flip`?"),
        "{stderr}"
    );
    // CamelCase class names and other torchvision names too; never accepted as aliases
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string("tests/bad_recipes/torchvision_transform_name.toml").unwrap();
    for (name, ours) in [
        ("RandomHorizontalFlip", "horizontal_flip"),
        ("ToTensor", "to_tensor"),
        ("RandomResizedCrop", "random_resized_crop"),
        ("random_sized_crop", "random_resized_crop"),
        ("ColorJitter", "color_jitter"),
        ("RandAugment", "rand_augment"),
    ] {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, text.replace("random_horizontal_flip", name)).unwrap();
        let stderr = validate_stderr(p.to_str().unwrap());
        assert!(
            stderr.contains(&format!("unknown kind `{name}`\n")),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("= help: did you mean `{ours}`?")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn new_transform_values_are_explained() {
    let stderr = validate_stderr("tests/bad_recipes/wrong_padding.toml");
    assert!(
        stderr.contains("[left/right, top/bottom] or [left, top, right, bottom]"),
        "{stderr}"
    );
    let stderr = validate_stderr("tests/bad_recipes/wrong_erasing_value.toml");
    assert!(stderr.contains("\"random\""), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mode.toml");
    let text = std::fs::read_to_string("tests/bad_recipes/wrong_padding.toml").unwrap();
    std::fs::write(
        &p,
        text.replace(
            "padding = [4, 4, 4]",
            "padding = 4, padding_mode = \"mirror\"",
        ),
    )
    .unwrap();
    let stderr = validate_stderr(p.to_str().unwrap());
    assert!(stderr.contains("unknown value `mirror`"), "{stderr}");
    assert!(stderr.contains("reflect"), "{stderr}");
}

/// One diagnostic as shown in place: the `-->` location, the numbered source line and the
/// text its carets underline.
#[derive(Debug)]
struct Shown {
    title: String,
    file: String,
    line: usize,
    col: usize,
    source: String,
    underlined: String,
    caret_col: usize,
}

/// Every `error:` of stderr that is shown in place (`-->`, a numbered line, carets under it).
fn shown(stderr: &str) -> Vec<Shown> {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(loc) = l.trim_start().strip_prefix("--> ") else {
            continue;
        };
        let title = lines[..i]
            .iter()
            .rev()
            .find_map(|t| t.strip_prefix("error: "))
            .unwrap_or_default()
            .to_string();
        let mut parts = loc.rsplitn(3, ':');
        let col: usize = parts.next().unwrap().parse().unwrap();
        let line: usize = parts.next().unwrap().parse().unwrap();
        let file = parts.next().unwrap().to_string();
        // `NN | source` then `   |   ^^^`
        let (src_idx, src) = lines[i..]
            .iter()
            .enumerate()
            .find_map(|(j, t)| {
                t.split_once(" | ")
                    .filter(|(n, _)| n.trim() == line.to_string())
                    .map(|(n, rest)| (i + j, (n.len() + 3, rest.to_string())))
            })
            .unwrap_or_else(|| panic!("no source line {line} after {loc}:\n{stderr}"));
        let (gutter, source) = src;
        let carets = lines[src_idx + 1];
        let start = carets
            .find('^')
            .unwrap_or_else(|| panic!("no caret: {stderr}"));
        let len = carets[start..].chars().take_while(|c| *c == '^').count();
        let caret_col = start - gutter + 1;
        let underlined: String = source.chars().skip(caret_col - 1).take(len).collect();
        out.push(Shown {
            title,
            file,
            line,
            col,
            source,
            underlined,
            caret_col,
        });
    }
    out
}

fn runner(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn three_mistakes_give_three_messages_each_in_place() {
    let recipe = "tests/bad_recipes/three_mistakes.toml";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    runner::store::Store::open(&db).unwrap();
    let before = std::fs::read(&db).unwrap();
    let png = dir.path().join("grid.png");
    let db = db.to_str().unwrap();
    // every command that loads a recipe reports all three, exits 2 and writes nothing
    for cmd in [
        vec!["validate", recipe],
        vec!["plan", recipe],
        vec!["run", recipe],
        vec!["sweep", recipe],
        vec!["inspect", recipe],
        vec!["bench", "train", recipe],
        vec!["data", "preview", recipe, "--out", png.to_str().unwrap()],
    ] {
        let out = runner(&[&["--db", db][..], &cmd].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{cmd:?}");
        let shown = shown(&stderr);
        assert_eq!(shown.len(), 3, "{cmd:?}: {stderr}");
        let expected = [
            (
                "`optimizer.momentun`: unknown key `momentun`",
                14,
                1,
                "momentun",
            ),
            (
                "`train.epochs`: invalid type: string \"ten\", expected a non-negative integer",
                17,
                10,
                "\"ten\"",
            ),
            (
                "`loss.label_smoothing`: must be in [0, 1) (got 1.5)",
                20,
                19,
                "1.5",
            ),
        ];
        for (s, (title, line, col, underlined)) in shown.iter().zip(expected) {
            assert_eq!(s.title, title, "{stderr}");
            assert!(s.file.ends_with("three_mistakes.toml"), "{s:?}");
            assert_eq!((s.line, s.col), (line, col), "{s:?}");
            let text = std::fs::read_to_string(recipe).unwrap();
            assert_eq!(
                s.source,
                text.lines().nth(line - 1).unwrap(),
                "the line as written"
            );
            assert_eq!(s.caret_col, col, "the caret starts at the column: {s:?}");
            assert_eq!(s.underlined, underlined, "{s:?}\n{stderr}");
        }
        assert!(
            stderr.contains("= help: did you mean `momentum`?"),
            "{stderr}"
        );
        assert!(
            stderr.contains("error: aborting due to 3 previous errors"),
            "{stderr}"
        );
        assert!(!stderr.contains('\x1b'), "no colour when not a terminal");
    }
    assert_eq!(before, std::fs::read(dir.path().join("store.db")).unwrap());
    assert!(!png.exists());
}

#[test]
fn three_mistakes_are_three_diagnostics_through_the_library() {
    let err = runner::recipe::load(
        std::path::Path::new("tests/bad_recipes/three_mistakes.toml"),
        &[],
    )
    .unwrap_err();
    let runner::recipe::RecipeError::Invalid(diags) = err else {
        panic!("{err}");
    };
    let keys: Vec<&str> = diags.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        keys,
        ["optimizer.momentun", "train.epochs", "loss.label_smoothing"]
    );
    for d in &diags {
        let (text, span) = (d.text.as_ref().unwrap(), d.span.clone().unwrap());
        assert!(!text[span].is_empty(), "{d}");
    }
}

#[test]
fn a_wrong_kind_is_one_error_not_one_per_option() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("adam.toml");
    std::fs::write(
        &p,
        "[data]\nroot = \"synth\"\n[model]\nkind = \"convnext\"\npreset = \"atto\"\n\
         [optimizer]\nkind = \"adam\"\nbetas = [0.9, 0.99]\nmomentum = 0.9\n\
         [transforms]\ntrain = [{ kind = \"blur\", radius = 2 }]\n",
    )
    .unwrap();
    let stderr = validate_stderr(p.to_str().unwrap());
    let shown = shown(&stderr);
    let titles: Vec<&str> = shown.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "`optimizer.kind`: unknown kind `adam`",
            "`transforms.train[0].kind`: unknown kind `blur`"
        ],
        "{stderr}"
    );
}

#[test]
fn a_duplicate_key_is_named_and_both_places_shown() {
    let stderr = validate_stderr("tests/bad_recipes/duplicate_key.toml");
    let shown = shown(&stderr);
    assert_eq!(shown.len(), 1, "{stderr}");
    assert_eq!(shown[0].title, "`train.epochs`: duplicate key", "{stderr}");
    assert_eq!((shown[0].line, shown[0].col), (12, 1));
    assert_eq!(shown[0].underlined, "epochs");
    assert!(stderr.contains("10 | epochs = 10"), "{stderr}");
    assert!(stderr.contains("first written here"), "{stderr}");
    assert!(!stderr.contains("malformed TOML"), "{stderr}");
    // in an inline table too, with the path to it
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("inline.toml");
    std::fs::write(
        &p,
        "[data]\nroot = \"synth\"\n[transforms]\ntrain = [{ kind = \"resize\", size = 3, size = 4 }]\n",
    )
    .unwrap();
    let stderr = validate_stderr(p.to_str().unwrap());
    assert!(
        stderr.contains("error: `transforms.train[0].size`: duplicate key"),
        "{stderr}"
    );
}

#[test]
fn a_list_of_the_wrong_length_names_its_key() {
    let stderr = validate_stderr("tests/bad_recipes/normalize_mean_length.toml");
    let shown = shown(&stderr);
    assert_eq!(shown.len(), 1, "{stderr}");
    assert_eq!(
        shown[0].title,
        "`transforms.train[3].mean`: invalid length 2, expected an array of length 3"
    );
    assert_eq!(shown[0].underlined, "[0.5, 0.5]", "{stderr}");
}

#[test]
fn set_errors_quote_the_flag_with_a_caret() {
    let out = runner(&[
        "plan",
        "recipes/quickstart.toml",
        "--set",
        "train.epochs=2.5",
        "--set",
        "optimizer.lrr=3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("-->"), "no file to point at: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let caret_under = |flag: &str, text: &str| {
        let i = lines
            .iter()
            .position(|l| l.ends_with(&format!("| {flag}")))
            .unwrap_or_else(|| panic!("{flag} not quoted: {stderr}"));
        let start = lines[i].find(flag).unwrap() + flag.find(text).unwrap();
        let carets = lines[i + 1];
        assert_eq!(carets.find('^'), Some(start), "{stderr}");
        assert_eq!(
            carets.trim_end().len() - start,
            text.len(),
            "carets under `{text}`: {stderr}"
        );
    };
    assert!(
        stderr.contains(
            "error: `train.epochs`: invalid type: floating point `2.5`, expected a non-negative integer"
        ),
        "{stderr}"
    );
    caret_under("--set train.epochs=2.5", "2.5");
    assert!(
        stderr.contains("error: `optimizer.lrr`: unknown key `lrr`"),
        "{stderr}"
    );
    caret_under("--set optimizer.lrr=3", "optimizer.lrr");
    assert!(stderr.contains("help: did you mean `lr`?"), "{stderr}");
}

#[test]
fn json_log_has_one_error_event_per_diagnostic() {
    let out = runner(&[
        "--log-format",
        "json",
        "validate",
        "tests/bad_recipes/three_mistakes.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let expected = [
        (
            "optimizer.momentun",
            14,
            1,
            "unknown key `momentun`; did you mean `momentum`?",
        ),
        ("train.epochs", 17, 10, "invalid type: string \"ten\""),
        (
            "loss.label_smoothing",
            20,
            19,
            "must be in [0, 1) (got 1.5)",
        ),
    ];
    for (i, (e, (key, line, col, message))) in events.iter().zip(expected).enumerate() {
        assert_eq!(e["event"], "error", "{e}");
        assert_eq!(e["key"], key, "{e}");
        assert!(
            e["file"].as_str().unwrap().ends_with("three_mistakes.toml"),
            "{e}"
        );
        assert_eq!(
            (e["line"].as_u64(), e["col"].as_u64()),
            (Some(line), Some(col))
        );
        assert!(e["message"].as_str().unwrap().starts_with(message), "{e}");
        // the event that ends the command carries its exit status
        let code = if i == 2 {
            serde_json::json!(2)
        } else {
            serde_json::Value::Null
        };
        assert_eq!(e["code"], code, "{e}");
    }
    // a --set error names its flag instead of a file
    let out = runner(&[
        "--log-format",
        "json",
        "plan",
        "recipes/quickstart.toml",
        "--set",
        "train.epochs=2.5",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{stderr}");
    assert_eq!(events[0]["flag"], "--set train.epochs=2.5");
    assert_eq!(events[0]["key"], "train.epochs");
    assert!(events[0]["file"].is_null());
    assert_eq!(events[0]["code"], 2);
}

/// The `error:` titles of stderr, in order.
fn titles(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .filter(|t| !t.starts_with("aborting due to"))
        .collect()
}

#[test]
fn errors_across_files_come_in_one_pass_with_the_nearest_fragment_name() {
    let recipe = "tests/bad_recipes/errors_across_files.toml";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    for cmd in ["validate", "plan", "run", "sweep"] {
        let out = runner(&["--db", db.to_str().unwrap(), cmd, recipe]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        let t = titles(&stderr);
        assert_eq!(t.len(), 4, "{cmd}: {stderr}");
        assert!(
            t[0].contains("fragments/Model_Small.toml` does not exist"),
            "{stderr}"
        );
        assert!(
            t[1].contains("fragments/schedul/cosine.toml` does not exist"),
            "{stderr}"
        );
        // the files after a missing one are still read, and the values checked with the
        // nearest names in place: this file's mistake and the stand-in fragment's
        assert_eq!(t[2], "`optimizer.lr`: must be > 0 (got -1)", "{stderr}");
        assert_eq!(t[3], "`train.epochs`: must be >= 1", "{stderr}");
        for help in [
            "= help: did you mean `fragments/model_small.toml`?",
            "= help: did you mean `fragments/schedule/cosine.toml`?",
            "= note: the rest of the recipe was checked with `fragments/schedule/cosine.toml` in its place",
        ] {
            assert!(stderr.contains(help), "{cmd}: {help}\n{stderr}");
        }
        let places = shown(&stderr);
        assert!(
            places[3].file.ends_with("fragments/schedule/cosine.toml"),
            "{places:?}"
        );
        assert!(
            stderr.contains("aborting due to 4 previous errors"),
            "{stderr}"
        );
    }
    assert!(!db.exists() || runs_in(&db) == 0);
}

fn runs_in(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap_or(0)
}

#[test]
fn a_fragment_with_no_near_name_is_reported_with_the_others_and_says_what_waits() {
    let out = runner(&["validate", "tests/bad_recipes/fragment_not_found.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let t = titles(&stderr);
    assert_eq!(t.len(), 2, "{stderr}");
    assert!(
        t[0].contains("zzz_qqq_unrelated.toml` does not exist"),
        "{stderr}"
    );
    assert!(t[1].starts_with("malformed TOML"), "{stderr}");
    assert!(
        stderr.contains("checked once this fragment is found: they may depend on it"),
        "{stderr}"
    );
    assert!(!stderr.contains("did you mean"), "no suggestion: {stderr}");
    // the values are not judged with a fragment missing
    assert!(!stderr.contains("optimizer.lr"), "{stderr}");
}

#[test]
fn sweep_errors_do_not_hide_each_other() {
    let recipe = "tests/bad_recipes/sweep_errors_hidden.toml";
    for cmd in ["validate", "plan", "sweep"] {
        let out = runner(&[cmd, recipe]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        let t = titles(&stderr);
        assert_eq!(
            t,
            [
                "`optimizer.lr`: must be > 0 (got -1)",
                "`sweep.params.optimizer.lr`: the list of values is empty",
                "`optimizer.learning_rate`: unknown key `learning_rate`",
                "`optimiser`: unknown key `optimiser`",
                "`model.drop_path`: must be in [0, 1) (got 1.5)",
            ],
            "{cmd}: {stderr}"
        );
        let places = shown(&stderr);
        assert_eq!(places.len(), 5, "each in place: {stderr}");
        assert_eq!(places[4].underlined, "[0.0, 1.5]", "{places:?}");
        assert!(
            stderr.contains(
                "combinations of the swept values are checked once each value passes alone"
            ),
            "{stderr}"
        );
    }
    // fixed one by one, the rest still show: without the empty list and the bad lr, the
    // unknown keys and the out-of-range value remain
    let text = std::fs::read_to_string(recipe)
        .unwrap()
        .replace("\"optimizer.lr\" = []\n", "")
        .replace("lr = -1", "lr = 0.1");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.toml");
    std::fs::write(&p, text).unwrap();
    let out = runner(&["validate", p.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(titles(&stderr).len(), 3, "{stderr}");
}
