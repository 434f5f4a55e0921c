//! Fixtures and tool runners shared by the test modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, TimeZone, Utc};
use onboard_domain::{DeviceId, KeyAlgorithm};
use onboard_pki::{CaSpec, CertificateAuthority, IntermediateSpec, IssueParams};

pub const BASE_URL: &str = "https://onboard.example.test";

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

pub fn device_id(n: u32) -> DeviceId {
    format!("3f0c2a8e-0000-7000-8000-{n:012}").parse().unwrap()
}

pub fn params(id: DeviceId) -> IssueParams<'static> {
    IssueParams {
        device_id: id,
        validity_days: 365,
        public_base_url: BASE_URL,
        now: now(),
    }
}

pub fn root_only(alg: KeyAlgorithm) -> CertificateAuthority {
    let spec = CaSpec {
        key_algorithm: alg,
        ..CaSpec::new("Onboard Test Root CA")
    };
    CertificateAuthority::generate(&spec, now()).unwrap()
}

pub fn two_level_spec(alg: KeyAlgorithm) -> CaSpec {
    CaSpec {
        organization: Some("Onboard Tests".into()),
        key_algorithm: alg,
        intermediate: Some(IntermediateSpec {
            common_name: "Onboard Test Issuing CA".into(),
            validity_days: 1825,
        }),
        ..CaSpec::new("Onboard Test Root CA")
    }
}

pub fn two_level(alg: KeyAlgorithm) -> CertificateAuthority {
    CertificateAuthority::generate(&two_level_spec(alg), now()).unwrap()
}

pub fn write(dir: &Path, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn venv_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testenv/bin")
}

/// A test tool from PATH or the test virtualenv; fails the test when missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([venv_bin()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` was not found on PATH nor in target/testenv/bin: run \
                 scripts/test-services.sh (or `make test`), which installs pkilint and \
                 pyzipper into target/testenv, and put target/testenv/bin on PATH"
            )
        })
}

/// The Python of the virtualenv that holds pkilint (it has pyzipper too).
pub fn python() -> PathBuf {
    let lint = tool("lint_pkix_cert");
    let beside = lint.with_file_name("python3");
    if beside.is_file() {
        beside
    } else {
        tool("python3")
    }
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn openssl() -> Command {
    Command::new(tool("openssl"))
}

/// `openssl verify` at our fixed "now". `untrusted` holds intermediates.
pub fn verify(dir: &Path, root: &str, untrusted: Option<&str>, cert: &Path) -> Output {
    verify_at(dir, root, untrusted, cert, now())
}

pub fn verify_at(
    dir: &Path,
    root: &str,
    untrusted: Option<&str>,
    cert: &Path,
    at: DateTime<Utc>,
) -> Output {
    let root = write(dir, "verify-root.pem", root);
    let mut cmd = openssl();
    cmd.args(["verify", "-x509_strict", "-purpose", "sslclient", "-attime"])
        .arg(at.timestamp().to_string())
        .arg("-CAfile")
        .arg(root);
    if let Some(inter) = untrusted {
        cmd.arg("-untrusted")
            .arg(write(dir, "verify-untrusted.pem", inter));
    }
    run(cmd.arg(cert))
}

/// Fails on any ERROR or FATAL pkilint finding for a certificate.
pub fn lint_cert(path: &Path) {
    let out = run(Command::new(tool("lint_pkix_cert"))
        .args(["lint", "-s", "ERROR"])
        .arg(path));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("(ERROR)") && !text.contains("(FATAL)"),
        "pkilint findings for {}:\n{text}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails on any ERROR or FATAL pkilint finding for an issuer/subject pair.
pub fn lint_pair(issuer: &Path, subject: &Path) {
    let out = run(Command::new(tool("lint_pkix_signer_signee_cert_chain"))
        .args(["lint", "-s", "ERROR"])
        .arg(issuer)
        .arg(subject));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("(ERROR)") && !text.contains("(FATAL)"),
        "pkilint chain findings for {}:\n{text}\n{}",
        subject.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CSR made by the openssl CLI with `-newkey <spec>` (and `-pkeyopt`s), with
/// a subject we must NOT copy.
pub fn cli_csr(dir: &Path, name: &str, newkey: &[&str]) -> Vec<u8> {
    let csr = dir.join(format!("{name}.csr"));
    run_ok(
        openssl()
            .args([
                "req",
                "-new",
                "-nodes",
                "-subj",
                "/CN=evil.example/O=Attacker",
            ])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&csr)
            .args(newkey),
    );
    std::fs::read(csr).unwrap()
}

pub fn newkey_args(alg: KeyAlgorithm) -> Vec<&'static str> {
    match alg {
        KeyAlgorithm::EcdsaP256 => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        KeyAlgorithm::EcdsaP384 => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        KeyAlgorithm::Rsa2048 => vec!["-newkey", "rsa:2048"],
        KeyAlgorithm::Rsa3072 => vec!["-newkey", "rsa:3072"],
        KeyAlgorithm::Rsa4096 => vec!["-newkey", "rsa:4096"],
    }
}
