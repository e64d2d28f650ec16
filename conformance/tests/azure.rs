//! The conformance suite against Azurite (Azure Blob), started by the harness. One server is
//! shared by the cases that overlap in time; each case gets its own container.

use std::sync::Arc;

use conformance::harness::{Azurite, shared};
use conformance::{Subject, conformance_suite};
use storage_azure::{AzureConfig, open};
use storage_core::Secret;

async fn azure_subject(case: &str) -> Subject {
    let azurite = shared::<Azurite>(Azurite::start);
    let container = conformance::bucket_name(case);
    azurite
        .create_container(&container)
        .expect("create container");
    let config = AzureConfig {
        container,
        prefix: Some("team/flows".into()),
        account: Some(azurite.account.into()),
        access_key: Some(Secret::new(azurite.key)),
        connection_string: None,
        sas_token: None,
        endpoint: Some(azurite.endpoint.clone()),
        use_emulator: None,
        timeout: None,
    };
    let block = open(&config, "azure/conformance").expect("open azure block");
    Subject::new(Arc::new(block), case).with_guard(azurite)
}

conformance_suite!(azure_subject);
