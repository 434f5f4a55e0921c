//! The certificate authority as the use cases see it: load or create it from
//! `ca.dir`, describe it, and publish its CRL through the registry so that every
//! replica serves the same numbered CRL.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{CertificateRepository, CrlRecord, CrlRepository, InvalidValue, Store};
use onboard_pki::{
    CaSpec, CertificateAuthority, CertificateInfo, CrlParams, IntermediateSpec, PkiError,
    RevokedCertificate,
};

use crate::app::Onboard;
use crate::error::CoreError;
use crate::settings::Secret;

/// How often a publisher signs again when revocations keep arriving meanwhile.
const CRL_ATTEMPTS: usize = 5;

/// Root validity for a CA Onboard creates; an intermediate gets half.
const ROOT_VALIDITY_DAYS: u32 = 20 * 365;

/// What `ca show` and the admin API report.
#[derive(Debug, Clone)]
pub struct CaSummary {
    pub dir: String,
    /// Issuing CA first, root last.
    pub chain: Vec<CertificateInfo>,
    pub key_encrypted: bool,
    pub crl: Option<CrlStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlStatus {
    pub number: i64,
    pub this_update: DateTime<Utc>,
    pub next_update: DateTime<Utc>,
}

/// The CRL as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCrl {
    pub number: i64,
    pub this_update: DateTime<Utc>,
    pub next_update: DateTime<Utc>,
    pub der: Vec<u8>,
    pub pem: String,
}

/// How a CA is created by `onboardctl ca init`.
#[derive(Debug, Clone, Default)]
pub struct CaInit {
    /// Root plus an issuing intermediate, so the root key can be taken offline.
    pub intermediate: bool,
}

pub(crate) fn pki_error(e: PkiError) -> CoreError {
    if e.is_client_error() {
        return CoreError::Invalid(InvalidValue::new("csr", e.to_string()));
    }
    match e {
        PkiError::OpenSsl(_) => CoreError::Internal(e.to_string()),
        other => CoreError::Setup(other.to_string()),
    }
}

impl Onboard {
    fn passphrase(&self) -> Result<Option<Secret>, CoreError> {
        self.settings()
            .ca_passphrase()
            .map_err(|e| CoreError::Setup(e.to_string()))
    }

    /// The issuing CA, loaded from `ca.dir` once, or created there (root only) when
    /// the directory holds none and the database is SQLite (one process). On
    /// PostgreSQL a missing CA is a `Setup` error: every replica must load the one
    /// CA that `onboardctl ca init` made. A key that cannot be read, a wrong passphrase or a
    /// key that does not match the certificate is a `Setup` error naming the file.
    pub fn ca(&self) -> Result<Arc<CertificateAuthority>, CoreError> {
        if let Some(ca) = self.ca_cell().get() {
            return Ok(ca.clone());
        }
        // One loader at a time: concurrent first uses must not race to create.
        let _guard = self
            .ca_init_lock()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(ca) = self.ca_cell().get() {
            return Ok(ca.clone());
        }
        let dir = self.settings().ca_dir();
        let passphrase = self.passphrase()?;
        let secret = passphrase.as_ref().map(|p| p.expose().as_bytes());
        let ca = if CertificateAuthority::exists(&dir) {
            CertificateAuthority::load(&dir, secret).map_err(pki_error)?
        } else if self.backend() == "postgres" {
            // Replicas on one database would each make their own CA.
            return Err(CoreError::Setup(no_shared_ca(&dir)));
        } else {
            match CertificateAuthority::create(
                &dir,
                &self.ca_spec(false),
                secret,
                self.clock().now(),
            ) {
                Ok(ca) => {
                    tracing::info!(dir = %dir.display(), subject = %ca.subject(), encrypted = secret.is_some(), "created a new CA");
                    if secret.is_none() {
                        tracing::warn!(dir = %dir.display(), "the CA key is stored unencrypted: set ca.passphrase_file or ONBOARD__CA__PASSPHRASE");
                    }
                    ca
                }
                // Another process created it first: use that one.
                Err(PkiError::AlreadyExists { .. }) => {
                    CertificateAuthority::load(&dir, secret).map_err(pki_error)?
                }
                Err(e) => return Err(pki_error(e)),
            }
        };
        let _ = self.ca_cell().set(Arc::new(ca));
        self.ca_cell()
            .get()
            .cloned()
            .ok_or_else(|| CoreError::Internal("the CA could not be kept".into()))
    }

    fn ca_spec(&self, intermediate: bool) -> CaSpec {
        let s = &self.settings().ca;
        CaSpec {
            common_name: s.common_name.clone(),
            organization: None,
            key_algorithm: s.key_algorithm,
            validity_days: ROOT_VALIDITY_DAYS,
            intermediate: intermediate.then(|| IntermediateSpec {
                common_name: format!("{} Issuing", s.common_name),
                validity_days: ROOT_VALIDITY_DAYS / 2,
            }),
        }
    }

