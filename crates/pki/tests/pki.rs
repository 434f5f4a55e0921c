//! The pki crate checked by independent tools: the `openssl` CLI (verify, crl),
//! pkilint (`lint_pkix_cert`, `lint_crl`) and Python's `pyzipper`.
//!
//! The Python tools come from the test virtualenv that `scripts/test-services.sh`
//! (and `make test`) create at `target/testenv`: they are looked up on PATH, then in
//! that directory. A missing tool fails the test; nothing is skipped.
//!
//! Every test works in its own temporary directory and uses a fixed "now";
//! `openssl verify` is told that time with `-attime`.

// Test code: a failed step should panic with its message (clippy's
// allow-unwrap-in-tests does not reach the helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "pki/bundle.rs"]
mod bundle;
#[path = "pki/ca_certificates.rs"]
mod ca_certificates;
#[path = "pki/ca_directory.rs"]
mod ca_directory;
#[path = "pki/crl.rs"]
mod crl;
#[path = "pki/csr_rejections.rs"]
mod csr_rejections;
#[path = "pki/device_certificates.rs"]
mod device_certificates;
#[path = "pki/support.rs"]
mod support;
