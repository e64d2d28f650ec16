//! The conformance suite against the local backend, one fresh base folder per case.

use std::sync::Arc;

use conformance::{Subject, conformance_suite};
use storage_local::{LocalConfig, open};

async fn local_subject(case: &str) -> Subject {
    let base = tempfile::tempdir().expect("base dir");
    let config = LocalConfig {
        basepath: base.path().to_string_lossy().into_owned(),
    };
    let block = open(&config, "local/conformance").expect("open local block");
    Subject::new(Arc::new(block), case).with_guard(Arc::new(base))
}

conformance_suite!(local_subject);

/// Local has no wire to count on: a store that counts the requests the block makes of it,
/// and the bytes of what it reads.
mod counted {
    use std::collections::BTreeMap;
    use std::fmt;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;
    use conformance::tree::{Node, snapshot};
    use futures::stream::BoxStream;
    use object_store::path::Path as ObjPath;
    use object_store::{
        CopyOptions, GetOptions as StoreGet, GetResult, ListResult, MultipartUpload, ObjectMeta,
        ObjectStore, PutMultipartOptions, PutOptions as StorePut, PutPayload, PutResult,
    };
    use storage_core::{
        BlockPath, GetMode, GetOptions, GetReport, ObjectStoreBlock, PutOptions, StorageBlock,
    };
    use storage_local::{CAPABILITIES, LockedLocalStore};

