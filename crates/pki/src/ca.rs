//! The certificate authority: create, load, import, and the checks that a CA
//! certificate, its chain and its key belong together.
//!
//! Directory layout (see `docs/pki.md`):
//!
//! | file        | content                                              | mode |
//! |-------------|------------------------------------------------------|------|
//! | `ca.crt`    | the issuing CA certificate (PEM)                     | 0644 |
//! | `ca.key`    | the issuing CA key, PKCS#8 PEM, encrypted if a passphrase is given | 0600 |
//! | `chain.pem` | issuing CA first, then up to and including the root  | 0644 |
//! | `root.crt`  | the root certificate, only when an intermediate issues | 0644 |
//! | `root.key`  | the root key, only written by `create` with an intermediate; move it offline | 0600 |

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use onboard_domain::KeyAlgorithm;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509KeyUsage, X509Name, X509NameRef, X509Ref, X509};
use zeroize::Zeroizing;

use crate::error::PkiError;
use crate::info::{chain_info, CertificateInfo};
use crate::issue::IssuerParts;
use crate::keys;
use crate::x509util::{asn1_time, name_to_string, random_serial, validity};

/// File names inside a CA directory.
pub mod files {
    /// The issuing CA certificate.
    pub const CA_CERT: &str = "ca.crt";
    /// The issuing CA key (PKCS#8 PEM; encrypted with scrypt and AES-256-CBC when
    /// a passphrase is set).
    pub const CA_KEY: &str = "ca.key";
    /// The chain from the issuing CA up to and including the root.
    pub const CHAIN: &str = "chain.pem";
    /// The root certificate, present when an intermediate issues.
    pub const ROOT_CERT: &str = "root.crt";
    /// The root key, written only by `create` with an intermediate: move it offline.
    pub const ROOT_KEY: &str = "root.key";
}

/// The longest common name X.509 allows (ub-common-name).
const MAX_CN_LEN: usize = 64;

/// What to create: a root, and optionally an intermediate that issues device
/// certificates so the root key can stay offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSpec {
    /// The root's common name, e.g. `Onboard Root CA`.
    pub common_name: String,
    /// Optional organization (O) for the root's and the intermediate's subject.
    pub organization: Option<String>,
    /// The algorithm of the root's and the intermediate's keys.
    pub key_algorithm: KeyAlgorithm,
    /// The root's validity in days.
    pub validity_days: u32,
    /// Create an intermediate that issues device certificates.
    pub intermediate: Option<IntermediateSpec>,
}

/// The issuing intermediate of a two-level CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntermediateSpec {
    pub common_name: String,
    /// Must not reach past the root's end.
    pub validity_days: u32,
}

impl CaSpec {
    /// A root-only CA: ECDSA P-256, ten years.
    pub fn new(common_name: impl Into<String>) -> Self {
        Self {
            common_name: common_name.into(),
            organization: None,
            key_algorithm: KeyAlgorithm::EcdsaP256,
            validity_days: 3650,
            intermediate: None,
        }
    }
}

