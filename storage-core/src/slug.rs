//! Slugs: `block-type/block-name[/path]`, and the validated parts they are made of.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The canonical block types. Aliases (Prefect's block type slugs, git host names) parse to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockType {
    /// A folder on this machine (`local/default` is one).
    Local,
    /// An S3 bucket, or a bucket of any S3-compatible store.
    S3,
    /// A Google Cloud Storage bucket.
    Gcs,
    /// An Azure Blob Storage container.
    Azure,
    /// A git repository; versions are its commits.
    Git,
    /// An SMB share.
    Smb,
    /// A remote folder reached through a URL (SFTP, WebDAV, FTP, HTTP, ...).
    #[serde(rename = "remote-file-system")]
    RemoteFileSystem,
    /// An OCI (container) registry; versions are artifacts.
    Oci,
}

impl BlockType {
    /// Every type, in the order `blockctl types` lists them.
    pub const ALL: [BlockType; 8] = [
        BlockType::Local,
        BlockType::S3,
        BlockType::Gcs,
        BlockType::Azure,
        BlockType::Git,
        BlockType::Smb,
        BlockType::RemoteFileSystem,
        BlockType::Oci,
    ];

    /// The canonical name, as slugs and `blocks.toml` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockType::Local => "local",
            BlockType::S3 => "s3",
            BlockType::Gcs => "gcs",
            BlockType::Azure => "azure",
            BlockType::Git => "git",
            BlockType::Smb => "smb",
            BlockType::RemoteFileSystem => "remote-file-system",
            BlockType::Oci => "oci",
        }
    }

    /// Other names that parse to this type, so Prefect's block type slugs work as they are.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            BlockType::Local => &["local-file-system"],
            BlockType::S3 => &["s3-bucket"],
            BlockType::Gcs => &["gcs-bucket"],
            BlockType::Azure => &["azure-blob-storage-container"],
            // Prefect's block type slugs (`github-repository`, ...) and the short host names.
            BlockType::Git => &[
                "github",
                "github-repository",
                "gitlab",
                "gitlab-repository",
                "bitbucket",
                "bitbucket-repository",
            ],
            BlockType::Smb => &[],
            BlockType::RemoteFileSystem => &["rfs"],
            BlockType::Oci => &["docker-registry"],
        }
    }

    /// Parses a canonical type name or an alias.
    pub fn parse(s: &str) -> Result<Self> {
        BlockType::ALL
            .into_iter()
            .find(|t| t.as_str() == s || t.aliases().contains(&s))
            .ok_or_else(|| {
                let known: Vec<&str> = BlockType::ALL.iter().map(|t| t.as_str()).collect();
                Error::Usage(format!(
                    "unknown block type `{s}` (known: {})",
                    known.join(", ")
                ))
            })
    }
}

