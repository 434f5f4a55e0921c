//! Certificates for Onboard's own services rather than devices: the MQTT broker's
//! TLS server certificate and a client certificate for Onboard's service account
//! on the broker; and the password hash of Mosquitto's password file.
//!
//! Server profile: subject `CN=<common name>`; SAN with the given DNS names and IP
//! addresses (at least one); basicConstraints critical CA:FALSE; keyUsage critical
//! digitalSignature; extendedKeyUsage serverAuth; SKI; AKI (key id); a random
//! 16-octet serial; validity `now - 5 min` to `now + days`, cut at the CA's end;
//! an ECDSA P-256 key generated here.
//!
//! Service profile: the same without SAN, with extendedKeyUsage clientAuth: the
//! broker maps the common name to the MQTT username (`use_identity_as_username`).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use onboard_domain::KeyAlgorithm;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs5::pbkdf2_hmac;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name};

use crate::ca::CertificateAuthority;
use crate::error::PkiError;
use crate::issue::{GeneratedCredential, IssuedCertificate};
use crate::keys::{self, PrivateKeyPem};
use crate::x509util::{
    asn1_time, fingerprint, name_to_string, random_serial, to_datetime, validity,
};

/// What the caller decides for a TLS server certificate (the MQTT broker's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertParams {
    /// The subject CN, e.g. the broker's host name; 1 to 64 characters.
    pub common_name: String,
    /// DNS names for the subjectAltName (`mqtt.example.com`, `localhost`).
    pub dns_names: Vec<String>,
    /// IP addresses for the subjectAltName (`127.0.0.1`).
    pub ip_addresses: Vec<IpAddr>,
    /// 1 to 36,500.
    pub validity_days: u32,
    pub now: DateTime<Utc>,
}

/// What the caller decides for a service account's client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCertParams {
    /// The subject CN, which the broker uses as the MQTT username
    /// (`onboard-service`); 1 to 64 characters.
    pub common_name: String,
    /// 1 to 36,500.
    pub validity_days: u32,
    pub now: DateTime<Utc>,
}

enum Profile<'a> {
    Server {
        dns_names: &'a [String],
        ip_addresses: &'a [IpAddr],
    },
    Service,
}

impl CertificateAuthority {
    /// Generates a P-256 key pair and issues a TLS server certificate for it
    /// (profile in the module documentation). At least one DNS name or IP address
    /// is required: TLS clients check the name they connect to against the SAN.
    pub fn issue_server_certificate(
        &self,
        params: &ServerCertParams,
    ) -> Result<GeneratedCredential, PkiError> {
        if params.dns_names.is_empty() && params.ip_addresses.is_empty() {
            return Err(PkiError::invalid(
                "subject alternative names",
                "a server certificate needs at least one DNS name or IP address",
            ));
        }
        for name in &params.dns_names {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
            if !ok {
                return Err(PkiError::invalid(
                    "dns names",
                    format!("{name:?} is not a DNS name"),
                ));
            }
        }
        self.issue_service_profile(
            &params.common_name,
            params.validity_days,
            params.now,
            Profile::Server {
                dns_names: &params.dns_names,
                ip_addresses: &params.ip_addresses,
            },
        )
    }

    /// Generates a P-256 key pair and issues a client certificate for one of
    /// Onboard's own service accounts on the broker (the activation listener, the
    /// dynamic-security admin): extendedKeyUsage clientAuth, no SAN.
    pub fn issue_service_certificate(
        &self,
        params: &ServiceCertParams,
    ) -> Result<GeneratedCredential, PkiError> {
        self.issue_service_profile(
            &params.common_name,
            params.validity_days,
            params.now,
            Profile::Service,
        )
    }

    fn issue_service_profile(
        &self,
        common_name: &str,
        validity_days: u32,
        now: DateTime<Utc>,
        profile: Profile<'_>,
    ) -> Result<GeneratedCredential, PkiError> {
        if common_name.is_empty()
            || common_name.chars().count() > 64
            || common_name.chars().any(char::is_control)
        {
            return Err(PkiError::invalid(
                "common name",
                "must be 1 to 64 characters without control characters",
            ));
        }
        let (not_before, requested_end) = validity(now, validity_days)?;
        let not_after = requested_end.min(to_datetime(self.cert.not_after())?);
        if not_after <= not_before {
            return Err(PkiError::invalid(
                "validity days",
                "the issuing CA certificate has expired",
            ));
        }
        let algorithm = KeyAlgorithm::EcdsaP256;
        let key = keys::generate(algorithm)?;

        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let (serial_bn, serial) = random_serial()?;
        b.set_serial_number(&*serial_bn.to_asn1_integer()?)?;
        let mut name = X509Name::builder()?;
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
        let name = name.build();
        b.set_subject_name(&name)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*asn1_time(not_before)?)?;
        b.set_not_after(&*asn1_time(not_after)?)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        let eku = match profile {
            Profile::Server { .. } => ExtendedKeyUsage::new().server_auth().build()?,
            Profile::Service => ExtendedKeyUsage::new().client_auth().build()?,
        };
        b.append_extension(eku)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        if let Profile::Server {
            dns_names,
            ip_addresses,
        } = profile
        {
            let mut san = SubjectAlternativeName::new();
            for dns in dns_names {
                san.dns(dns);
            }
            for ip in ip_addresses {
                san.ip(&ip.to_string());
            }
            let san = san.build(&b.x509v3_context(Some(&self.cert), None))?;
            b.append_extension(san)?;
        }
        b.sign(&self.key, keys::signing_digest(self.key_algorithm))?;
        let cert = b.build();

