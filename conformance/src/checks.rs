//! Checks the backend tests share: an operation that must end in bounded time, a failure
//! that must be clean, and the moment a put starts uploading (when a racing writer moves).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use storage_core::ProgressEvent;

/// How long an operation under faults may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(90);

/// Runs `op`, which must end within [`BOUND`]; returns its output and how long it took.
pub async fn within_bound<T>(what: &str, op: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(BOUND, op).await {
        Ok(v) => (v, started.elapsed()),
        Err(_) => panic!("{what} did not end within {} s", BOUND.as_secs()),
    }
}

/// Whether `event` is a put's "uploading" phase seen first: true once, after which `fired`
/// is set. What an observer waits for that acts once, as the upload starts.
pub fn first_upload_phase(event: &ProgressEvent, fired: &AtomicBool) -> bool {
    matches!(
        event,
        ProgressEvent::Phase {
            name: "uploading",
            ..
        }
    ) && !fired.swap(true, Ordering::SeqCst)
}

/// A failure under faults must be clean: a transport failure (exit 1), one line, naming the
/// block (`label`).
pub fn assert_clean_failure(label: &str, what: &str, err: &storage_core::Error) {
    let text = err.to_string();
    eprintln!("{what}: exit {}: {text}", err.exit_code());
    assert_eq!(err.exit_code(), 1, "{what}: wrong exit code for: {text}");
    assert!(!text.contains('\n'), "{what}: not one line: {text:?}");
    assert!(
        text.starts_with(label),
        "{what}: does not name {label}: {text}"
    );
}
