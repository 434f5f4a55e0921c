//! Benchmarks of the CA's hot paths: parsing and verifying a CSR, issuing from a
//! CSR, generating a key and issuing, building a 100,000-entry CRL, signing and
//! verifying an access token, the hash a bootstrap key is looked up by, and a
//! device's credential bundle (beside the same four entries written by the `zip`
//! crate's AES writer, which bundles used before). All with an ECDSA P-256 issuing
//! CA.
//!
//! `cargo bench -p onboard-pki -- --warm-up-time 1 --measurement-time 5`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use onboard_domain::{CertSerial, DeviceId, KeyAlgorithm, RevocationReason};
use onboard_pki::{CaSpec, CertificateAuthority, CrlParams, IssueParams, RevokedCertificate};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::X509ReqBuilder;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

fn params() -> IssueParams<'static> {
    IssueParams {
        device_id: DeviceId("3f0c2a8e-0000-7000-8000-000000000001".parse().unwrap()),
        validity_days: 365,
        public_base_url: "https://onboard.example.test",
        now: now(),
    }
}

fn csr(key: &PKey<Private>) -> Vec<u8> {
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_pubkey(key).unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}

fn issuing(c: &mut Criterion) {
    let ca = CertificateAuthority::generate(&CaSpec::new("Bench CA"), now()).unwrap();
    let p256 = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let (p256_csr, rsa_csr) = (csr(&p256), csr(&rsa));
    let params = params();

    c.bench_function("issue_from_csr/p256", |b| {
        b.iter(|| ca.issue_from_csr(&p256_csr, &params).unwrap())
    });
    c.bench_function("issue_from_csr/rsa2048", |b| {
        b.iter(|| ca.issue_from_csr(&rsa_csr, &params).unwrap())
    });
    c.bench_function("issue_with_new_key/p256", |b| {
        b.iter(|| {
            ca.issue_with_new_key(KeyAlgorithm::EcdsaP256, &params)
                .unwrap()
        })
    });
    let mut slow = c.benchmark_group("slow");
    slow.sample_size(10);
    slow.bench_function("issue_with_new_key/rsa2048", |b| {
        b.iter(|| {
            ca.issue_with_new_key(KeyAlgorithm::Rsa2048, &params)
                .unwrap()
        })
    });
    slow.finish();
}

fn crl(c: &mut Criterion) {
    let ca = CertificateAuthority::generate(&CaSpec::new("Bench CA"), now()).unwrap();
    let reasons = RevocationReason::ALL;
    let revoked: Vec<RevokedCertificate> = (0..100_000u32)
        .map(|i| RevokedCertificate {
            serial: CertSerial::parse(&format!("40{:030X}", u128::from(i) * 7_919)).unwrap(),
            revoked_at: now() - Duration::seconds(i64::from(i)),
            reason: reasons[i as usize % reasons.len()],
        })
        .collect();
    let mut group = c.benchmark_group("slow");
    group.sample_size(10);
    group.bench_function("crl/100000_entries", |b| {
        b.iter(|| {
            ca.build_crl(&CrlParams {
                number: 1,
                this_update: now(),
                next_update: now() + Duration::days(1),
                revoked: &revoked,
            })
            .unwrap()
        })
    });
    group.finish();
}

fn csr_and_tokens(c: &mut Criterion) {
    let p256 = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let p256_csr = csr(&p256);
    c.bench_function("parse_csr/p256", |b| {
        b.iter(|| onboard_pki::parse_csr(&p256_csr).unwrap())
    });
    let key = onboard_pki::TokenKey::from_secret(&[7u8; 32]).unwrap();
    let claims = serde_json::json!({
        "sub": "3f0c2a8e-0000-7000-8000-000000000001",
        "iat": 1_795_000_000,
        "exp": 1_795_003_600,
    });
    c.bench_function("token/sign", |b| {
        b.iter(|| key.sign("at+jwt", &claims).unwrap())
    });
    let token = key.sign("at+jwt", &claims).unwrap();
    c.bench_function("token/verify", |b| {
        b.iter(|| key.verify(&token, Some("at+jwt")))
    });
    // A bootstrap key is found by its prefix and checked by its hash.
    let secret = "ob_3f0c2a8e_kJ8vQ2xW9mN4pR7tY1uZ6aB3cD5eF0gH";
    let stored = onboard_pki::secrets::sha256_hex(secret.as_bytes());
    c.bench_function("key_lookup_hash", |b| {
        b.iter(|| {
            let h = onboard_pki::secrets::sha256_hex(secret.as_bytes());
            onboard_pki::secrets::constant_time_eq(h.as_bytes(), stored.as_bytes())
        })
    });
}

fn bundles(c: &mut Criterion) {
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    let ca = CertificateAuthority::generate(&CaSpec::new("Bench CA"), now()).unwrap();
    let cred = ca
        .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params())
        .unwrap();
    let connection = br#"{"device_id":"3f0c2a8e-0000-7000-8000-000000000001","mqtt":{"host":"broker.example.test","port":8883}}"#;
    let writer = onboard_pki::BundleWriter::new(ca.chain_pem()).unwrap();
    c.bench_function("bundle/certificate_device", |b| {
        b.iter(|| {
            writer
                .build(&onboard_pki::DeviceFiles {
                    certificate_pem: &cred.certificate.pem,
                    private_key: &cred.private_key,
                    connection_json: connection,
                    created_at: now(),
                })
                .unwrap()
        })
    });
    // The same entries, two of them AES-256, through the zip crate's writer.
    c.bench_function("bundle/zip_crate_writer", |b| {
        b.iter(|| {
            let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let plain = SimpleFileOptions::default();
            let aes = plain
                .compression_method(zip::CompressionMethod::Stored)
                .with_aes_encryption(zip::AesMode::Aes256, "kJ8vQ2xW9mN4pR7tY1uZ6aB3");
            for (name, data, options) in [
                ("device.crt", cred.certificate.pem.as_bytes(), plain),
                (
                    "device.key",
                    cred.private_key.expose_secret().as_bytes(),
                    aes,
                ),
                ("ca.crt", ca.chain_pem().as_bytes(), plain),
                ("connection.json", &connection[..], aes),
            ] {
                z.start_file(name, options).unwrap();
                z.write_all(data).unwrap();
            }
            z.finish().unwrap().into_inner()
        })
    });
}

criterion_group!(benches, issuing, csr_and_tokens, crl, bundles);
criterion_main!(benches);
