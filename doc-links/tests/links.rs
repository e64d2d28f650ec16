//! Every relative link and `#anchor` in README.md, ARCHITECTURE.md and docs/ resolves, and
//! the check itself finds a broken file, a broken anchor and a page left out of SUMMARY.md.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("doc-links sits one level below the workspace root")
        .to_path_buf()
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = workspace();
    let pages = doc_links::pages(&root);
    assert!(
        pages.len() > 10 && pages.iter().any(|p| p.ends_with("docs/SUMMARY.md")),
        "expected README.md, ARCHITECTURE.md and the docs/ book under {}, found {pages:?}",
        root.display()
    );
    let broken = doc_links::check(&root);
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_check_finds_broken_links() {
    let root = std::env::temp_dir().join(format!("doc-links-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("docs/guide")).unwrap();
    fs::write(
        root.join("README.md"),
        "# Top\n## Exit codes\n[ok](docs/guide/a.md#a-page) [ok](#exit-codes)\n\
         [gone](docs/guide/gone.md) [bad anchor](docs/guide/a.md#nowhere)\n",
    )
    .unwrap();
    fs::write(root.join("docs/SUMMARY.md"), "- [A](guide/a.md)\n").unwrap();
    fs::write(
        root.join("docs/guide/a.md"),
        "# A page\n[up](../../README.md#top) [self](#missing)\n",
    )
    .unwrap();
    fs::write(root.join("docs/guide/orphan.md"), "# Orphan\n").unwrap();

    let broken = doc_links::check(&root);
    let got: Vec<(String, usize, String)> = broken
        .iter()
        .map(|b| {
            (
                b.page.strip_prefix(&root).unwrap().display().to_string(),
                b.line,
                b.link.clone(),
            )
        })
        .collect();
    fs::remove_dir_all(&root).unwrap();
    assert_eq!(
        got,
        [
            ("README.md".to_string(), 4, "docs/guide/gone.md".to_string()),
            (
                "README.md".to_string(),
                4,
                "docs/guide/a.md#nowhere".to_string()
            ),
            ("docs/guide/a.md".to_string(), 2, "#missing".to_string()),
            (
                "docs/SUMMARY.md".to_string(),
                0,
                "guide/orphan.md".to_string()
            ),
        ],
        "{broken:#?}"
    );
}
