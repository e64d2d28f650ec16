//! The link check of the project's Markdown: every relative link in `README.md`,
//! `ARCHITECTURE.md` and `docs/**/*.md` names a file that exists, every `#anchor` names a
//! heading of its page (slugged as GitHub does), and every page under `docs/` is listed in
//! `docs/SUMMARY.md`, the book's table of contents. Run by `tests/links.rs`.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// One link that does not resolve: the page, its line, the link and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub page: PathBuf,
    pub line: usize,
    pub link: String,
    pub why: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: ({}) {}",
            self.page.display(),
            self.line,
            self.link,
            self.why
        )
    }
}

/// The pages the check covers below `root`: `README.md`, `ARCHITECTURE.md` and every `.md`
/// under `docs/`, sorted.
pub fn pages(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for top in ["README.md", "ARCHITECTURE.md"] {
        let p = root.join(top);
        if p.is_file() {
            found.push(p);
        }
    }
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every broken link of the pages below `root`, and every page of `docs/` that
/// `docs/SUMMARY.md` leaves out.
pub fn check(root: &Path) -> Vec<Broken> {
    let pages = pages(root);
    let mut anchors: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    let mut broken = Vec::new();
    for page in &pages {
        let text = match fs::read_to_string(page) {
            Ok(t) => t,
            Err(e) => {
                broken.push(Broken {
                    page: page.clone(),
                    line: 0,
                    link: String::new(),
                    why: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        for (line, link) in links(&text) {
            if let Some(why) = resolve(page, &link, &mut anchors) {
                broken.push(Broken {
                    page: page.clone(),
                    line,
                    link,
                    why,
                });
            }
        }
    }
    broken.extend(unlisted(root, &pages));
    broken
}

/// Pages under `docs/` that `docs/SUMMARY.md` does not link (mdBook would not render them).
fn unlisted(root: &Path, pages: &[PathBuf]) -> Vec<Broken> {
    let docs = root.join("docs");
    let summary = docs.join("SUMMARY.md");
    let Ok(text) = fs::read_to_string(&summary) else {
        return Vec::new();
    };
    let listed: BTreeSet<PathBuf> = links(&text)
        .into_iter()
        .filter(|(_, l)| !is_external(l))
        .map(|(_, l)| normalize(&docs.join(l.split('#').next().unwrap_or(""))))
        .collect();
    pages
        .iter()
        .filter(|p| p.starts_with(&docs) && **p != summary && !listed.contains(*p))
        .map(|p| Broken {
            page: summary.clone(),
            line: 0,
            link: p.strip_prefix(&docs).unwrap_or(p).display().to_string(),
            why: "a page of docs/ that SUMMARY.md does not list".into(),
        })
        .collect()
}

fn is_external(link: &str) -> bool {
    link.contains("://") || link.starts_with("mailto:")
}

/// Why `link` on `page` does not resolve, or `None` when it does.
fn resolve(
    page: &Path,
    link: &str,
    anchors: &mut HashMap<PathBuf, BTreeSet<String>>,
) -> Option<String> {
    if is_external(link) {
        return None;
    }
    let (path, anchor) = match link.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (link, None),
    };
    let target = if path.is_empty() {
        page.to_path_buf()
    } else if path.starts_with('/') {
        return Some("an absolute path: links must be relative".into());
    } else {
        normalize(&page.parent().unwrap_or(Path::new("")).join(path))
    };
    if !target.exists() {
        return Some(format!("{} does not exist", target.display()));
    }
    let anchor = anchor?;
    if target.extension().is_none_or(|e| e != "md") {
        return Some(format!(
            "an anchor into {}, which is not Markdown",
            target.display()
        ));
    }
    let known = anchors.entry(target.clone()).or_insert_with(|| {
        fs::read_to_string(&target)
            .map(|t| heading_slugs(&t))
            .unwrap_or_default()
    });
    (!known.contains(anchor)).then(|| {
        format!(
            "no heading of {} has the anchor #{anchor} (it has: {})",
            target.display(),
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Lines outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fence: Option<&str> = None;
    text.lines().enumerate().filter_map(move |(i, line)| {
        let trimmed = line.trim_start();
        for marker in ["```", "~~~"] {
            if trimmed.starts_with(marker) {
                match fence {
                    None => fence = Some(marker),
                    Some(open) if open == marker => fence = None,
                    Some(_) => {}
                }
                return None;
            }
        }
        fence.is_none().then_some((i + 1, line))
    })
}

/// A line without its inline code spans, so that `` `a[0](b)` `` is no link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for ch in line.chars() {
        if ch == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(ch);
        }
    }
    out
}

/// The targets of the inline links `[text](target)`, images included, and of the link
/// reference definitions `[label]: target`, with their line numbers.
pub fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in prose(text) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some((_, rest)) = trimmed.split_once("]:")
            && let Some(target) = rest.split_whitespace().next()
        {
            found.push((n, target.trim_matches(['<', '>']).to_string()));
            continue;
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            // The target ends at the matching `)`; a title after a space is left out.
            let mut depth = 0usize;
            let end = rest
                .char_indices()
                .find(|&(_, c)| match c {
                    '(' => {
                        depth += 1;
                        false
                    }
                    ')' if depth == 0 => true,
                    ')' => {
                        depth -= 1;
                        false
                    }
                    _ => false,
                })
                .map_or(rest.len(), |(i, _)| i);
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            found.push((n, target.trim_matches(['<', '>']).to_string()));
            rest = &rest[end..];
        }
    }
    found
}

/// The anchors GitHub gives the headings of a page: the heading's text in lower case, with
/// everything but letters, digits, spaces, `-` and `_` removed and spaces made `-`; a
/// repeated anchor gets `-1`, `-2`... Markdown inside the heading counts by its text.
pub fn heading_slugs(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut slugs = BTreeSet::new();
    for (_, line) in prose(text) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let hashes = line.trim_start_matches(' ');
        let level = hashes.len() - hashes.trim_start_matches('#').len();
        if indent > 3 || level == 0 || level > 6 {
            continue;
        }
        let rest = &hashes[level..];
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            continue;
        }
        let base = slug(rest.trim().trim_end_matches('#').trim());
        let n = seen.entry(base.clone()).or_insert(0);
        slugs.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    slugs
}

/// GitHub's anchor for one heading's text.
pub fn slug(heading: &str) -> String {
    // Links count by their text: `[text](target)` → `text`.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        match rest[open..].find("](") {
            Some(mid) => {
                let close = rest[open + mid..]
                    .find(')')
                    .map_or(rest.len(), |c| open + mid + c + 1);
                text.push_str(&rest[..open]);
                text.push_str(&rest[open + 1..open + mid]);
                rest = &rest[close..];
            }
            None => break,
        }
    }
    text.push_str(rest);
    text.chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_github_s() {
        assert_eq!(slug("Exit codes"), "exit-codes");
        assert_eq!(slug("HTTP(S), read-only"), "https-read-only");
        assert_eq!(slug("`gc` and racing puts"), "gc-and-racing-puts");
        assert_eq!(slug("files_case_sensitive"), "files_case_sensitive");
        assert_eq!(slug("[SFTP](sftp.md) quirks"), "sftp-quirks");
        assert_eq!(slug("Ünïcode – dash"), "ünïcode--dash");
    }

    #[test]
    fn repeated_headings_are_numbered_and_code_is_no_heading() {
        let text = "# A\n## Quirks\n```\n# not a heading\n```\n## Quirks\n    # code\n";
        let got: Vec<_> = heading_slugs(text).into_iter().collect();
        assert_eq!(got, ["a", "quirks", "quirks-1"]);
    }

    #[test]
    fn links_are_found_outside_code() {
        let text = "see [a](x.md#b) and ![i](img.png \"t\")\n`[no](code)`\n```\n[no](fence)\n```\n[ref]: <y.md>\n";
        let got: Vec<_> = links(text).into_iter().map(|(_, l)| l).collect();
        assert_eq!(got, ["x.md#b", "img.png", "y.md"]);
    }
}