    /// Creates a new CA in `ca.dir`; refuses when one is there.
    pub fn init_ca(&self, init: &CaInit) -> Result<Arc<CertificateAuthority>, CoreError> {
        let dir = self.settings().ca_dir();
        let passphrase = self.passphrase()?;
        let secret = passphrase.as_ref().map(|p| p.expose().as_bytes());
        let ca = CertificateAuthority::create(
            &dir,
            &self.ca_spec(init.intermediate),
            secret,
            self.clock().now(),
        )
        .map_err(already_exists_is_conflict)?;
        let ca = Arc::new(ca);
        let _ = self.ca_cell().set(ca.clone());
        Ok(ca)
    }

    /// Imports an existing CA (chain PEM with the issuing certificate first, and its
    /// key) into `ca.dir`, re-encrypting the key with the configured passphrase.
    pub fn import_ca(
        &self,
        chain_pem: &[u8],
        key_pem: &[u8],
        key_passphrase: Option<&Secret>,
    ) -> Result<Arc<CertificateAuthority>, CoreError> {
        let dir = self.settings().ca_dir();
        let passphrase = self.passphrase()?;
        let ca = CertificateAuthority::import(
            &dir,
            chain_pem,
            key_pem,
            key_passphrase.map(|p| p.expose().as_bytes()),
            passphrase.as_ref().map(|p| p.expose().as_bytes()),
        )
        .map_err(already_exists_is_conflict)?;
        let ca = Arc::new(ca);
        let _ = self.ca_cell().set(ca.clone());
        Ok(ca)
    }

    /// The chain devices and brokers trust (PEM, issuing CA first) and its SHA-256,
    /// for HTTP caching.
    pub fn ca_chain(&self) -> Result<(String, String), CoreError> {
        let ca = self.ca()?;
        let pem = ca.chain_pem().to_owned();
        let digest = onboard_pki::secrets::sha256_hex(pem.as_bytes());
        Ok((pem, digest))
    }