        let pem = String::from_utf8(cert.to_pem()?)
            .map_err(|_| PkiError::invalid("certificate", "OpenSSL wrote non-UTF-8 PEM"))?;
        Ok(GeneratedCredential {
            certificate: IssuedCertificate {
                pem,
                der: cert.to_der()?,
                serial,
                fingerprint: fingerprint(&cert)?,
                not_before,
                not_after,
                key_algorithm: algorithm,
                subject: name_to_string(&name),
            },
            private_key: PrivateKeyPem::from_key(&key)?,
        })
    }
}

/// PBKDF2-HMAC-SHA512 with a 64-byte output: the hash of Mosquitto 2.0's password
/// file format `$7$<iterations>$<base64 salt>$<base64 hash>` (what
/// `mosquitto_passwd` writes). The broker crate builds the line around it.
pub fn mosquitto_password_hash(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<Vec<u8>, PkiError> {
    if salt.is_empty() {
        return Err(PkiError::invalid("salt", "must not be empty"));
    }
    let iter = usize::try_from(iterations)
        .ok()
        .filter(|i| *i >= 1)
        .ok_or_else(|| PkiError::invalid("iterations", "must be at least 1"))?;
    let mut out = vec![0u8; 64];
    pbkdf2_hmac(password, salt, iter, MessageDigest::sha512(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaSpec;
    use chrono::TimeZone;
    use openssl::x509::{X509KeyUsage, X509};
    use std::process::Command;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
    }

    fn server_params() -> ServerCertParams {
        ServerCertParams {
            common_name: "localhost".into(),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            validity_days: 30,
            now: now(),
        }
    }

    /// `openssl verify -purpose <purpose>` against the CA chain, at `now`.
    fn openssl_verify(ca: &CertificateAuthority, pem: &str, purpose: &str) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let chain = dir.path().join("chain.pem");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&chain, ca.chain_pem()).unwrap();
        std::fs::write(&cert, pem).unwrap();
        let out = Command::new("openssl")
            .args(["verify", "-x509_strict", "-purpose", purpose, "-attime"])
            .arg((now().timestamp() + 60).to_string())
            .arg("-CAfile")
            .arg(&chain)
            .arg(&cert)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    #[test]
    fn server_certificate_follows_the_profile_and_openssl_accepts_it() {
        let ca = CertificateAuthority::generate(&CaSpec::new("Test Root CA"), now()).unwrap();
        let cred = ca.issue_server_certificate(&server_params()).unwrap();
        let c = &cred.certificate;
        assert_eq!(c.subject, "CN=localhost");
        assert_eq!(c.key_algorithm, KeyAlgorithm::EcdsaP256);
        let x = X509::from_der(&c.der).unwrap();
        assert_eq!(x.key_usage(), Some(X509KeyUsage::DIGITAL_SIGNATURE));
        let sans = x.subject_alt_names().unwrap();
        assert_eq!(sans.get(0).unwrap().dnsname(), Some("localhost"));
        assert_eq!(sans.get(1).unwrap().ipaddress(), Some(&[127, 0, 0, 1][..]));
        assert!(x.verify(&ca.cert.public_key().unwrap()).unwrap());
        assert!(cred
            .private_key
            .expose_secret()
            .starts_with("-----BEGIN PRIVATE KEY-----"));

        let (ok, text) = openssl_verify(&ca, &c.pem, "sslserver");
        assert!(ok, "{text}");
        // serverAuth only: not usable as a client certificate.
        let (ok, _) = openssl_verify(&ca, &c.pem, "sslclient");
        assert!(!ok);
    }

    #[test]
    fn service_certificate_is_a_client_certificate() {
        let ca = CertificateAuthority::generate(&CaSpec::new("Test Root CA"), now()).unwrap();
        let cred = ca
            .issue_service_certificate(&ServiceCertParams {
                common_name: "onboard-service".into(),
                validity_days: 30,
                now: now(),
            })
            .unwrap();
        assert_eq!(cred.certificate.subject, "CN=onboard-service");
        let (ok, text) = openssl_verify(&ca, &cred.certificate.pem, "sslclient");
        assert!(ok, "{text}");
        let (ok, _) = openssl_verify(&ca, &cred.certificate.pem, "sslserver");
        assert!(!ok);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let ca = CertificateAuthority::generate(&CaSpec::new("Test Root CA"), now()).unwrap();
        let no_san = ServerCertParams {
            dns_names: vec![],
            ip_addresses: vec![],
            ..server_params()
        };
        assert!(matches!(
            ca.issue_server_certificate(&no_san),
            Err(PkiError::InvalidInput { .. })
        ));
        let bad_dns = ServerCertParams {
            dns_names: vec!["a b".into()],
            ..server_params()
        };
        assert!(ca.issue_server_certificate(&bad_dns).is_err());
        let bad_cn = ServerCertParams {
            common_name: String::new(),
            ..server_params()
        };
        assert!(ca.issue_server_certificate(&bad_cn).is_err());
        let zero_days = ServerCertParams {
            validity_days: 0,
            ..server_params()
        };
        assert!(ca.issue_server_certificate(&zero_days).is_err());
    }

    #[test]
    fn password_hash_is_pbkdf2_sha512() {
        // RFC 6070-style check against an independent value: PBKDF2-HMAC-SHA512
        // of "password" / "salt" / 1 iteration (first 16 bytes, widely published).
        let h = mosquitto_password_hash(b"password", b"salt", 1).unwrap();
        assert_eq!(h.len(), 64);
        assert_eq!(hex::encode(&h[..16]), "867f70cf1ade02cff3752599a3a53dc4");
        assert!(mosquitto_password_hash(b"p", b"", 1).is_err());
        assert!(mosquitto_password_hash(b"p", b"s", 0).is_err());
    }
}
