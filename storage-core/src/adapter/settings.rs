//! Client settings every remote object store shares: its retry policy (as object_store's
//! settings), request timeout and HTTP client options.

use super::*;

#[cfg(feature = "cloud")]
/// What every remote object store retries (timeouts, 5xx and connection resets), under
/// [`RetryPolicy::CLOUD_REQUEST`](crate::RetryPolicy::CLOUD_REQUEST) and for at most
/// [`CLOUD_RETRY_TIMEOUT`](crate::retry::CLOUD_RETRY_TIMEOUT) per request, as object_store's
/// settings (its backoff always has jitter).
pub fn retry_config() -> object_store::RetryConfig {
    let policy = crate::RetryPolicy::CLOUD_REQUEST;
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: policy.first_pause,
            max_backoff: policy.max_pause,
            base: f64::from(policy.growth),
        },
        max_retries: policy.tries - 1,
        retry_timeout: crate::retry::CLOUD_RETRY_TIMEOUT,
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

#[cfg(feature = "cloud")]
/// The HTTP client options of a cloud object store: plain http only where `allow_http`, 10 s
/// to connect, and [`request_timeout`] for one request (the block's `timeout` field `secs`,
/// else `default`).
pub fn client_options(
    label: &str,
    secs: Option<i64>,
    default: Duration,
    allow_http: bool,
) -> Result<object_store::ClientOptions> {
    Ok(object_store::ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(request_timeout(label, secs, default)?))
}
