//! The one place where a block's declared capabilities are enforced: [`Checked`] wraps any
//! [`StorageBlock`] and refuses an operation the capabilities say the backend cannot do
//! (exit 2, one line naming the slug and the operation) before the backend is asked. The
//! facade wraps every block it opens, so backends implement what they can and never write a
//! refusal of their own.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::block::{
    Capabilities, DeleteOptions, GcOptions, GcReport, GetOptions, GetReport, Layout, ListedFile,
    PackageExport, PutOptions, PutReport, RollbackOptions, RollbackReport, StorageBlock,
    VersionInfo, slug_of,
};
use crate::package::manifest::PackageManifest;
use crate::{BlockPath, Error, Result};

/// A block whose capabilities are checked before every operation.
pub struct Checked {
    inner: Arc<dyn StorageBlock>,
}

impl Checked {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn StorageBlock>) -> Arc<dyn StorageBlock> {
        Arc::new(Checked { inner })
    }

    fn caps(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn refuse<T>(&self, at: &BlockPath, op: &str, why: &str) -> Result<T> {
        let slug = slug_of(self.inner.label(), at);
        Err(Error::Unsupported(format!("{slug}: {op}: {why}")))
    }

    fn writable(&self, at: &BlockPath, op: &str) -> Result<()> {
        if self.caps().read_only {
            return self.refuse(at, op, "this block is read-only");
        }
        Ok(())
    }
}

/// What a put asks of the store, checked against what it declares. A native-tree store
/// (git) has one layout of its own, which the default `package` stands for.
fn put_layout(caps: Capabilities, asked: Layout) -> std::result::Result<Layout, &'static str> {
    match asked {
        Layout::Package | Layout::Tree if caps.native_tree => Ok(Layout::Tree),
        Layout::Files if caps.native_tree => Err(
            "this backend stores a tree as its own commit and has no files layout (leave out --layout files)",
        ),
        Layout::Package if caps.package_layout => Ok(Layout::Package),
        Layout::Files if caps.files_layout => Ok(Layout::Files),
        Layout::Package => Err("this backend has no package layout"),
        Layout::Files => Err("this backend has no files layout"),
        Layout::Tree => Err("this backend stores packages or files, not native trees"),
    }
}

#[async_trait]
impl StorageBlock for Checked {
    fn capabilities(&self) -> Capabilities {
        self.caps()
    }

    fn set_trust(&self, trust: crate::config::Trust) -> Result<()> {
        self.inner.set_trust(trust)
    }

    fn label(&self) -> &str {
        self.inner.label()
    }

    async fn put_directory(
        &self,
        src: &Path,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        self.writable(to, "put")?;
        let caps = self.caps();
        let layout = match put_layout(caps, opts.layout) {
            Ok(layout) => layout,
            Err(why) => return self.refuse(to, "put", why),
        };
        if opts.if_version.is_some() && !caps.compare_and_swap {
            return self.refuse(
                to,
                "put --if-version",
                "this backend cannot swap versions conditionally",
            );
        }
        if layout == opts.layout {
            return self.inner.put_directory(src, to, opts).await;
        }
        let opts = PutOptions {
            layout,
            ..opts.clone()
        };
        self.inner.put_directory(src, to, &opts).await
    }

    async fn get_directory(
        &self,
        from: &BlockPath,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        self.inner.get_directory(from, dest, opts).await
    }

    async fn read_path(&self, path: &BlockPath) -> Result<Bytes> {
        self.inner.read_path(path).await
    }

    async fn write_path(&self, path: &BlockPath, data: Bytes) -> Result<()> {
        self.writable(path, "write")?;
        if self.caps().native_tree {
            return self.refuse(
                path,
                "write",
                "this backend stores trees as commits and has no raw objects to write; put a folder instead",
            );
        }
        if !self.caps().raw_objects {
            return self.refuse(
                path,
                "write",
                "this backend keeps blobs under their digests, not objects by name; put a folder instead",
            );
        }
        self.inner.write_path(path, data).await
    }

    async fn list_versions(&self, at: &BlockPath) -> Result<Vec<VersionInfo>> {
        self.inner.list_versions(at).await
    }

    async fn list_files(&self, at: &BlockPath) -> Result<Vec<ListedFile>> {
        self.inner.list_files(at).await
    }

    async fn delete(&self, at: &BlockPath, opts: &DeleteOptions) -> Result<()> {
        self.writable(at, "rm")?;
        if opts.version.is_some() && !self.caps().gc {
            return self.refuse(
                at,
                "rm --version",
                "this backend cannot drop one version (rm without --version removes the path)",
            );
        }
        self.inner.delete(at, opts).await
    }

    async fn gc(&self, at: &BlockPath, opts: &GcOptions) -> Result<GcReport> {
        self.writable(at, "gc")?;
        if !self.caps().gc {
            return self.refuse(at, "gc", "this backend cannot drop versions");
        }
        self.inner.gc(at, opts).await
    }

    async fn manifest(&self, at: &BlockPath, version: Option<&str>) -> Result<PackageManifest> {
        if !self.caps().package_layout {
            return self.refuse(at, "manifest", "this backend keeps no package manifests");
        }
        self.inner.manifest(at, version).await
    }

    async fn rollback(&self, at: &BlockPath, opts: &RollbackOptions) -> Result<RollbackReport> {
        self.writable(at, "rollback")?;
        if !self.caps().versions {
            return self.refuse(
                at,
                "rollback",
                "this backend stores no versions to roll back to",
            );
        }
        self.inner.rollback(at, opts).await
    }

    async fn export(&self, at: &BlockPath, version: Option<&str>) -> Result<PackageExport> {
        if !self.caps().package_layout {
            return self.refuse(at, "export", "this backend stores no packages to export");
        }
        self.inner.export(at, version).await
    }

    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIT: Capabilities = Capabilities {
        package_layout: false,
        files_layout: false,
        native_tree: true,
        ..Capabilities::OBJECT_STORE
    };

    #[test]
    fn put_layouts_follow_the_capabilities() {
        let object = Capabilities::OBJECT_STORE;
        assert_eq!(put_layout(object, Layout::Package), Ok(Layout::Package));
        assert_eq!(put_layout(object, Layout::Files), Ok(Layout::Files));
        assert!(put_layout(object, Layout::Tree).is_err());
        assert_eq!(put_layout(GIT, Layout::Package), Ok(Layout::Tree));
        assert_eq!(put_layout(GIT, Layout::Tree), Ok(Layout::Tree));
        assert!(put_layout(GIT, Layout::Files).is_err());
        let no_files = Capabilities {
            files_layout: false,
            ..object
        };
        assert!(put_layout(no_files, Layout::Files).is_err());
    }
}
