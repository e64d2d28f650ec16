//! The block registry: `$BLOCKCTL_HOME/blocks.toml`, one table per block (`[s3.prod-flows]`),
//! mode 0600, rewritten atomically under a file lock so concurrent writers lose nothing.
//! `local/default` always exists without being saved.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::BlockDocument;
use crate::error::{Error, Result};
use crate::slug::{BlockId, BlockType};

/// The registry's file name inside the blockctl home.
pub const REGISTRY_FILE: &str = "blocks.toml";

/// `$BLOCKCTL_HOME`, else `$XDG_CONFIG_HOME/blockctl`, else `~/.config/blockctl`.
pub fn blockctl_home() -> PathBuf {
    if let Some(home) = env_path("BLOCKCTL_HOME") {
        return home;
    }
    if let Some(xdg) = env_path("XDG_CONFIG_HOME") {
        return xdg.join("blockctl");
    }
    user_home().join(".config").join("blockctl")
}

/// Where `local/default` keeps its data: `$BLOCKCTL_HOME/storage` when `BLOCKCTL_HOME` is
/// set, else `$XDG_DATA_HOME/blockctl/storage`, else `~/.local/share/blockctl/storage`.
pub fn default_local_basepath() -> PathBuf {
    if let Some(home) = env_path("BLOCKCTL_HOME") {
        return home.join("storage");
    }
    if let Some(xdg) = env_path("XDG_DATA_HOME") {
        return xdg.join("blockctl").join("storage");
    }
    user_home()
        .join(".local")
        .join("share")
        .join("blockctl")
        .join("storage")
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn user_home() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

/// The saved block documents, read from one registry file.
#[derive(Debug, Clone)]
pub struct RegistryFile {
    path: PathBuf,
    docs: BTreeMap<BlockId, BlockDocument>,
}

impl RegistryFile {
    /// Reads `$BLOCKCTL_HOME/blocks.toml` (an absent file is an empty registry).
    pub fn load() -> Result<Self> {
        Self::load_from(blockctl_home().join(REGISTRY_FILE))
    }

    /// Reads the registry at `path` instead (an absent file is an empty registry); saves go
    /// there too.
    pub fn load_from(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let docs = match fs::read_to_string(&path) {
            Ok(text) => parse(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Ok(RegistryFile { path, docs })
    }

    /// The file this registry reads and saves.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The document for `id`; `local/default` is always there unless it was saved over.
    pub fn get(&self, id: &BlockId) -> Result<BlockDocument> {
        if let Some(doc) = self.docs.get(id) {
            return Ok(doc.clone());
        }
        if *id == BlockId::local_default() {
            return Ok(local_default_document());
        }
        Err(Error::NotFound(format!(
            "no block {id} (create it with `blockctl block create {id} --set ...`)"
        )))
    }

    /// Every block, `local/default` included, sorted by id.
    pub fn documents(&self) -> Vec<BlockDocument> {
        let mut docs = self.docs.clone();
        docs.entry(BlockId::local_default())
            .or_insert_with(local_default_document);
        docs.into_values().collect()
    }

    /// Saves a new document (or replaces one with `overwrite`), under the lock.
    pub fn create(&mut self, doc: BlockDocument, overwrite: bool) -> Result<()> {
        if doc.id == BlockId::local_default() {
            return Err(Error::Usage(
                "local/default is built in; create a block with another name".into(),
            ));
        }
        self.update(|docs| {
            if docs.contains_key(&doc.id) && !overwrite {
                return Err(Error::Conflict(format!(
                    "block {} already exists (use --overwrite to replace it)",
                    doc.id
                )));
            }
            docs.insert(doc.id.clone(), doc);
            Ok(())
        })
    }

    /// Removes a saved document, under the lock.
    pub fn remove(&mut self, id: &BlockId) -> Result<()> {
        if *id == BlockId::local_default() {
            return Err(Error::Usage(
                "local/default is built in and cannot be removed".into(),
            ));
        }
        self.update(|docs| match docs.remove(id) {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!("no block {id}"))),
        })
    }

    /// Re-reads the file under an exclusive lock, applies `change`, and writes the result
    /// atomically (temp file with mode 0600, then rename).
    fn update(
        &mut self,
        change: impl FnOnce(&mut BTreeMap<BlockId, BlockDocument>) -> Result<()>,
    ) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let docs = crate::machine_lock::while_locked(&dir, ".blocks.toml.lock", || {
            let mut docs = RegistryFile::load_from(&self.path)?.docs;
            change(&mut docs)?;
            let text = render(&docs);

            let mut tmp = tempfile::Builder::new()
                .prefix(".blocks.toml.")
                .tempfile_in(&dir)
                .map_err(|e| Error::io(format!("creating a temp file in {}", dir.display()), e))?;
            set_private(tmp.as_file())?;
            tmp.write_all(text.as_bytes())
                .and_then(|_| tmp.as_file().sync_all())
                .map_err(|e| Error::io("writing the registry", e))?;
            tmp.persist(&self.path)
                .map_err(|e| Error::io(format!("replacing {}", self.path.display()), e.error))?;
            Ok(docs)
        })?;
        self.docs = docs;
        Ok(())
    }
}

