//! Every retry policy of the blocks, in one place: how many tries an operation gets and the
//! pauses between them, named after what they are for, and the one way to run an operation
//! under a policy ([`RetryPolicy::run`], [`RetryPolicy::run_blocking`]). Whether a failure is
//! worth another try is the caller's classifier, which looks at a typed error (an [`Error`]'s
//! kind and [`Error::is_temporary`], a status, a client's error kind), never at message text.
//!
//! The pauses come from backon's exponential backoff. [`RetryPolicy::most_paused`] is the
//! longest the pauses of one operation can add up to, which the documented bounds on a
//! request with its retries (`docs/bounds.md`) are built from.
//!
//! [`Error`]: crate::Error
//! [`Error::is_temporary`]: crate::Error::is_temporary

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, BlockingRetryable, ExponentialBuilder, Retryable};

/// How often an operation is tried and how long to pause between tries: the first pause,
/// then each `growth` times the one before, up to `max_pause`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// What the policy is for, as logs and the docs name it.
    pub name: &'static str,
    /// Tries in all, the first one included.
    pub tries: usize,
    /// The pause before the second try.
    pub first_pause: Duration,
    /// How many times longer each pause is than the one before.
    pub growth: f32,
    /// The longest one pause is (before jitter).
    pub max_pause: Duration,
    /// Whether each pause is lengthened by a random part of itself (up to doubled), so that
    /// clients that failed together do not come back together.
    pub jitter: bool,
}

/// One try of an operation run under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Try {
    /// 1 for the first try.
    pub number: usize,
    /// Whether no try follows this one, whatever it comes to.
    pub last: bool,
}

impl RetryPolicy {
    /// A request of an object store's own client (object_store for S3 and Azure, opendal for
    /// GCS) that timed out, met a 5xx or a 429, or lost its connection: 7 tries, pauses from
    /// 100 ms doubling up to 5 s, with jitter; the client stops retrying after
    /// [`CLOUD_RETRY_TIMEOUT`].
    pub const CLOUD_REQUEST: RetryPolicy = RetryPolicy {
        name: "CLOUD_REQUEST",
        tries: 7,
        first_pause: Duration::from_millis(100),
        growth: 2.0,
        max_pause: Duration::from_secs(5),
        jitter: true,
    };

    /// A conditional write sent by a backend itself (GCS's generation-checked HEAD swap):
    /// 6 tries, 200 ms doubling up to 5 s (200, 400, 800, 1600, 3200 ms).
    pub const CONDITIONAL_WRITE: RetryPolicy = RetryPolicy {
        name: "CONDITIONAL_WRITE",
        tries: 6,
        first_pause: Duration::from_millis(200),
        growth: 2.0,
        max_pause: Duration::from_secs(5),
        jitter: false,
    };

    /// A git ls-remote or fetch that failed on the network or with a 5xx: 3 tries, pauses of
    /// 250 ms and 1 s.
    pub const GIT_REMOTE: RetryPolicy = RetryPolicy {
        name: "GIT_REMOTE",
        tries: 3,
        first_pause: Duration::from_millis(250),
        growth: 4.0,
        max_pause: Duration::from_secs(1),
        jitter: false,
    };

    /// A git push that lost the race for its branch to another writer, built again on the
    /// new tip: 8 tries, pauses from 25 ms doubling up to 100 ms, with jitter so racing
    /// writers spread out (0.6 to 1.2 s in all).
    pub const LOST_PUSH: RetryPolicy = RetryPolicy {
        name: "LOST_PUSH",
        tries: 8,
        first_pause: Duration::from_millis(25),
        growth: 2.0,
        max_pause: Duration::from_millis(100),
        jitter: true,
    };

    /// A registry request (OCI) that failed in a way another try may not repeat: 4 tries,
    /// pauses of 100, 300 and 900 ms.
    pub const REGISTRY_REQUEST: RetryPolicy = RetryPolicy {
        name: "REGISTRY_REQUEST",
        tries: 4,
        first_pause: Duration::from_millis(100),
        growth: 3.0,
        max_pause: Duration::from_millis(900),
        jitter: false,
    };

    /// A request of a remote file system (WebDAV) answered with a 5xx or whose connection
    /// failed: 3 tries, pauses of 100 and 200 ms.
    pub const FILE_REQUEST: RetryPolicy = RetryPolicy {
        name: "FILE_REQUEST",
        tries: 3,
        first_pause: Duration::from_millis(100),
        growth: 2.0,
        max_pause: Duration::from_millis(200),
        jitter: false,
    };

