//! The pytest suite of the Python API (tests/python), run against the wheel built from this
//! checkout, installed by the harness into its venv with Prefect.

mod common;

#[test]
fn python_api_passes_its_pytest_suite() {
    common::pytest(&["tests/python"], &[]);
}
