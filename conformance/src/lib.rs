//! The conformance suite: one async function per behavior, each taking the block under test.
//! Every backend's tests expand [`conformance_suite!`] with a function that makes a fresh
//! [`Subject`]; what a backend cannot do is read from its capabilities, and the suite then
//! checks that the operation is refused as unsupported, never skipped.

pub mod attacker;
pub mod cases;
pub mod checks;
pub mod delta;
pub mod harness;
pub mod hostile;
pub mod remote_checks;
pub mod run_once;
pub mod tree;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use storage_core::{BlockPath, StorageBlock};
use tempfile::TempDir;

/// This process's own cache folder, `<tmp>/blockctl-suite/<pid>`: kept while the process
/// runs (it holds a lock on `<pid>.lock` until it ends, however it ends) and removed by the
/// first suite process after it, so that test runs leave at most one run's caches behind.
fn process_cache_dir() -> &'static Path {
    static OWN: OnceLock<(PathBuf, File)> = OnceLock::new();
    let (dir, _held) = OWN.get_or_init(|| {
        let root = std::env::temp_dir().join("blockctl-suite");
        std::fs::create_dir_all(&root).expect("suite cache root");
        remove_ended(&root);
        let pid = std::process::id();
        let lock = File::create(root.join(format!("{pid}.lock"))).expect("suite cache lock");
        lock.lock().expect("lock the suite cache");
        (root.join(pid.to_string()), lock)
    });
    dir
}

/// Removes the caches of suite processes that have ended: those whose lock is free.
fn remove_ended(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "lock") {
            continue;
        }
        let Ok(lock) = File::open(&path) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            let _ = std::fs::remove_dir_all(path.with_extension(""));
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A block under test, a unique path inside it for this case, and a scratch folder.
pub struct Subject {
    pub block: Arc<dyn StorageBlock>,
    base: String,
    scratch: TempDir,
    counter: AtomicU32,
    /// Keeps what the block needs alive (an emulator) for as long as the case runs.
    _guard: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// How the tamper cases plant what they plant where the block takes no raw objects.
    pub attacker: Option<Arc<dyn attacker::Attacker>>,
}

impl Subject {
    /// `base` is a path inside the block that no other case uses.
    pub fn new(block: Arc<dyn StorageBlock>, base: &str) -> Self {
        // The suite's gets keep their frames, hash caches and frame ledgers apart from the
        // user's own cache.
        let own = process_cache_dir();
        storage_core::package::frame_cache::set_process_default(own.join("frames"));
        storage_core::hashcache::set_process_cache_dir(own.join("cache"));
        Subject {
            // The suite tests blocks as the facade hands them out: capabilities enforced.
            block: storage_core::Checked::wrap(block),
            base: base.to_string(),
            scratch: tempfile::tempdir().expect("scratch dir"),
            counter: AtomicU32::new(0),
            _guard: None,
            attacker: None,
        }
    }

    /// Tampers through `attacker` where the block takes no raw objects (a registry).
    pub fn with_attacker(mut self, attacker: Arc<dyn attacker::Attacker>) -> Self {
        self.attacker = Some(attacker);
        self
    }

    /// Holds `guard` (e.g. the emulator serving the block) until the case ends.
    pub fn with_guard<T: Send + Sync + 'static>(mut self, guard: Arc<T>) -> Self {
        self._guard = Some(guard);
        self
    }

    /// A path inside this case's area of the block.
    pub fn path(&self, rel: &str) -> BlockPath {
        BlockPath::parse(&format!("{}/{rel}", self.base)).expect("valid test path")
    }

    /// A fresh, not yet existing, folder in scratch space.
    pub fn fresh_dir(&self, hint: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.scratch.path().join(format!("{hint}-{n}"))
    }
}

/// A bucket or container name for a case: its name with `-` for `_`, at most 63 characters
/// (the rule S3, GCS and Azure share).
pub fn bucket_name(case: &str) -> String {
    let name: String = case.replace('_', "-").chars().take(63).collect();
    name.trim_end_matches('-').to_string()
}

/// Expands to one `#[tokio::test]` per conformance case, each calling `$make` (an async fn
/// returning a [`Subject`]) for a fresh subject.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@cases $make,
            round_trip_keeps_a_tricky_tree_exactly,
            unchanged_reput_uploads_nothing,
            versions_are_listed_newest_first_and_old_ones_can_be_read,
            get_refuses_a_non_empty_destination,
            get_replace_makes_the_destination_exactly_the_version,
            get_merge_overwrites_and_keeps_other_files,
            sub_paths_are_independent_and_a_package_folder_can_be_pulled,
            files_layout_is_a_plain_mirror_or_declared_unsupported,
            files_layout_reput_skips_what_is_uploaded_and_restores_what_changed,
            ignore_rules_leave_files_out,
            bad_slugs_are_usage_errors,
            missing_paths_are_not_found_and_create_nothing,
            corrupted_package_is_refused_and_nothing_is_written,
            truncated_package_is_refused_and_nothing_is_written,
            tampered_manifest_is_refused,
            head_pointing_at_a_missing_version_is_refused,
            hostile_archives_are_refused_with_nothing_written,
            zstd_bombs_and_huge_sizes_are_refused_early_with_nothing_written,
            versions_larger_than_the_free_space_are_refused_before_unpacking,
            long_names_round_trip_and_overlong_ones_are_refused,
            names_that_differ_by_case_or_normalization_stay_distinct,
            if_version_is_a_compare_and_swap_or_declared_unsupported,
            cat_reads_one_file_of_the_current_version,
            rm_and_gc_drop_versions_but_never_the_current_one,
            concurrent_puts_leave_a_whole_current_version,
            racing_puts_of_different_trees_and_gets_see_only_whole_versions,
            signed_versions_refuse_every_attack_and_roll_back,
        );
        $crate::conformance_suite!(@delta $make,
            frames_are_shared_between_versions_and_only_new_ones_are_sent,
            a_missing_frame_is_refused_with_nothing_written,
            a_version_whose_frames_are_cached_is_pulled_without_frame_downloads,
            gc_racing_puts_never_breaks_a_listed_version,
            export_is_an_ordinary_tar_zst_of_the_version,
            diff_lists_changes_and_the_bytes_a_pull_moves,
            format_1_versions_written_by_the_previous_release_still_read,
            format_2_versions_written_by_the_previous_release_still_read,
        );
    };
    (@cases $make:path, $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let subject = $make(stringify!($case)).await;
                $crate::cases::$case(&subject).await;
            }
        )*
    };
    (@delta $make:path, $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let subject = $make(stringify!($case)).await;
                $crate::delta::$case(&subject).await;
            }
        )*
    };
}