impl fmt::Display for BlockType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A block name: `^[a-z0-9][a-z0-9-]*$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockName(String);

impl BlockName {
    /// Validates a name, so that it is safe as a TOML key and in messages.
    pub fn parse(s: &str) -> Result<Self> {
        let mut chars = s.chars();
        let valid = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.len() <= 63;
        if valid {
            Ok(BlockName(s.to_string()))
        } else {
            Err(Error::Usage(format!(
                "invalid block name `{}`: use lowercase letters, digits and '-', starting with a letter or digit (at most 63)",
                s.escape_debug()
            )))
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `type/name`: which block document to use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId {
    /// The block's type, which picks the backend.
    pub block_type: BlockType,
    /// The block's name within its type.
    pub name: BlockName,
}

impl BlockId {
    /// The id of block `name` of type `block_type`, the name validated.
    pub fn new(block_type: BlockType, name: &str) -> Result<Self> {
        Ok(BlockId {
            block_type,
            name: BlockName::parse(name)?,
        })
    }

    /// Parses `type/name`, nothing more.
    pub fn parse(s: &str) -> Result<Self> {
        let slug = BlockSlug::parse(s)?;
        if !slug.path.is_root() {
            return Err(Error::Usage(format!(
                "`{s}` names a path; expected just TYPE/NAME"
            )));
        }
        Ok(slug.block)
    }

    /// The embedded default block, `local/default`.
    pub fn local_default() -> Self {
        BlockId {
            block_type: BlockType::Local,
            name: BlockName("default".into()),
        }
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.block_type, self.name.0)
    }
}

/// A normalized path inside a block's storage root: `/`-separated, no empty, `.` or `..`
/// segments, no NUL or control characters. The empty path is the root itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockPath(String);

impl BlockPath {
    /// The block's storage root itself.
    pub fn root() -> Self {
        BlockPath(String::new())
    }

    /// Parses and normalizes (`a//b/` → `a/b`); rejects absolute paths, `.`, `..` and NUL.
    pub fn parse(s: &str) -> Result<Self> {
        if s.starts_with('/') {
            return Err(Error::Usage(format!(
                "path `{}` is absolute; paths are relative to the block's root",
                s.escape_debug()
            )));
        }
        let mut parts = Vec::new();
        for seg in s.split('/').filter(|seg| !seg.is_empty()) {
            check_segment(seg).map_err(|why| {
                Error::Usage(format!("path `{}` is not allowed: {why}", s.escape_debug()))
            })?;
            parts.push(seg);
        }
        Ok(BlockPath(parts.join("/")))
    }

    /// Like `parse`, but the path must name something (not the root).
    pub fn parse_non_empty(s: &str) -> Result<Self> {
        let p = BlockPath::parse(s)?;
        if p.is_root() {
            return Err(Error::Usage("path is empty".into()));
        }
        Ok(p)
    }

    /// Whether this is the storage root (the empty path).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The normalized path, `/`-separated, empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This path followed by a relative path (itself already checked).
    pub fn join(&self, rel: &str) -> String {
        match (self.0.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (_, true) => self.0.clone(),
            _ => format!("{}/{rel}", self.0),
        }
    }

    /// Proper ancestors, nearest first, ending with the root.
    pub fn ancestors(&self) -> Vec<BlockPath> {
        let mut out = Vec::new();
        let mut cur = self.0.as_str();
        while !cur.is_empty() {
            cur = cur.rsplit_once('/').map(|(head, _)| head).unwrap_or("");
            out.push(BlockPath(cur.to_string()));
        }
        out
    }

    /// The rest of this path below `ancestor`, if it is one.
    pub fn strip_prefix(&self, ancestor: &BlockPath) -> Option<&str> {
        if ancestor.is_root() {
            return Some(&self.0);
        }
        let rest = self.0.strip_prefix(&ancestor.0)?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix('/')
        }
    }
}

impl fmt::Display for BlockPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why one `/`-free segment of a path is not allowed, if it is not.
pub(crate) fn check_segment(seg: &str) -> std::result::Result<(), &'static str> {
    if seg.is_empty() {
        return Err("empty segment");
    }
    if seg == "." || seg == ".." {
        return Err("`.` and `..` segments are not allowed");
    }
    if seg.contains('\0') {
        return Err("NUL is not allowed");
    }
    if seg.chars().any(|c| c.is_control()) {
        return Err("control characters are not allowed");
    }
    if seg.len() > 255 {
        return Err("a segment is longer than 255 bytes");
    }
    Ok(())
}

/// [`check_segment`], and also no name a Windows agent would read as a path: no backslash,
/// no drive prefix (`C:`). What a package holds must unpack safely on every platform.
pub(crate) fn check_portable_segment(seg: &str) -> std::result::Result<(), &'static str> {
    check_segment(seg)?;
    if seg.contains('\\') {
        return Err("a backslash is a path separator on Windows");
    }
    let b = seg.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err("a drive prefix (`C:`) makes it a path on Windows");
    }
    Ok(())
}

/// `type/name[/path]`: a block and a path inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockSlug {
    /// The block document to use.
    pub block: BlockId,
    /// Where inside the block's storage; the root when the slug has no path.
    pub path: BlockPath,
}

