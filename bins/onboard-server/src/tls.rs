//! The TLS listener (`server.tls_bind`): the server's own identity, client
//! certificates, and the certificate a connection presented, for the routes.
//!
//! - Identity: `server.tls_cert_file` and `server.tls_key_file` (re-read when they
//!   change, so a certificate manager can replace them), or, when those are empty, a
//!   server certificate issued from our CA for `server.tls_names`, valid
//!   [`ISSUED_DAYS`] days and replaced once less than [`RENEW_BEFORE_DAYS`] remain.
//!   New connections get the current identity; open ones keep theirs.
//! - Client certificates are optional at the handshake (`SSL_VERIFY_PEER` without
//!   `FAIL_IF_NO_PEER_CERT`) and verified against our CA chain: a certificate of
//!   any other issuer fails the handshake. Routes decide what a missing one means.

use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use actix_tls::accept::openssl::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use chrono::{DateTime, Duration, Utc};
use onboard_core::{CoreError, Onboard};
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ClientHelloResponse, SslAcceptor, SslAcceptorBuilder, SslMethod, SslVerifyMode,
};
use openssl::x509::X509;

use crate::ServerError;

/// Days an issued server certificate is valid.
pub const ISSUED_DAYS: u32 = 90;
/// An issued server certificate is replaced once fewer days than this remain.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// The DER certificate a TLS client presented (verified by the handshake).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Vec<u8>);

/// Where the identity comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Issued,
    Files {
        cert: PathBuf,
        key: PathBuf,
        modified: Option<(SystemTime, SystemTime)>,
    },
}

/// A certificate chain and its key.
struct Identity {
    cert: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
    not_after: DateTime<Utc>,
    source: Source,
}

/// The current identity of the TLS listener; cheap to clone.
#[derive(Clone)]
pub struct TlsIdentity {
    current: Arc<RwLock<Arc<Identity>>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

fn setup(what: impl std::fmt::Display) -> ServerError {
    ServerError::Core(CoreError::Setup(what.to_string()))
}

fn modified(cert: &PathBuf, key: &PathBuf) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn not_after(cert: &X509) -> DateTime<Utc> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok();
    epoch
        .and_then(|e| e.diff(cert.not_after()).ok())
        .and_then(|d| DateTime::from_timestamp(i64::from(d.days) * 86_400 + i64::from(d.secs), 0))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn from_files(cert: &PathBuf, key: &PathBuf) -> Result<Identity, ServerError> {
    let stamp = modified(cert, key);
    let pem = std::fs::read(cert).map_err(|e| {
        setup(format!(
            "cannot read server.tls_cert_file {}: {e}",
            cert.display()
        ))
    })?;
    let mut certs = X509::stack_from_pem(&pem).map_err(|_| {
        setup(format!(
            "server.tls_cert_file {} holds no PEM certificate",
            cert.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(setup(format!(
            "server.tls_cert_file {} holds no PEM certificate",
            cert.display()
        )));
    }
    let leaf = certs.remove(0);
    let key_pem = std::fs::read(key).map_err(|e| {
        setup(format!(
            "cannot read server.tls_key_file {}: {e}",
            key.display()
        ))
    })?;
    let pkey = PKey::private_key_from_pem(&key_pem).map_err(|_| {
        setup(format!(
            "server.tls_key_file {} is not an unencrypted PEM private key",
            key.display()
        ))
    })?;
    let matches = leaf
        .public_key()
        .map(|p| p.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err(setup(
            "server.tls_key_file does not belong to the certificate in server.tls_cert_file",
        ));
    }
    Ok(Identity {
        not_after: not_after(&leaf),
        cert: leaf,
        chain: certs,
        key: pkey,
        source: Source::Files {
            cert: cert.clone(),
            key: key.clone(),
            modified: stamp,
        },
    })
}

fn issued(onboard: &Onboard) -> Result<Identity, ServerError> {
    let names = onboard.settings().tls_names();
    let (ips, dns): (Vec<_>, Vec<_>) = names
        .iter()
        .partition(|n| n.parse::<std::net::IpAddr>().is_ok());
    let ips: Vec<std::net::IpAddr> = ips.iter().filter_map(|n| n.parse().ok()).collect();
    let dns: Vec<String> = dns.into_iter().cloned().collect();
    let cn = names.first().cloned().unwrap_or_else(|| "localhost".into());
    let infra = onboard.issue_server_certificate(&cn, &dns, &ips, ISSUED_DAYS)?;
    let cert = X509::from_pem(infra.certificate_pem.as_bytes())
        .map_err(|e| setup(format!("the issued server certificate: {e}")))?;
    let key = PKey::private_key_from_pem(infra.private_key_pem.expose().as_bytes())
        .map_err(|e| setup(format!("the issued server key: {e}")))?;
    let chain = X509::stack_from_pem(infra.chain_pem.as_bytes())
        .map_err(|e| setup(format!("the CA chain: {e}")))?;
    Ok(Identity {
        cert,
        chain,
        key,
        not_after: infra.not_after,
        source: Source::Issued,
    })
}

impl TlsIdentity {
    /// The identity the settings ask for (files, or a certificate of our CA).
    pub fn load(onboard: &Onboard) -> Result<Self, ServerError> {
        let s = &onboard.settings().server;
        let identity = if s.tls_cert_file.is_empty() {
            issued(onboard)?
        } else {
            from_files(
                &PathBuf::from(&s.tls_cert_file),
                &PathBuf::from(&s.tls_key_file),
            )?
        };
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(identity))),
        })
    }