/// The issuing CA: its certificate, its key and the chain up to the root.
///
/// `Debug` shows the subject and algorithm, never the key.
pub struct CertificateAuthority {
    pub(crate) cert: X509,
    pub(crate) key: PKey<Private>,
    pub(crate) key_algorithm: KeyAlgorithm,
    /// What every device certificate carries of this CA, encoded once.
    pub(crate) issuer: IssuerParts,
    /// The issuing CA first, the self-signed root last.
    chain: Vec<X509>,
    chain_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject())
            .field("key_algorithm", &self.key_algorithm)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a CA in memory. With an intermediate, the root key is discarded: use
    /// [`CertificateAuthority::create`] to keep it.
    pub fn generate(spec: &CaSpec, now: DateTime<Utc>) -> Result<Self, PkiError> {
        generate(spec, now).map(|(ca, _root_key)| ca)
    }

    /// Creates a CA and writes it to `dir` (created with mode 0700 if missing).
    /// Keys are written with mode 0600, encrypted with `passphrase` when given
    /// (PBES2: scrypt N = 2^14, r = 8, p = 5; AES-256-CBC).
    /// Refuses to overwrite: any CA file already in `dir` is
    /// [`PkiError::AlreadyExists`].
    pub fn create(
        dir: &Path,
        spec: &CaSpec,
        passphrase: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Self, PkiError> {
        refuse_existing(dir)?;
        let (ca, root_key) = generate(spec, now)?;
        ca.write(dir, passphrase, root_key.as_deref())?;
        Ok(ca)
    }

    /// True when `dir` holds an issuing CA certificate or key (a server uses this
    /// to decide between `create` and `load` on first start).
    pub fn exists(dir: &Path) -> bool {
        dir.join(files::CA_CERT).exists() || dir.join(files::CA_KEY).exists()
    }

    /// Loads the CA from `dir`: `ca.crt`, `ca.key` and `chain.pem` must be there,
    /// the key must decrypt with `passphrase` (when encrypted) and match `ca.crt`,
    /// and the chain must start with `ca.crt` and end with a self-signed root.
    pub fn load(dir: &Path, passphrase: Option<&[u8]>) -> Result<Self, PkiError> {
        let cert_path = dir.join(files::CA_CERT);
        let key_path = dir.join(files::CA_KEY);
        let chain_path = dir.join(files::CHAIN);
        let cert_pem = read(&cert_path)?;
        let key_pem = read_secret(&key_path)?;
        let chain_pem = read(&chain_path)?;

        let unusable = |path: &Path, reason: &str| PkiError::InvalidCaCertificate {
            certificate: path.display().to_string(),
            reason: reason.to_owned(),
        };
        let cert =
            X509::from_pem(&cert_pem).map_err(|_| unusable(&cert_path, "not a PEM certificate"))?;
        let chain = X509::stack_from_pem(&chain_pem)
            .map_err(|_| unusable(&chain_path, "not a list of PEM certificates"))?;
        let same = match chain.first() {
            Some(first) => first.to_der()? == cert.to_der()?,
            None => false,
        };
        if !same {
            return Err(unusable(&chain_path, "its first certificate is not ca.crt"));
        }
        let key = keys::from_pem(&key_pem, passphrase, &key_path.display().to_string())?;
        Self::assemble(
            chain,
            key,
            &key_path.display().to_string(),
            &cert_path.display().to_string(),
        )
    }

    /// Builds a CA from PEM in memory: `chain_pem` holds the issuing CA certificate
    /// first, then its issuers up to and including the self-signed root;
    /// `key_pem` is the issuing CA's key (PKCS#8 or traditional PEM, decrypted with
    /// `passphrase` when encrypted).
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        passphrase: Option<&[u8]>,
    ) -> Result<Self, PkiError> {
        let chain =
            X509::stack_from_pem(chain_pem).map_err(|_| PkiError::InvalidCaCertificate {
                certificate: "the imported chain".into(),
                reason: "not a list of PEM certificates".into(),
            })?;
        let key = keys::from_pem(key_pem, passphrase, "the imported key")?;
        Self::assemble(chain, key, "the imported key", "the imported certificate")
    }

    /// Imports an existing CA (see [`CertificateAuthority::from_pem`]) and writes
    /// it to `dir` in this crate's layout, the key re-encrypted with `passphrase`.
    pub fn import(
        dir: &Path,
        chain_pem: &[u8],
        key_pem: &[u8],
        key_passphrase: Option<&[u8]>,
        passphrase: Option<&[u8]>,
    ) -> Result<Self, PkiError> {
        refuse_existing(dir)?;
        let ca = Self::from_pem(chain_pem, key_pem, key_passphrase)?;
        ca.write(dir, passphrase, None)?;
        Ok(ca)
    }

    /// The issuing CA certificate as PEM.
    pub fn certificate_pem(&self) -> Result<String, PkiError> {
        pem_string(&self.cert)
    }

    /// The chain as PEM: the issuing CA first, the root last. This is what devices
    /// and brokers are given as `ca.crt`.
    /// The chain as parsed certificates, issuing CA first.
    pub(crate) fn chain_certificates(&self) -> &[X509] {
        &self.chain
    }

    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The root certificate (the trust anchor) as PEM.
    pub fn root_pem(&self) -> Result<String, PkiError> {
        pem_string(self.chain.last().unwrap_or(&self.cert))
    }

    /// True when an intermediate issues (the chain has more than one certificate).
    pub fn has_intermediate(&self) -> bool {
        self.chain.len() > 1
    }

    /// The issuing CA's key algorithm.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }

    /// The issuing CA's subject, e.g. `CN=Onboard Issuing CA, O=Example`.
    pub fn subject(&self) -> String {
        name_to_string(self.cert.subject_name())
    }

    /// Details of every certificate in the chain, for `ca show`.
    pub fn chain_info(&self) -> Result<Vec<CertificateInfo>, PkiError> {
        chain_info(self.chain_pem.as_bytes())
    }

    /// The checks shared by `load` and `from_pem`.
    fn assemble(
        chain: Vec<X509>,
        key: PKey<Private>,
        key_name: &str,
        cert_name: &str,
    ) -> Result<Self, PkiError> {
        let unusable = |reason: &str| PkiError::InvalidCaCertificate {
            certificate: cert_name.to_owned(),
            reason: reason.to_owned(),
        };
        let cert = chain
            .first()
            .ok_or_else(|| unusable("no certificate found"))?
            .clone();
        if !cert.public_key()?.public_eq(&key) {
            return Err(PkiError::KeyMismatch {
                key: key_name.to_owned(),
                certificate: cert_name.to_owned(),
            });
        }
        let key_algorithm = keys::classify(&key)?;
        let usage = cert.key_usage().unwrap_or(X509KeyUsage::empty());
        if !usage.contains(X509KeyUsage::KEY_CERT_SIGN | X509KeyUsage::CRL_SIGN) {
            return Err(unusable(
                "it is not a CA certificate (keyUsage must include keyCertSign and cRLSign)",
            ));
        }
        if cert.subject_key_id().is_none() {
            return Err(unusable("it has no subject key identifier"));
        }
        for pair in chain.windows(2) {
            if !pair[0].verify(&*pair[1].public_key()?).unwrap_or(false) {
                return Err(unusable(
                    "the chain is broken: a certificate is not signed by the next one",
                ));
            }
        }
        let root = chain.last().unwrap_or(&cert);
        if !root.verify(&*root.public_key()?).unwrap_or(false) {
            return Err(unusable(
                "the chain must end with the self-signed root certificate",
            ));
        }
        let mut chain_pem = String::new();
        for c in &chain {
            chain_pem.push_str(&pem_string(c)?);
        }
        let issuer = IssuerParts::new(&cert, &key, key_algorithm)?;
        Ok(Self {
            cert,
            key,
            key_algorithm,
            issuer,
            chain,
            chain_pem,
        })
    }

    fn write(
        &self,
        dir: &Path,
        passphrase: Option<&[u8]>,
        root_key: Option<&PKeyRef<Private>>,
    ) -> Result<(), PkiError> {
        let key_pem = keys::to_pkcs8_pem(&self.key, passphrase)?;
        let root_key_pem = root_key
            .map(|k| keys::to_pkcs8_pem(k, passphrase))
            .transpose()?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| PkiError::io("create the directory", dir, e))?;
        write_new(&dir.join(files::CA_KEY), &key_pem, 0o600)?;
        if let Some(pem) = root_key_pem {
            write_new(&dir.join(files::ROOT_KEY), &pem, 0o600)?;
        }
        write_new(
            &dir.join(files::CA_CERT),
            self.certificate_pem()?.as_bytes(),
            0o644,
        )?;
        write_new(&dir.join(files::CHAIN), self.chain_pem.as_bytes(), 0o644)?;
        if self.has_intermediate() {
            write_new(
                &dir.join(files::ROOT_CERT),
                self.root_pem()?.as_bytes(),
                0o644,
            )?;
        }
        Ok(())
    }
}