fn set_private(file: &fs::File) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("setting the registry's mode to 0600", e))?;
    }
    let _ = file;
    Ok(())
}

fn local_default_document() -> BlockDocument {
    let basepath = default_local_basepath().to_string_lossy().into_owned();
    BlockDocument {
        id: BlockId::local_default(),
        fields: [("basepath".to_string(), toml::Value::String(basepath))].into(),
    }
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<BlockId, BlockDocument>> {
    let bad = |why: String| Error::Usage(format!("registry {}: {why}", path.display()));
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.message().to_string()))?;
    let mut docs = BTreeMap::new();
    for (ty, blocks) in table {
        let block_type = BlockType::parse(&ty).map_err(|e| bad(e.to_string()))?;
        let blocks = blocks
            .as_table()
            .ok_or_else(|| bad(format!("`{ty}` should be a table of blocks")))?;
        for (name, fields) in blocks {
            let id = BlockId::new(block_type, name).map_err(|e| bad(e.to_string()))?;
            let fields = fields
                .as_table()
                .ok_or_else(|| bad(format!("`{ty}.{name}` should be a table of fields")))?;
            let fields = fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            docs.insert(id.clone(), BlockDocument { id, fields });
        }
    }
    Ok(docs)
}

fn render(docs: &BTreeMap<BlockId, BlockDocument>) -> String {
    let mut root = toml::Table::new();
    for doc in docs.values() {
        let by_type = root
            .entry(doc.id.block_type.as_str())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("a type entry is a table");
        let fields: toml::Table = doc.fields.clone().into_iter().collect();
        by_type.insert(doc.id.name.as_str().to_string(), toml::Value::Table(fields));
    }
    let mut out =
        String::from("# blockctl block registry: edit with `blockctl block create/rm`.\n");
    out.push_str(&toml::to_string(&root).expect("a TOML table always renders"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, bucket: &str) -> BlockDocument {
        BlockDocument {
            id: BlockId::parse(id).unwrap(),
            fields: [("bucket".to_string(), toml::Value::String(bucket.into()))].into(),
        }
    }

    #[test]
    fn create_writes_a_private_file_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.toml");
        let mut reg = RegistryFile::load_from(&path).unwrap();
        reg.create(doc("s3/prod-flows", "b1"), false).unwrap();
        let again = RegistryFile::load_from(&path).unwrap();
        assert_eq!(
            again
                .get(&BlockId::parse("s3/prod-flows").unwrap())
                .unwrap(),
            doc("s3/prod-flows", "b1")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn create_refuses_to_replace_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = RegistryFile::load_from(dir.path().join("blocks.toml")).unwrap();
        reg.create(doc("s3/a", "b1"), false).unwrap();
        let err = reg.create(doc("s3/a", "b2"), false).unwrap_err();
        assert_eq!(err.exit_code(), 6);
        reg.create(doc("s3/a", "b2"), true).unwrap();
        assert_eq!(
            reg.get(&BlockId::parse("s3/a").unwrap()).unwrap(),
            doc("s3/a", "b2")
        );
    }

    #[test]
    fn local_default_is_always_present_and_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = RegistryFile::load_from(dir.path().join("blocks.toml")).unwrap();
        assert!(reg.get(&BlockId::local_default()).is_ok());
        assert_eq!(reg.documents().len(), 1);
        assert_eq!(
            reg.remove(&BlockId::local_default())
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            reg.remove(&BlockId::parse("s3/none").unwrap())
                .unwrap_err()
                .exit_code(),
            3
        );
    }

    #[test]
    fn concurrent_creates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.toml");
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut reg = RegistryFile::load_from(&path).unwrap();
                    reg.create(doc(&format!("s3/b{i}"), "x"), false).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let reg = RegistryFile::load_from(&path).unwrap();
        assert_eq!(reg.documents().len(), 11);
    }
}