impl BlockSlug {
    /// Parses `type/name[/path]`; the type may be an alias, the path is normalized.
    ///
    /// ```
    /// use storage_core::{BlockSlug, BlockType};
    /// let slug = BlockSlug::parse("s3-bucket/prod-flows/etl//daily/")?;
    /// assert_eq!(slug.block.block_type, BlockType::S3);
    /// assert_eq!(slug.block.to_string(), "s3/prod-flows");
    /// assert_eq!(slug.path.as_str(), "etl/daily");
    /// assert!(BlockSlug::parse("s3/prod-flows/../etc").is_err());
    /// # Ok::<(), storage_core::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: String| Error::Usage(format!("bad slug `{}`: {why}", s.escape_debug()));
        let mut it = s.splitn(3, '/');
        let ty = it.next().unwrap_or_default();
        let name = it
            .next()
            .ok_or_else(|| bad("expected TYPE/NAME[/PATH]".into()))?;
        if ty.is_empty() {
            return Err(bad("the block type is empty".into()));
        }
        let block_type = BlockType::parse(ty).map_err(|e| bad(e.to_string()))?;
        let name = BlockName::parse(name).map_err(|e| bad(e.to_string()))?;
        let path = match it.next() {
            Some(p) => BlockPath::parse(p).map_err(|e| bad(e.to_string()))?,
            None => BlockPath::root(),
        };
        Ok(BlockSlug {
            block: BlockId { block_type, name },
            path,
        })
    }
}

impl fmt::Display for BlockSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            write!(f, "{}", self.block)
        } else {
            write!(f, "{}/{}", self.block, self.path)
        }
    }
}

impl std::str::FromStr for BlockSlug {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        BlockSlug::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_name_and_path() {
        let s = BlockSlug::parse("s3/prod-flows/etl/daily").unwrap();
        assert_eq!(s.block.block_type, BlockType::S3);
        assert_eq!(s.block.name.as_str(), "prod-flows");
        assert_eq!(s.path.as_str(), "etl/daily");
        assert_eq!(s.to_string(), "s3/prod-flows/etl/daily");
    }

    #[test]
    fn aliases_parse_to_canonical_types() {
        assert_eq!(
            BlockSlug::parse("s3-bucket/x").unwrap().block.block_type,
            BlockType::S3
        );
        assert_eq!(
            BlockSlug::parse("github/repo").unwrap().block.block_type,
            BlockType::Git
        );
        assert_eq!(
            BlockSlug::parse("local-file-system/x")
                .unwrap()
                .block
                .to_string(),
            "local/x"
        );
    }

    #[test]
    fn prefect_block_type_slugs_are_aliases() {
        for (alias, canonical) in [
            ("github-repository", BlockType::Git),
            ("gitlab-repository", BlockType::Git),
            ("bitbucket-repository", BlockType::Git),
            ("remote-file-system", BlockType::RemoteFileSystem),
            ("rfs", BlockType::RemoteFileSystem),
            ("oci", BlockType::Oci),
            ("docker-registry", BlockType::Oci),
        ] {
            let slug = BlockSlug::parse(&format!("{alias}/flows/etl")).unwrap();
            assert_eq!(slug.block.block_type, canonical, "{alias}");
            assert_eq!(slug.path.as_str(), "etl");
        }
        assert_eq!(
            BlockSlug::parse("rfs/nas").unwrap().to_string(),
            "remote-file-system/nas"
        );
    }

    #[test]
    fn path_is_normalized() {
        assert_eq!(
            BlockSlug::parse("local/x/a//b/").unwrap().path.as_str(),
            "a/b"
        );
        assert!(BlockSlug::parse("local/x/").unwrap().path.is_root());
    }

    #[test]
    fn rejects_bad_slugs_as_usage_errors() {
        for bad in [
            "",
            "s3",
            "/s3/x",
            "nope/x",
            "s3/Upper",
            "s3/-lead",
            "s3/a_b",
            "s3/x/../etc",
            "s3/x/a/./b",
            "s3/x//abs",
            "s3/x/a\0b",
            "s3/x/a\nb",
        ] {
            let err = BlockSlug::parse(bad).expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(err.to_string().contains("bad slug"), "{err}");
        }
    }

    #[test]
    fn ancestors_end_at_root() {
        let p = BlockPath::parse("a/b/c").unwrap();
        let a: Vec<String> = p.ancestors().iter().map(|p| p.to_string()).collect();
        assert_eq!(a, ["a/b", "a", ""]);
        assert_eq!(p.strip_prefix(&BlockPath::parse("a").unwrap()), Some("b/c"));
        assert_eq!(p.strip_prefix(&BlockPath::parse("ab").unwrap()), None);
    }
}