    fn get(&self) -> Arc<Identity> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// When the current certificate expires.
    pub fn not_after(&self) -> DateTime<Utc> {
        self.get().not_after
    }

    /// The current certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        self.get()
            .cert
            .to_pem()
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_default()
    }

    /// Replaces the identity when it is due: an issued certificate with less than
    /// [`RENEW_BEFORE_DAYS`] left, or files that changed. Returns whether it did.
    /// A failure keeps the current identity (and is retried on the next call).
    pub fn refresh(&self, onboard: &Onboard, now: DateTime<Utc>) -> Result<bool, ServerError> {
        let current = self.get();
        let next = match &current.source {
            Source::Issued if current.not_after - now < Duration::days(RENEW_BEFORE_DAYS) => {
                issued(onboard)?
            }
            Source::Files {
                cert,
                key,
                modified: seen,
            } if modified(cert, key) != *seen => from_files(cert, key)?,
            _ => return Ok(false),
        };
        let mut slot = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(next);
        Ok(true)
    }

    /// The acceptor of the TLS listener.
    pub fn acceptor(&self, onboard: &Onboard) -> Result<SslAcceptorBuilder, ServerError> {
        let tls = |e: openssl::error::ErrorStack| setup(format!("TLS set-up: {e}"));
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(tls)?;
        let first = self.get();
        b.set_certificate(&first.cert).map_err(tls)?;
        b.set_private_key(&first.key).map_err(tls)?;
        for c in &first.chain {
            b.add_extra_chain_cert(c.clone()).map_err(tls)?;
        }
        // Client certificates: optional, and only ours.
        let ca = onboard.ca()?;
        let chain = X509::stack_from_pem(ca.chain_pem().as_bytes()).map_err(tls)?;
        for c in &chain {
            b.cert_store_mut().add_cert(c.clone()).map_err(tls)?;
            b.add_client_ca(c).map_err(tls)?;
        }
        b.set_verify(SslVerifyMode::PEER);
        let identity = self.clone();
        b.set_client_hello_callback(move |ssl, _alert| {
            let id = identity.get();
            ssl.set_certificate(&id.cert)?;
            ssl.set_private_key(&id.key)?;
            for c in &id.chain {
                ssl.add_chain_cert(c.clone())?;
            }
            Ok(ClientHelloResponse::SUCCESS)
        });
        Ok(b)
    }
}

/// Marks a connection of the TLS listener (EST is served only there).
#[derive(Debug, Clone, Copy)]
pub struct TlsConnection;

/// `HttpServer::on_connect`: keeps the client certificate of a TLS connection
/// for the routes. Plain connections have none.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() {
        ext.insert(TlsConnection);
        if let Some(der) = tls.ssl().peer_certificate().and_then(|c| c.to_der().ok()) {
            ext.insert(PeerCertificate(der));
        }
    }
}