fn generate(
    spec: &CaSpec,
    now: DateTime<Utc>,
) -> Result<(CertificateAuthority, Option<PKey<Private>>), PkiError> {
    let alg = spec.key_algorithm;
    let root_name = build_name(&spec.common_name, spec.organization.as_deref())?;
    let root_key = keys::generate(alg)?;
    let (nb, root_end) = validity(now, spec.validity_days)?;
    let root = build_ca_cert(&root_name, &root_key, None, alg, (nb, root_end), None)?;
    let Some(inter) = &spec.intermediate else {
        let ca =
            CertificateAuthority::assemble(vec![root], root_key, "the new key", "the new root")?;
        return Ok((ca, None));
    };
    let name = build_name(&inter.common_name, spec.organization.as_deref())?;
    let key = keys::generate(alg)?;
    let (nb, end) = validity(now, inter.validity_days)?;
    if end > root_end {
        return Err(PkiError::invalid(
            "intermediate validity days",
            "the intermediate must not outlast the root",
        ));
    }
    let cert = build_ca_cert(
        &name,
        &key,
        Some((&root, &root_key)),
        alg,
        (nb, end),
        Some(0),
    )?;
    let ca = CertificateAuthority::assemble(
        vec![cert, root],
        key,
        "the new key",
        "the new intermediate",
    )?;
    Ok((ca, Some(root_key)))
}