    /// An FTP transfer (RETR, STOR, MLSD) whose data connection the server dropped, tried on
    /// a fresh connection: 3 tries, pauses of 100 and 400 ms (the server must first see the
    /// failed try's sockets close).
    pub const DATA_CONNECTION: RetryPolicy = RetryPolicy {
        name: "DATA_CONNECTION",
        tries: 3,
        first_pause: Duration::from_millis(100),
        growth: 4.0,
        max_pause: Duration::from_millis(400),
        jitter: false,
    };

    /// A ranged read of a pack that was cut short or failed, above the store's own retries:
    /// 3 tries, pauses of 100 and 300 ms, only while [`RANGED_READ_WINDOW`] has not passed.
    pub const RANGED_READ: RetryPolicy = RetryPolicy {
        name: "RANGED_READ",
        tries: 3,
        first_pause: Duration::from_millis(100),
        growth: 3.0,
        max_pause: Duration::from_millis(300),
        jitter: false,
    };

    /// An SMB rename the server refused for a moment (a reader has the file open): 11
    /// tries, pauses from 20 ms growing by 1.3 (about 0.85 s in all).
    pub const BUSY_RENAME: RetryPolicy = RetryPolicy {
        name: "BUSY_RENAME",
        tries: 11,
        first_pause: Duration::from_millis(20),
        growth: 1.3,
        max_pause: Duration::from_millis(250),
        jitter: false,
    };

    /// Every policy, for the docs and the tests.
    pub const ALL: [RetryPolicy; 9] = [
        Self::CLOUD_REQUEST,
        Self::CONDITIONAL_WRITE,
        Self::GIT_REMOTE,
        Self::LOST_PUSH,
        Self::REGISTRY_REQUEST,
        Self::FILE_REQUEST,
        Self::DATA_CONNECTION,
        Self::RANGED_READ,
        Self::BUSY_RENAME,
    ];

    /// The policy as backon's exponential backoff: `tries - 1` pauses.
    pub const fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::new()
            .with_min_delay(self.first_pause)
            .with_factor(self.growth)
            .with_max_delay(self.max_pause)
            .with_max_times(self.tries.saturating_sub(1));
        if self.jitter { b.with_jitter() } else { b }
    }

    /// The pauses one run of the policy makes, in order (jitter included when it has any).
    pub fn pauses(&self) -> impl Iterator<Item = Duration> + use<> {
        self.backoff().build()
    }

    /// The longest all the pauses of one run can add up to (with jitter at its most).
    pub fn most_paused(&self) -> Duration {
        let plain: Duration = RetryPolicy {
            jitter: false,
            ..*self
        }
        .pauses()
        .sum();
        if self.jitter { plain * 2 } else { plain }
    }

    /// Runs `op` until it succeeds, `retryable` says its error is not worth another try, or
    /// the tries are spent, pausing between tries; returns what the last try came to. Each
    /// try is told its number and whether it is the last.
    pub async fn run<T, E, F, Fut>(&self, op: F, retryable: impl FnMut(&E) -> bool) -> Result<T, E>
    where
        E: Debug,
        F: FnMut(Try) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        numbered(self.tries, op)
            .retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(retryable)
            .notify(|error, pause| self.log(error, pause))
            .await
    }

    /// [`RetryPolicy::run`] for an operation that blocks (pausing the thread between tries).
    pub fn run_blocking<T, E, F>(&self, op: F, retryable: impl FnMut(&E) -> bool) -> Result<T, E>
    where
        E: Debug,
        F: FnMut(Try) -> Result<T, E>,
    {
        numbered(self.tries, op)
            .retry(self.backoff())
            .sleep(std::thread::sleep)
            .when(retryable)
            .notify(|error, pause| self.log(error, pause))
            .call()
    }

    fn log(&self, error: &impl Debug, pause: Duration) {
        tracing::debug!(policy = self.name, ?error, ?pause, "failed; trying again");
    }
}

/// `op` as the retry loop calls it, with no arguments: each call is told its try's number
/// and whether it is the last of `tries`.
fn numbered<R>(tries: usize, mut op: impl FnMut(Try) -> R) -> impl FnMut() -> R {
    let mut number = 0;
    move || {
        number += 1;
        op(Try {
            number,
            last: number >= tries,
        })
    }
}

