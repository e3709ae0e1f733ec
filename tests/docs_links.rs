//! The documentation holds together: every relative link in README.md, docs/*.md and the
//! Markdown files they link points at a file that exists (and, with `#anchor`, at a heading
//! of that file, by GitHub's anchor rules); every page in docs/ is linked from the README; the
//! README stays a front door (under 250 lines).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

/// `[text](target)` links of a Markdown text, outside code blocks and inline code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Drop inline code spans, so `a[i](x)` in code is not a link.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(pos) = rest.find("](") {
            let after = &rest[pos + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped except `-` and `_`, spaces
/// to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut queue: VecDeque<PathBuf> = VecDeque::from([PathBuf::from("README.md")]);
    for e in std::fs::read_dir("docs").expect("a docs/ folder") {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            queue.push_back(p);
        }
    }
    let mut seen = BTreeSet::new();
    let mut broken = Vec::new();
    let mut checked = 0;
    while let Some(file) = queue.pop_front() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, frag) = match link.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                normalize(&dir.join(path))
            };
            if !target.exists() {
                broken.push(format!(
                    "{}: ({link}): no {}",
                    file.display(),
                    target.display()
                ));
                continue;
            }
            let is_md = target.extension().is_some_and(|x| x == "md");
            if let Some(frag) = frag {
                let headings = anchors(&std::fs::read_to_string(&target).unwrap_or_default());
                if !is_md || !headings.contains(frag) {
                    broken.push(format!(
                        "{}: ({link}): no heading #{frag} in {}",
                        file.display(),
                        target.display()
                    ));
                }
            }
            if is_md {
                queue.push_back(target);
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Pages whose README line is added when their branch is merged (the README is edited on
/// main only): each must be linked from a page the README links meanwhile. Remove an entry
/// once the README links the page.
const AWAITING_README: &[&str] = &["docs/cluster.md"];

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|l| l.split('#').next().unwrap_or("").to_string())
        .collect();
    for e in std::fs::read_dir("docs").unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            let rel = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
            if AWAITING_README.contains(&rel.as_str()) && !linked.contains(&rel) {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let via = linked.iter().any(|page| {
                    page.starts_with("docs/")
                        && std::fs::read_to_string(page).is_ok_and(|t| {
                            links(&t)
                                .iter()
                                .any(|l| l.split('#').next() == Some(name.as_str()))
                        })
                });
                assert!(
                    via,
                    "{rel} is linked neither from the README nor from a page it links"
                );
                continue;
            }
            assert!(linked.contains(&rel), "README.md does not link {rel}");
        }
    }
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let lines = readme.lines().count();
    assert!(
        lines < 250,
        "README.md has {lines} lines; move detail into docs/"
    );
    for needed in ["cargo run --release -- sweep", "cargo test --release"] {
        assert!(readme.contains(needed), "README.md must show `{needed}`");
    }
}

#[test]
fn the_link_parser_sees_links_and_anchors() {
    let md = "see [a](docs/a.md#x-y) and `[no](code.md)`\n```\n[no](fence.md)\n```\n# X, y!\n";
    assert_eq!(links(md), vec!["docs/a.md#x-y".to_string()]);
    assert!(anchors(md).contains("x-y"));
    assert_eq!(
        anchor(" Sweeps, `--set` and run keys"),
        "sweeps---set-and-run-keys"
    );
}
