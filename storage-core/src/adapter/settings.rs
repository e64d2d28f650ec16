//! Client settings every remote object store shares: retry policy and request timeout.

use super::*;

#[cfg(feature = "cloud")]
/// What every remote object store retries: timeouts, 5xx and connection resets, with
/// exponential backoff, for at most two minutes per request.
pub fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(120),
    }
}

/// How long one request of a remote block may take before it is given up (and retried): the
/// block's `timeout` field in seconds, else `default`.
pub fn request_timeout(label: &str, secs: Option<i64>, default: Duration) -> Result<Duration> {
    match secs {
        None => Ok(default),
        Some(s) if s > 0 => Ok(Duration::from_secs(s as u64)),
        Some(s) => Err(Error::Usage(format!(
            "{label}: timeout must be a positive number of seconds, not {s}"
        ))),
    }
}
