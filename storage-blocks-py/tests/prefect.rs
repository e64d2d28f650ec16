//! storage blocks under real Prefect from PyPI: the harness builds the wheel, installs it
//! with Prefect, starts a Prefect server (SQLite) and a process worker on 127.0.0.1 and moto
//! for S3, and the pytest suite in tests/e2e deploys and runs flows through them. The
//! servers are stopped by their PIDs when the test ends, whatever its outcome.

mod common;

use conformance::harness::{Moto, PrefectServer, PrefectWorker, shared};

#[test]
fn prefect_deployments_run_code_pulled_through_storage_blocks() {
    let started = std::time::Instant::now();
    let moto = shared(Moto::start);
    let server = PrefectServer::start().unwrap_or_else(|e| panic!("{e}"));
    let scratch = tempfile::tempdir().expect("temp dir");
    let home = scratch.path().join("blockctl-home");
    let worker = PrefectWorker::start(&server, "e2e-process", &[("BLOCKCTL_HOME", &home)])
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "prefect server and worker ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let timings = scratch.path().join("timings.jsonl");
    common::pytest(
        &["tests/e2e"],
        &[
            ("PREFECT_API_URL", &server.api_url),
            (
                "PREFECT_HOME",
                &scratch.path().join("client").to_string_lossy(),
            ),
            ("BLOCKCTL_HOME", &home.to_string_lossy()),
            ("E2E_POOL", &worker.pool),
            ("E2E_S3_ENDPOINT", &moto.endpoint),
            ("E2E_TIMINGS", &timings.to_string_lossy()),
        ],
    );
    eprintln!(
        "timings:\n{}",
        std::fs::read_to_string(&timings).unwrap_or_default()
    );
}