/// How long an object store's client goes on retrying one request under
/// [`RetryPolicy::CLOUD_REQUEST`] before it gives up.
pub const CLOUD_RETRY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long after its first try a ranged read is still tried again
/// ([`RetryPolicy::RANGED_READ`]): the store's client has retries and deadlines of its own,
/// and a read that fails slowly (a stall) is not worth another wait.
pub const RANGED_READ_WINDOW: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn millis(p: &RetryPolicy) -> Vec<u128> {
        p.pauses().map(|d| d.as_millis()).collect()
    }

    #[test]
    fn each_policy_pauses_as_documented() {
        assert_eq!(
            millis(&RetryPolicy::CONDITIONAL_WRITE),
            [200, 400, 800, 1600, 3200]
        );
        assert_eq!(millis(&RetryPolicy::GIT_REMOTE), [250, 1000]);
        assert_eq!(millis(&RetryPolicy::REGISTRY_REQUEST), [100, 300, 900]);
        assert_eq!(millis(&RetryPolicy::FILE_REQUEST), [100, 200]);
        assert_eq!(millis(&RetryPolicy::DATA_CONNECTION), [100, 400]);
        assert_eq!(millis(&RetryPolicy::RANGED_READ), [100, 300]);
        assert_eq!(
            millis(&RetryPolicy::BUSY_RENAME),
            [20, 25, 33, 43, 57, 74, 96, 125, 163, 212]
        );
    }

    #[test]
    fn jitter_lengthens_a_pause_at_most_to_double() {
        let plain = [100, 200, 400, 800, 1600, 3200];
        for _ in 0..50 {
            let got = millis(&RetryPolicy::CLOUD_REQUEST);
            assert_eq!(got.len(), plain.len());
            for (g, p) in got.iter().zip(plain) {
                assert!((p..=2 * p).contains(g), "{got:?}");
            }
            let lost_push = [25, 50, 100, 100, 100, 100, 100];
            for (g, p) in millis(&RetryPolicy::LOST_PUSH).iter().zip(lost_push) {
                assert!((p..=2 * p).contains(g));
            }
        }
    }

    #[test]
    fn a_policy_pauses_one_time_fewer_than_it_tries() {
        for p in RetryPolicy::ALL {
            assert_eq!(p.pauses().count(), p.tries - 1, "{}", p.name);
            assert!(p.pauses().all(|d| d <= p.max_pause * 2), "{}", p.name);
        }
    }

    #[test]
    fn the_pauses_add_up_within_their_bound() {
        let near = |d: Duration, ms: u64| d.as_millis().abs_diff(ms.into()) <= 1;
        assert!(near(RetryPolicy::REGISTRY_REQUEST.most_paused(), 1300));
        assert!(near(RetryPolicy::GIT_REMOTE.most_paused(), 1250));
        assert!(near(RetryPolicy::CLOUD_REQUEST.most_paused(), 2 * 6300));
        assert!(near(RetryPolicy::LOST_PUSH.most_paused(), 2 * 575));
        for p in RetryPolicy::ALL {
            for _ in 0..20 {
                assert!(
                    p.pauses().sum::<Duration>() <= p.most_paused(),
                    "{}",
                    p.name
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_stops_at_its_tries_and_pauses_between_them() {
        let calls = AtomicUsize::new(0);
        let began = tokio::time::Instant::now();
        let out: Result<(), Try> = RetryPolicy::REGISTRY_REQUEST
            .run(
                |t| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    async move { Err(t) }
                },
                |_| true,
            )
            .await;
        let last = out.unwrap_err();
        assert_eq!(
            last,
            Try {
                number: 4,
                last: true
            }
        );
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        let waited = began.elapsed();
        assert!(waited >= Duration::from_millis(1300), "{waited:?}");
        assert!(waited <= RetryPolicy::REGISTRY_REQUEST.most_paused() + Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_ends_at_the_first_error_its_classifier_refuses() {
        let calls = AtomicUsize::new(0);
        let out: Result<(), &str> = RetryPolicy::FILE_REQUEST
            .run(
                |t| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    async move { Err(if t.number == 1 { "busy" } else { "gone" }) }
                },
                |e| *e == "busy",
            )
            .await;
        assert_eq!(out, Err("gone"));
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_blocking_run_returns_the_first_success() {
        let mut calls = 0;
        let out: Result<usize, ()> = RetryPolicy::GIT_REMOTE.run_blocking(
            |t| {
                calls += 1;
                if t.number < 2 { Err(()) } else { Ok(t.number) }
            },
            |_| true,
        );
        assert_eq!(out, Ok(2));
        assert_eq!(calls, 2);
    }

    #[test]
    fn the_docs_list_every_policy_with_its_tries() {
        let page = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/design/retries.md");
        let page = std::fs::read_to_string(page).unwrap();
        for p in RetryPolicy::ALL {
            let row = format!("| `{}` | {} |", p.name, p.tries);
            assert!(
                page.contains(&row),
                "docs/design/retries.md has no row {row}"
            );
        }
    }
}