/// A CA certificate: basicConstraints critical CA:TRUE (pathLen 0 for an
/// intermediate), keyUsage critical keyCertSign + cRLSign, SKI, AKI (key id).
fn build_ca_cert(
    subject: &X509NameRef,
    key: &PKeyRef<Private>,
    issuer: Option<(&X509Ref, &PKeyRef<Private>)>,
    algorithm: KeyAlgorithm,
    (not_before, not_after): (DateTime<Utc>, DateTime<Utc>),
    pathlen: Option<u32>,
) -> Result<X509, PkiError> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let (serial, _) = random_serial()?;
    b.set_serial_number(&*serial.to_asn1_integer()?)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer.map_or(subject, |(c, _)| c.subject_name()))?;
    b.set_pubkey(key)?;
    b.set_not_before(&*asn1_time(not_before)?)?;
    b.set_not_after(&*asn1_time(not_after)?)?;
    let mut bc = BasicConstraints::new();
    bc.critical().ca();
    if let Some(len) = pathlen {
        bc.pathlen(len);
    }
    b.append_extension(bc.build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let issuer_cert = issuer.map(|(c, _)| c);
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer_cert, None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(issuer_cert, None))?;
    b.append_extension(aki)?;
    let signer = issuer.map_or(key, |(_, k)| k);
    b.sign(signer, keys::signing_digest(algorithm))?;
    Ok(b.build())
}

fn build_name(common_name: &str, organization: Option<&str>) -> Result<X509Name, PkiError> {
    let check = |field: &'static str, v: &str| {
        if v.trim().is_empty() || v.chars().count() > MAX_CN_LEN || v.chars().any(char::is_control)
        {
            Err(PkiError::invalid(
                field,
                "must be 1 to 64 characters without control characters",
            ))
        } else {
            Ok(())
        }
    };
    check("common name", common_name)?;
    let mut name = X509Name::builder()?;
    if let Some(org) = organization {
        check("organization", org)?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, org)?;
    }
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    Ok(name.build())
}

fn pem_string(cert: &X509Ref) -> Result<String, PkiError> {
    String::from_utf8(cert.to_pem()?)
        .map_err(|_| PkiError::invalid("certificate", "OpenSSL wrote non-UTF-8 PEM"))
}

