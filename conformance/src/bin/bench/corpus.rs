//! The seeded corpora (`flow`, `many`, `big`, `tree`), the one-file edit, and the sha256 check of every download.

use super::*;

/// splitmix64: small, fast, and the same on every machine.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub(crate) const WORDS: &[&str] = &[
    "def", "return", "import", "from", "flow", "task", "self", "data", "frame", "select", "where",
    "group", "by", "order", "config", "value", "None", "True", "False", "for", "in", "if", "else",
    "with", "as", "print", "logger", "result", "table", "column", "join", "schema", "path", "open",
    "read", "write", "(", ")", ":", "=", "+", ",", "\n", "\n    ",
];

pub(crate) fn text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 16);
    while out.len() < size {
        out.extend_from_slice(WORDS[rng.range(0, WORDS.len() - 1)].as_bytes());
        out.push(b' ');
    }
    out.truncate(size);
    out
}

pub(crate) fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

pub(crate) fn generate(corpus: &str, root: &Path, big_mib: usize, tree_mib: usize) {
    let mut rng = Rng(match corpus {
        "flow" => 1,
        "many" => 2,
        "tree" => 4,
        _ => 3,
    });
    match corpus {
        "flow" => {
            for i in 0..3000 {
                let dir = format!(
                    "src/pkg{:02}/mod{:02}/sub{}",
                    i % 40,
                    (i / 40) % 8,
                    (i / 320) % 3
                );
                let ext = ["py", "sql", "toml", "yaml", "md"][i % 5];
                let size = rng.range(512, 16 * 1024);
                write(
                    &root.join(dir).join(format!("f{i:04}.{ext}")),
                    &text(&mut rng, size),
                );
            }
            let mut buf = vec![0u8; 1 << 20];
            for i in 0..30 {
                rng.fill(&mut buf);
                write(&root.join("data").join(format!("blob{i:02}.bin")), &buf);
            }
        }
        "many" => {
            for i in 0..20_000 {
                let dir = format!("d{:03}/e{:02}", i % 200, (i / 200) % 10);
                let size = rng.range(1024, 4096);
                write(
                    &root.join(dir).join(format!("f{i:05}.txt")),
                    &text(&mut rng, size),
                );
            }
        }
        "tree" => {
            // Memory must stay flat as a tree grows: many 1 MiB files, every other one text
            // (compressible), the others random.
            let mut buf = vec![0u8; 1 << 20];
            for i in 0..tree_mib {
                let path = root.join(format!("d{:02}/f{i:05}.dat", i % 64));
                match i % 2 {
                    0 => write(&path, &text(&mut rng, 1 << 20)),
                    _ => {
                        rng.fill(&mut buf);
                        write(&path, &buf);
                    }
                }
            }
        }
        _ => {
            fs::create_dir_all(root).unwrap();
            let mut f = fs::File::create(root.join("big.bin")).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            for _ in 0..big_mib {
                rng.fill(&mut buf);
                f.write_all(&buf).unwrap();
            }
        }
    }
}

/// Relative path → sha256 of every regular file under `root` (symlinks and others are
/// listed by kind, so a missing or extra one is noticed too).
pub(crate) fn digest_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let mut h = Sha256::new();
                let mut f = fs::File::open(&path).unwrap();
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                out.insert(rel, hex::encode(h.finalize()));
            } else {
                out.insert(rel, "not a regular file".into());
            }
        }
    }
    out
}

pub(crate) fn verify(
    what: &str,
    expected: &BTreeMap<String, String>,
    dir: &Path,
) -> Result<(), String> {
    let got = digest_tree(dir);
    if &got == expected {
        return Ok(());
    }
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    let differ = expected
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .count();
    Err(format!(
        "{what}: download differs from the source ({missing} missing, {extra} extra, \
         {differ} with other bytes)"
    ))
}

/// Bytes of every file under `dir`.
pub(crate) fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            total += tree_bytes(&e.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// Appends 300 bytes to the first `.py` file of the tree (in path order): the one-line edit.
pub(crate) fn edit_one_file(root: &Path) -> Result<PathBuf, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    pub(crate) fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "py") {
                out.push(p);
            }
        }
    }
    walk(root, &mut files);
    files.sort();
    let file = files.into_iter().next().ok_or("no .py file to edit")?;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .map_err(|e| e.to_string())?;
    f.write_all(&[b'#'; 300]).map_err(|e| e.to_string())?;
    Ok(file)
}