    #[derive(Debug, Default)]
    struct Counts {
        requests: AtomicU64,
        bytes: AtomicU64,
    }

    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn ObjectStore>,
        counts: Arc<Counts>,
    }

    impl Counting {
        fn count(&self) {
            self.counts.requests.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl fmt::Display for Counting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Counting({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &ObjPath,
            payload: PutPayload,
            opts: StorePut,
        ) -> object_store::Result<PutResult> {
            self.count();
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &ObjPath,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.count();
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &ObjPath,
            options: StoreGet,
        ) -> object_store::Result<GetResult> {
            self.count();
            let got = self.inner.get_opts(location, options).await;
            if let Ok(g) = &got {
                let n = g.range.end - g.range.start;
                self.counts.bytes.fetch_add(n, Ordering::SeqCst);
            }
            got
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<ObjPath>>,
        ) -> BoxStream<'static, object_store::Result<ObjPath>> {
            self.count();
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&ObjPath>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.count();
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&ObjPath>,
        ) -> object_store::Result<ListResult> {
            self.count();
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &ObjPath,
            to: &ObjPath,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.count();
            self.inner.copy_opts(from, to, options).await
        }
    }

    struct Rig {
        block: ObjectStoreBlock,
        counts: Arc<Counts>,
        at: BlockPath,
        scratch: tempfile::TempDir,
        src: std::path::PathBuf,
    }

    impl Rig {
        async fn new() -> Rig {
            let scratch = tempfile::tempdir().unwrap();
            let base = scratch.path().join("store");
            std::fs::create_dir_all(&base).unwrap();
            let counts = Arc::new(Counts::default());
            let store = Counting {
                inner: Arc::new(LockedLocalStore::new(&base).unwrap()),
                counts: counts.clone(),
            };
            let block = ObjectStoreBlock::new(Arc::new(store), "", "local/counted", CAPABILITIES);
            let src = scratch.path().join("src");
            conformance::delta::project(&src);
            let at = BlockPath::parse("etl").unwrap();
            block
                .put_directory(&src, &at, &PutOptions::default())
                .await
                .unwrap();
            Rig {
                block,
                counts,
                at,
                scratch,
                src,
            }
        }

        /// A get: the requests it made, the bytes it read, its report.
        async fn get(
            &self,
            dest: &str,
            opts: &GetOptions,
        ) -> storage_core::Result<(u64, u64, GetReport)> {
            let (r, b) = (self.requests(), self.counts.bytes.load(Ordering::SeqCst));
            let report = self
                .block
                .get_directory(&self.at, &self.scratch.path().join(dest), opts)
                .await?;
            let bytes = self.counts.bytes.load(Ordering::SeqCst) - b;
            Ok((self.requests() - r, bytes, report))
        }

        fn requests(&self) -> u64 {
            self.counts.requests.load(Ordering::SeqCst)
        }

        fn dest(&self, name: &str) -> std::path::PathBuf {
            self.scratch.path().join(name)
        }
    }

    fn inodes(root: &Path) -> BTreeMap<String, u64> {
        use std::os::unix::fs::MetadataExt;
        snapshot(root)
            .into_iter()
            .filter(|(_, n)| matches!(n, Node::File { .. }))
            .map(|(rel, _)| {
                (
                    rel.clone(),
                    std::fs::metadata(root.join(rel)).unwrap().ino(),
                )
            })
            .collect()
    }

    /// A get whose manifest and frames are cached asks for HEAD only, one naming the
    /// version in full asks nothing, and a `--replace` of the version held writes no file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn warm_gets_ask_only_for_head() {
        let rig = Rig::new().await;
        let warm = GetOptions {
            cache_dir: Some(rig.scratch.path().join("cache")),
            ..GetOptions::default()
        };
        let (cold, _, report) = rig.get("cold", &warm).await.unwrap();
        assert!(report.frames_downloaded > 0, "{report:?}");
        let (requests, bytes, report) = rig.get("warm", &warm).await.unwrap();
        eprintln!("local: cold get {cold} requests; warm get {requests} requests, {bytes} bytes");
        assert_eq!(snapshot(&rig.dest("warm")), snapshot(&rig.src));
        assert_eq!((requests, report.frames_downloaded), (1, 0), "{report:?}");

        let pinned = GetOptions {
            version: report.version.clone(),
            ..warm.clone()
        };
        let (requests, _, _) = rig.get("pinned", &pinned).await.unwrap();
        eprintln!("local: warm get --version <id>: {requests} requests");
        assert_eq!(snapshot(&rig.dest("pinned")), snapshot(&rig.src));
        assert_eq!(requests, 0);

        let before = inodes(&rig.dest("warm"));
        let replace = GetOptions {
            mode: GetMode::Replace,
            ..warm.clone()
        };
        let (requests, _, report) = rig.get("warm", &replace).await.unwrap();
        eprintln!("local: get --replace of the version held: {requests} requests, {report:?}");
        assert_eq!(snapshot(&rig.dest("warm")), snapshot(&rig.src));
        assert_eq!(report.files_linked, report.files, "{report:?}");
        assert_eq!(
            inodes(&rig.dest("warm")),
            before,
            "a file was written again"
        );

        let no_cache = GetOptions {
            no_cache: true,
            ..warm.clone()
        };
        let (requests, _, report) = rig.get("uncached", &no_cache).await.unwrap();
        assert!(
            requests >= 2 && report.frames_cached == 0,
            "{requests}: {report:?}"
        );
    }

    /// `--only` a sub-folder reads only its frames; a glob matching nothing is exit 3.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_sub_folder_reads_only_its_frames() {
        let rig = Rig::new().await;
        let uncached = GetOptions {
            no_cache: true,
            ..GetOptions::default()
        };
        let (_, whole, _) = rig.get("whole", &uncached).await.unwrap();
        let only = |globs: &[&str]| GetOptions {
            only: globs.iter().map(|g| g.to_string()).collect(),
            ..uncached.clone()
        };
        let (requests, part, report) = rig
            .get("part", &only(&["flows/pkg3/**", "flows/pkg5/mod_0*.py"]))
            .await
            .unwrap();
        eprintln!(
            "local: whole get {whole} bytes; --only {requests} requests, {part} bytes, {report:?}"
        );
        let expected: BTreeMap<String, Node> = snapshot(&rig.src)
            .into_iter()
            .filter(|(k, _)| {
                ["flows", "flows/pkg3", "flows/pkg5"].contains(&k.as_str())
                    || k.starts_with("flows/pkg3/")
                    || (k.starts_with("flows/pkg5/mod_0") && !k[16..].contains('/'))
            })
            .collect();
        assert_eq!(snapshot(&rig.dest("part")), expected);
        assert!(part * 4 < whole, "--only read {part} bytes of {whole}");

        let err = rig.get("none", &only(&["nothing/**"])).await.unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err}");
        assert!(err.to_string().starts_with("local/counted/etl: "), "{err}");
        assert!(!rig.dest("none").exists());
        let leftovers = std::fs::read_dir(rig.scratch.path()).unwrap().count();
        assert_eq!(leftovers, 4, "store, src, whole, part and nothing else");
    }
}
