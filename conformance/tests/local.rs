//! The conformance suite against the local backend, one fresh base folder per case.

use std::sync::Arc;

use conformance::{Subject, conformance_suite};
use storage_local::{LocalConfig, open};

async fn local_subject(case: &str) -> Subject {
    let base = tempfile::tempdir().expect("base dir").keep();
    let config = LocalConfig {
        basepath: base.to_string_lossy().into_owned(),
    };
    let block = open(&config, "local/conformance").expect("open local block");
    Subject::new(Arc::new(block), case)
}

conformance_suite!(local_subject);
