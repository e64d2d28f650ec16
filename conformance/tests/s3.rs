//! The conformance suite against moto (S3), started by the harness. One server is shared by
//! the cases that overlap in time; each case gets its own bucket.

use std::sync::Arc;

use conformance::harness::{Moto, shared};
use conformance::{Subject, conformance_suite};
use storage_core::Secret;
use storage_s3::{S3Config, open};

pub fn config(endpoint: &str, bucket: &str, secret: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: Some("team/flows".into()),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.into()),
        access_key_id: Some("AKIDCONFORMANCE".into()),
        secret_access_key: Some(Secret::new(secret)),
        session_token: None,
        allow_http: Some(true),
        virtual_hosted_style: None,
        timeout: None,
    }
}

async fn s3_subject(case: &str) -> Subject {
    let moto = shared::<Moto>(Moto::start);
    let bucket = conformance::bucket_name(case);
    moto.create_bucket(&bucket).expect("create bucket");
    let block = open(
        &config(&moto.endpoint, &bucket, "conformance-secret"),
        "s3/conformance",
    )
    .expect("open s3 block");
    Subject::new(Arc::new(block), case).with_guard(moto)
}

conformance_suite!(s3_subject);