fn refuse_existing(dir: &Path) -> Result<(), PkiError> {
    for name in [
        files::CA_CERT,
        files::CA_KEY,
        files::CHAIN,
        files::ROOT_CERT,
        files::ROOT_KEY,
    ] {
        let path = dir.join(name);
        if path.exists() {
            return Err(PkiError::AlreadyExists { path });
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|e| read_error(path, e))
}

fn read_error(path: &Path, e: std::io::Error) -> PkiError {
    match e.kind() {
        std::io::ErrorKind::NotFound => PkiError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => PkiError::io("read", path, e),
    }
}

/// Reads a key file into a buffer that is wiped on drop and never reallocated
/// (sized from the file's length up front; `fs::read` could grow its `Vec` and
/// leave an unwiped copy behind if the file grew while being read).
fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let mut file = File::open(path).map_err(|e| read_error(path, e))?;
    let len = file.metadata().map_err(|e| read_error(path, e))?.len();
    let len = usize::try_from(len).map_err(|_| PkiError::KeyUnreadable {
        key: path.display().to_string(),
    })?;
    // One byte more than the file holds, to see that the end has been reached.
    let mut buf = Zeroizing::new(vec![0u8; len.saturating_add(1)]);
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(PkiError::io(
                "read",
                path,
                std::io::Error::other("the file grew while it was being read"),
            ));
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(path, e)),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Creates `path` with `mode` (never widening an existing file: it must not exist)
/// and writes `data` to it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let fail = |e| PkiError::io("write", PathBuf::from(path), e);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => PkiError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => fail(e),
        })?;
    file.write_all(data).map_err(fail)?;
    file.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
    }

    fn two_level() -> CaSpec {
        CaSpec {
            intermediate: Some(IntermediateSpec {
                common_name: "Test Issuing CA".into(),
                validity_days: 1000,
            }),
            organization: Some("Onboard Tests".into()),
            ..CaSpec::new("Test Root CA")
        }
    }

    #[test]
    fn root_only_ca_is_its_own_chain() {
        let ca = CertificateAuthority::generate(&CaSpec::new("Test Root CA"), now()).unwrap();
        assert!(!ca.has_intermediate());
        assert_eq!(ca.subject(), "CN=Test Root CA");
        assert_eq!(ca.chain_pem(), ca.certificate_pem().unwrap());
        assert_eq!(ca.root_pem().unwrap(), ca.certificate_pem().unwrap());
        assert_eq!(ca.cert.pathlen(), None);
    }

    #[test]
    fn intermediate_is_signed_by_the_root_and_issues() {
        let ca = CertificateAuthority::generate(&two_level(), now()).unwrap();
        assert!(ca.has_intermediate());
        assert_eq!(ca.subject(), "O=Onboard Tests, CN=Test Issuing CA");
        assert_eq!(ca.cert.pathlen(), Some(0));
        let info = ca.chain_info().unwrap();
        assert_eq!(info.len(), 2);
        assert_eq!(info[0].issuer, "O=Onboard Tests, CN=Test Root CA");
        assert_eq!(info[1].subject, info[1].issuer);
    }

    #[test]
    fn intermediate_may_not_outlast_the_root() {
        let mut spec = two_level();
        spec.validity_days = 100;
        let err = CertificateAuthority::generate(&spec, now()).unwrap_err();
        assert!(matches!(err, PkiError::InvalidInput { .. }), "{err}");
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "  ", &"x".repeat(65), "a\nb"] {
            let err = CertificateAuthority::generate(&CaSpec::new(bad), now()).unwrap_err();
            assert!(matches!(err, PkiError::InvalidInput { .. }), "{bad:?}");
        }
    }

    #[test]
    fn key_files_are_read_whole_into_a_wiped_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        for data in [&b""[..], b"x", &[7u8; 5000][..]] {
            fs::write(&path, data).unwrap();
            assert_eq!(&read_secret(&path).unwrap()[..], data);
        }
        assert!(matches!(
            read_secret(&dir.path().join("absent")),
            Err(PkiError::MissingFile { .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let ca = CertificateAuthority::generate(&CaSpec::new("Test Root CA"), now()).unwrap();
        let text = format!("{ca:?}");
        assert!(text.contains("CN=Test Root CA"));
        assert!(!text.contains("PRIVATE"));
    }

    #[test]
    fn from_pem_rejects_a_foreign_key_and_a_non_ca() {
        let ca = CertificateAuthority::generate(&CaSpec::new("A"), now()).unwrap();
        let other = keys::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let other_pem = other.private_key_to_pem_pkcs8().unwrap();
        let err = CertificateAuthority::from_pem(ca.chain_pem().as_bytes(), &other_pem, None)
            .unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");

        let key_pem = ca.key.private_key_to_pem_pkcs8().unwrap();
        let again =
            CertificateAuthority::from_pem(ca.chain_pem().as_bytes(), &key_pem, None).unwrap();
        assert_eq!(again.subject(), ca.subject());
    }
}
