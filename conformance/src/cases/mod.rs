//! The cases, one module per behavior. Each asserts what a user would observe: the files in the destination, the
//! version listed, the error's exit code, and that nothing was written where it must not be.

use std::fs;
use std::path::Path;

use storage_core::{
    BlockSlug, DeleteOptions, EntryKind, Error, GcOptions, GetMode, GetOptions, Layout, PutOptions,
    PutReport, Result, VersionPrecondition,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use storage_core::{BlockPath, ProgressEvent, ProgressObserver, StorageBlock};

use crate::Subject;
use crate::checks::first_upload_phase;
use crate::hostile::{
    RawEntry, file_record, header, plant_entries, plant_package, read, symlink_record, tar_bytes,
    tar_entries, write, zstd_skippable, zstd_zeros,
};
use crate::tree::{
    files_only, small_tree, snapshot, tricky_tree, without_empty_dirs, write as write_file,
};

mod archives;
mod concurrency;
mod files_layout;
mod get_modes;
mod integrity;
mod names;
mod round_trip;
mod signed;
mod versions;

pub use archives::*;
pub use concurrency::*;
pub use files_layout::*;
pub use get_modes::*;
pub use integrity::*;
pub use names::*;
pub use round_trip::*;
pub use signed::*;
pub use versions::*;

fn code<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.exit_code(),
    }
}

pub(crate) async fn put(s: &Subject, src: &Path, at: &str) -> PutReport {
    s.block
        .put_directory(src, &s.path(at), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put to {at}: {e}"))
}

fn get_opts(mode: GetMode) -> GetOptions {
    GetOptions {
        mode,
        ..GetOptions::default()
    }
}

/// No staging folder may be left beside a destination after a failed get.
fn assert_no_leftovers_beside(dest: &Path) {
    let parent = dest.parent().unwrap();
    for e in fs::read_dir(parent).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".blockctl-"),
            "staging folder {name} left beside {}",
            dest.display()
        );
    }
}

/// Whether packages can be tampered with object by object: a package layout whose objects
/// `write_path` reaches (not a native tree, not a registry's digest-addressed blobs).
fn tamperable(s: &Subject) -> bool {
    let caps = s.block.capabilities();
    caps.package_layout && caps.raw_objects
}

/// What a backend without raw package objects (no package layout, or blobs a registry keeps
/// under their digests) declares instead of the cases that tamper with packages: writing one
/// is refused as unsupported, and what was put reads back unchanged. Such a backend's own
/// tests damage its storage directly.
pub(crate) async fn assert_no_raw_objects(s: &Subject, at: &str) {
    let src = s.fresh_dir("src");
    small_tree(&src, at);
    let v = put(s, &src, at).await.version.unwrap();
    for rel in [
        format!(".blocks/packages/{v}.tar.zst"),
        format!(".blocks/manifests/{v}.json"),
        ".blocks/HEAD".to_string(),
    ] {
        let path = BlockPath::parse(&s.path(at).join(&rel)).unwrap();
        let r = s
            .block
            .write_path(&path, b"{not json".to_vec().into())
            .await;
        assert_eq!(
            code(r),
            2,
            "{rel}: a backend without the package layout must refuse raw writes"
        );
    }
    let dest = s.fresh_dir("dest");
    s.block
        .get_directory(&s.path(at), &dest, &GetOptions::default())
        .await
        .expect("get after the refused writes");
    assert_eq!(snapshot(&dest), snapshot(&src));
}

/// A get of `at` that must fail with exit `want` and write nothing: DEST not created, no
/// staging left, a `--merge` folder unchanged. Returns the one-line message.
async fn refused_cleanly(s: &Subject, at: &str, want: i32) -> String {
    let dest = s.fresh_dir("dest");
    let started = std::time::Instant::now();
    let err = s
        .block
        .get_directory(&s.path(at), &dest, &GetOptions::default())
        .await
        .expect_err(&format!("{at}: the get succeeded"));
    let took = started.elapsed();
    let msg = err.to_string();
    assert_eq!(err.exit_code(), want, "{at}: {msg}");
    assert!(!msg.contains('\n'), "{at}: not one line: {msg}");
    assert!(msg.len() < 600, "{at}: a message of {} bytes", msg.len());
    assert!(
        took < std::time::Duration::from_secs(60),
        "{at}: refused only after {took:?}"
    );
    assert!(
        !dest.exists(),
        "{at}: a refused get created its destination"
    );
    assert_no_leftovers_beside(&dest);
    let keep = s.fresh_dir("keep");
    write_file(&keep, "mine.txt", "mine");
    let before = snapshot(&keep);
    let r = s
        .block
        .get_directory(&s.path(at), &keep, &get_opts(GetMode::Merge))
        .await;
    assert_eq!(code(r), want, "{at}: --merge");
    assert_eq!(
        snapshot(&keep),
        before,
        "{at}: a refused --merge touched DEST"
    );
    msg
}

/// A progress observer that, when the upload phase starts (after the put has read HEAD),
/// moves the current version itself from another thread, as a concurrent writer would.
struct Interloper {
    block: Arc<dyn StorageBlock>,
    action: Move,
    fired: AtomicBool,
    /// The version the other writer's put stored.
    stored: std::sync::Mutex<Option<String>>,
}

/// How the other writer moves the current version.
enum Move {
    /// Writes HEAD as it is (package layout).
    WriteHead { head: BlockPath, body: Vec<u8> },
    /// Puts another tree (native trees, which have no HEAD object).
    Put {
        src: std::path::PathBuf,
        at: BlockPath,
    },
}

impl Interloper {
    fn new(block: Arc<dyn StorageBlock>, action: Move) -> Self {
        Interloper {
            block,
            action,
            fired: AtomicBool::new(false),
            stored: std::sync::Mutex::new(None),
        }
    }
}

impl ProgressObserver for Interloper {
    fn event(&self, event: ProgressEvent) {
        if !first_upload_phase(&event, &self.fired) {
            return;
        }
        let block = self.block.clone();
        let stored = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    match &self.action {
                        Move::WriteHead { head, body } => {
                            rt.block_on(block.write_path(head, body.clone().into()))
                                .expect("interloper write");
                            None
                        }
                        Move::Put { src, at } => {
                            rt.block_on(block.put_directory(src, at, &PutOptions::default()))
                                .expect("interloper put")
                                .version
                        }
                    }
                })
                .join()
                .expect("interloper thread")
        });
        *self.stored.lock().unwrap() = stored;
    }
}