    pub fn ca_summary(&self) -> Result<CaSummary, CoreError> {
        let ca = self.ca()?;
        let chain = ca.chain_info().map_err(pki_error)?;
        let crl = self.store().read(|tx| tx.latest_crl())?.map(|c| CrlStatus {
            number: c.number,
            this_update: c.this_update,
            next_update: c.next_update,
        });
        Ok(CaSummary {
            dir: self.settings().ca.dir.clone(),
            chain,
            // What the key file holds, not what is configured: an unencrypted key
            // still loads while a passphrase is set.
            key_encrypted: std::fs::read_to_string(
                self.settings().ca_dir().join(onboard_pki::ca_files::CA_KEY),
            )
            .map(|pem| pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----"))
            .unwrap_or(false),
            crl,
        })
    }

    /// The CRL to serve: the latest published one while it is in the first half of
    /// its validity, otherwise a freshly signed one.
    pub fn current_crl(&self) -> Result<PublishedCrl, CoreError> {
        let now = self.clock().now();
        let latest = self.store().read(|tx| tx.latest_crl())?;
        match latest {
            Some(crl) if fresh(&crl, now) => self.published(crl),
            _ => self.sign_crl(true),
        }
    }

    /// Signs a new CRL with the next number from every revoked, unexpired
    /// certificate, and stores it. One publisher at a time across replicas (a
    /// database lock); the signing happens outside any write transaction, from a
    /// snapshot, and the CRL is stored only if no revocation and no other CRL was
    /// committed meanwhile (otherwise it is signed again), so a published CRL
    /// always lists every revocation committed before it.
    pub fn publish_crl(&self) -> Result<PublishedCrl, CoreError> {
        self.sign_crl(false)
    }

    /// With `if_stale`, a CRL another publisher signed while this one waited for
    /// the lock is served instead (replicas refreshing at once sign one CRL).
    fn sign_crl(&self, if_stale: bool) -> Result<PublishedCrl, CoreError> {
        let ca = self.ca()?;
        let validity = Duration::hours(i64::from(self.settings().ca.crl_validity_hours));
        self.store().exclusive("crl", || {
            if if_stale {
                let now = self.clock().now();
                if let Some(crl) = self.store().read(|tx| tx.latest_crl())? {
                    if fresh(&crl, now) {
                        return self.published(crl);
                    }
                }
            }
            for _ in 0..CRL_ATTEMPTS {
                let now = self.clock().now();
                // The revocation count first: a revocation committed between the two
                // reads is then in the list but not in the count, and the check
                // below signs again rather than miss one.
                let (latest, watermark, revoked) =
                    self.store().read(|tx| -> Result<_, CoreError> {
                        let watermark = tx.revocation_count()?;
                        let latest = tx.latest_crl()?.map(|c| c.number);
                        Ok((latest, watermark, tx.revoked_certificates(now)?))
                    })?;
                let number = latest.unwrap_or(0) + 1;
                let revoked: Vec<RevokedCertificate> = revoked
                    .into_iter()
                    .map(|(serial, revoked_at, reason)| RevokedCertificate {
                        serial,
                        revoked_at,
                        reason,
                    })
                    .collect();
                let crl = ca
                    .build_crl(&CrlParams {
                        number: u64::try_from(number)
                            .map_err(|_| CoreError::Internal("CRL number overflow".into()))?,
                        this_update: now,
                        next_update: now + validity,
                        revoked: &revoked,
                    })
                    .map_err(pki_error)?;
                let record = CrlRecord {
                    number,
                    this_update: crl.this_update,
                    next_update: crl.next_update,
                    der: crl.der,
                };
                let stored = self.store().transaction(|tx| -> Result<bool, CoreError> {
                    let unchanged = tx.revocation_count()? == watermark
                        && tx.latest_crl()?.map(|c| c.number) == latest;
                    if unchanged {
                        tx.insert_crl(&record)?;
                    }
                    Ok(unchanged)
                });
                match stored {
                    Ok(true) => {
                        tracing::info!(
                            number = record.number,
                            entries = revoked.len(),
                            "published a new CRL"
                        );
                        return self.published(record);
                    }
                    // Something was revoked or published meanwhile: sign again.
                    Ok(false) | Err(CoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(CoreError::Unavailable(
                "the CRL changed during every attempt to publish it; retry".into(),
            ))
        })
    }

    fn published(&self, crl: CrlRecord) -> Result<PublishedCrl, CoreError> {
        let pem = onboard_pki::crl_pem_from_der(&crl.der).map_err(pki_error)?;
        Ok(PublishedCrl {
            number: crl.number,
            this_update: crl.this_update,
            next_update: crl.next_update,
            der: crl.der,
            pem,
        })
    }
}

/// A CRL is served until half its validity has passed; then a new one is signed,
/// so the broker always has one with at least half its validity left.
fn fresh(crl: &CrlRecord, now: DateTime<Utc>) -> bool {
    now < crl.this_update + (crl.next_update - crl.this_update) / 2
}

/// Why a PostgreSQL deployment without a CA does not start.
fn no_shared_ca(dir: &std::path::Path) -> String {
    format!(
        "no CA in {} (ca.dir): with a PostgreSQL database Onboard does not create one by itself, \
         because every replica would make its own; run `onboardctl ca init` once and mount the \
         result at ca.dir in every server",
        dir.display()
    )
}

fn already_exists_is_conflict(e: PkiError) -> CoreError {
    match e {
        PkiError::AlreadyExists { .. } => CoreError::Conflict(format!(
            "{e}; remove the directory's CA files first or point ca.dir elsewhere"
        )),
        other => pki_error(other),
    }
}

/// A certificate for infrastructure (the broker's TLS server, or Onboard's own MQTT
/// client), with its new key.
#[derive(Debug)]
pub struct InfraCertificate {
    pub certificate_pem: String,
    pub private_key_pem: onboard_domain::SecretString,
    pub chain_pem: String,
    pub not_after: DateTime<Utc>,
}

impl Onboard {
    /// A TLS server certificate for the broker (serverAuth, the given DNS names and
    /// IP addresses), so devices verify the broker with the chain they already have.
    pub fn issue_server_certificate(
        &self,
        common_name: &str,
        dns_names: &[String],
        ip_addresses: &[std::net::IpAddr],
        validity_days: u32,
    ) -> Result<InfraCertificate, CoreError> {
        let ca = self.ca()?;
        let issued = ca
            .issue_server_certificate(&onboard_pki::ServerCertParams {
                common_name: common_name.to_owned(),
                dns_names: dns_names.to_vec(),
                ip_addresses: ip_addresses.to_vec(),
                validity_days,
                now: self.clock().now(),
            })
            .map_err(infra_error)?;
        Ok(infra(&ca, issued))
    }

    /// A client certificate for one of Onboard's own MQTT accounts (CN =
    /// `broker.service_client_id`, clientAuth).
    pub fn issue_service_certificate(
        &self,
        common_name: &str,
        validity_days: u32,
    ) -> Result<InfraCertificate, CoreError> {
        let ca = self.ca()?;
        let issued = ca
            .issue_service_certificate(&onboard_pki::ServiceCertParams {
                common_name: common_name.to_owned(),
                validity_days,
                now: self.clock().now(),
            })
            .map_err(infra_error)?;
        Ok(infra(&ca, issued))
    }
}

fn infra_error(e: PkiError) -> CoreError {
    match e {
        PkiError::InvalidInput { field, reason } => {
            CoreError::Invalid(InvalidValue::new(field, reason))
        }
        other => pki_error(other),
    }
}

fn infra(ca: &CertificateAuthority, issued: onboard_pki::GeneratedCredential) -> InfraCertificate {
    InfraCertificate {
        not_after: issued.certificate.not_after,
        certificate_pem: issued.certificate.pem,
        private_key_pem: onboard_domain::SecretString::new(issued.private_key.expose_secret()),
        chain_pem: ca.chain_pem().to_owned(),
    }
}
