//! Device certificates: from a CSR or with a key pair generated here.
//!
//! The profile (every certificate the same, whatever the CSR asked for):
//! subject `CN=<device id>`; SAN `URI:<public base url>/devices/<device id>`
//! (see [`device_uri`]); basicConstraints
//! critical CA:FALSE; keyUsage critical digitalSignature (+ keyEncipherment for
//! RSA); extendedKeyUsage clientAuth; SKI; AKI (key id); cRLDistributionPoints
//! `<public base url>/public/v1/crl`; authorityInfoAccess OCSP
//! `<public base url>/public/v1/ocsp`; a random 16-octet positive serial; validity
//! `now - 5 min` to `now + days`, cut at the issuing CA's own end.

use chrono::{DateTime, Utc};
use onboard_domain::{CertSerial, DeviceId, Fingerprint, KeyAlgorithm};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKeyRef};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name};

use crate::ca::CertificateAuthority;
use crate::csr::{self, CheckedCsr};
use crate::error::PkiError;
use crate::keys::{self, PrivateKeyPem};
use crate::x509util::{
    asn1_time, crl_distribution_point, fingerprint, name_to_string, ocsp_access, random_serial,
    to_datetime, validity,
};

/// The path of the CRL under the public base URL.
pub const CRL_PATH: &str = "/public/v1/crl";

/// The path of the OCSP responder under the public base URL (authorityInfoAccess).
pub const OCSP_PATH: &str = "/public/v1/ocsp";

/// The path under the public base URL that prefixes a device's URI name.
pub const DEVICE_URI_PATH: &str = "/devices/";

/// What the caller decides for one device certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueParams<'a> {
    pub device_id: DeviceId,
    /// 1 to 36,500.
    pub validity_days: u32,
    /// The server's public base URL (`https://onboard.example.com`); the CRL
    /// distribution point is this plus [`CRL_PATH`], the device's URI name this
    /// plus [`DEVICE_URI_PATH`] and the device id.
    pub public_base_url: &'a str,
    pub now: DateTime<Utc>,
}

/// A certificate the CA has just signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub pem: String,
    pub der: Vec<u8>,
    pub serial: CertSerial,
    /// SHA-256 of `der`.
    pub fingerprint: Fingerprint,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub key_algorithm: KeyAlgorithm,
    /// `CN=<device id>`
    pub subject: String,
}

/// A certificate with the key pair generated for it. `Debug` redacts the key.
/// Not `Clone`, like the [`PrivateKeyPem`] it holds: move it or its fields.
#[derive(Debug)]
pub struct GeneratedCredential {
    pub certificate: IssuedCertificate,
    /// Unencrypted PKCS#8 PEM: hand it over (in an encrypted bundle) and drop it.
    pub private_key: PrivateKeyPem,
}

impl CertificateAuthority {
    /// Issues a device certificate for the public key of `csr` (PEM or DER
    /// PKCS#10). The CSR must verify and its key satisfy the key policy; nothing
    /// else is taken from it.
    pub fn issue_from_csr(
        &self,
        csr: &[u8],
        params: &IssueParams<'_>,
    ) -> Result<IssuedCertificate, PkiError> {
        let checked = csr::parse(csr)?;
        self.issue_from_checked(&checked, params)
    }

    /// Issues a device certificate for the key of a CSR that [`crate::parse_csr`]
    /// has already parsed and verified (a registration checks its CSR before it
    /// spends anything, and issues from that same check).
    pub fn issue_from_checked(
        &self,
        csr: &CheckedCsr,
        params: &IssueParams<'_>,
    ) -> Result<IssuedCertificate, PkiError> {
        self.issue_for_key(&csr.public_key, csr.key_algorithm, params)
    }

    /// Generates a key pair of `algorithm` and issues its certificate.
    pub fn issue_with_new_key(
        &self,
        algorithm: KeyAlgorithm,
        params: &IssueParams<'_>,
    ) -> Result<GeneratedCredential, PkiError> {
        // Check the cheap parameters before the (slow, for RSA) key generation.
        crl_url(params.public_base_url)?;
        validity(params.now, params.validity_days)?;
        let key = keys::generate(algorithm)?;
        let certificate = self.issue_for_key(&key, algorithm, params)?;
        Ok(GeneratedCredential {
            certificate,
            private_key: PrivateKeyPem::from_key(&key)?,
        })
    }

    fn issue_for_key<T: HasPublic>(
        &self,
        key: &PKeyRef<T>,
        key_algorithm: KeyAlgorithm,
        params: &IssueParams<'_>,
    ) -> Result<IssuedCertificate, PkiError> {
        let crl_url = crl_url(params.public_base_url)?;
        let uri = device_uri(params.public_base_url, params.device_id)?;
        let (not_before, requested_end) = validity(params.now, params.validity_days)?;
        let ca_end = to_datetime(self.cert.not_after())?;
        let not_after = requested_end.min(ca_end);
        if not_after <= not_before {
            return Err(PkiError::invalid(
                "validity days",
                "the issuing CA certificate has expired",
            ));
        }
        let id = params.device_id.to_string();

        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let (serial_bn, serial) = random_serial()?;
        b.set_serial_number(&*serial_bn.to_asn1_integer()?)?;
        let mut name = X509Name::builder()?;
        name.append_entry_by_nid(Nid::COMMONNAME, &id)?;
        let name = name.build();
        b.set_subject_name(&name)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(key)?;
        b.set_not_before(&*asn1_time(not_before)?)?;
        b.set_not_after(&*asn1_time(not_after)?)?;

        b.append_extension(BasicConstraints::new().critical().build()?)?;
        let mut usage = KeyUsage::new();
        usage.critical().digital_signature();
        if key_algorithm.is_rsa() {
            usage.key_encipherment();
        }
        b.append_extension(usage.build()?)?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        let san = SubjectAlternativeName::new()
            .uri(&uri)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(san)?;
        b.append_extension(crl_distribution_point(&crl_url)?)?;
        b.append_extension(ocsp_access(&format!(
            "{}{OCSP_PATH}",
            base_url(params.public_base_url)?
        ))?)?;
        b.sign(&self.key, keys::signing_digest(self.key_algorithm))?;
        let cert = b.build();

        let pem = String::from_utf8(cert.to_pem()?)
            .map_err(|_| PkiError::invalid("certificate", "OpenSSL wrote non-UTF-8 PEM"))?;
        Ok(IssuedCertificate {
            pem,
            der: cert.to_der()?,
            serial,
            fingerprint: fingerprint(&cert)?,
            not_before,
            not_after,
            key_algorithm,
            subject: name_to_string(&name),
        })
    }
}

/// The URI name a device certificate carries in its subjectAltName:
/// `<public base url>/devices/<device id>`. It identifies the device under this
/// Onboard installation; it need not resolve. (A `urn:uuid:` URN would be as valid
/// for RFC 5280, but common linters such as pkilint accept only URLs with a host.)
pub fn device_uri(public_base_url: &str, device_id: DeviceId) -> Result<String, PkiError> {
    Ok(format!(
        "{}{DEVICE_URI_PATH}{device_id}",
        base_url(public_base_url)?
    ))
}

/// `<base>/public/v1/crl`.
pub(crate) fn crl_url(base: &str) -> Result<String, PkiError> {
    Ok(format!("{}{CRL_PATH}", base_url(base)?))
}

/// The base must be an absolute http(s) URL of visible ASCII (it goes into
/// IA5Strings), without query or fragment; a trailing `/` is dropped.
fn base_url(base: &str) -> Result<&str, PkiError> {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Err(PkiError::invalid(
            "public base url",
            "must start with https:// or http://",
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(PkiError::invalid("public base url", "has no host"));
    }
    if !base.bytes().all(|b| b.is_ascii_graphic()) || base.contains(['?', '#']) {
        return Err(PkiError::invalid(
            "public base url",
            "must be visible ASCII without spaces, query or fragment",
        ));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaSpec;
    use chrono::{Duration, TimeZone};
    use openssl::x509::{X509KeyUsage, X509};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
    }

    fn params(id: DeviceId) -> IssueParams<'static> {
        IssueParams {
            device_id: id,
            validity_days: 365,
            public_base_url: "https://onboard.example/",
            now: now(),
        }
    }

    fn device_id() -> DeviceId {
        "3f0c2a8e-0000-7000-8000-000000000001".parse().unwrap()
    }

    #[test]
    fn crl_urls_are_checked() {
        assert_eq!(
            crl_url("https://onboard.example/").unwrap(),
            "https://onboard.example/public/v1/crl"
        );
        assert_eq!(
            crl_url("http://10.0.0.1:8080/base").unwrap(),
            "http://10.0.0.1:8080/base/public/v1/crl"
        );
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https://a b",
            "https://x?q=1",
            "onboard",
        ] {
            assert!(crl_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_credential_follows_the_profile() {
        let ca = CertificateAuthority::generate(&CaSpec::new("Test Root CA"), now()).unwrap();
        let cred = ca
            .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id()))
            .unwrap();
        let c = &cred.certificate;
        assert_eq!(c.subject, format!("CN={}", device_id()));
        assert_eq!(c.not_before, now() - Duration::minutes(5));
        assert_eq!(c.not_after, now() + Duration::days(365));
        assert_eq!(c.key_algorithm, KeyAlgorithm::EcdsaP256);
        let x = X509::from_der(&c.der).unwrap();
        assert_eq!(x.to_pem().unwrap(), c.pem.as_bytes());
        assert_eq!(x.key_usage(), Some(X509KeyUsage::DIGITAL_SIGNATURE));
        let sans = x.subject_alt_names().unwrap();
        assert_eq!(
            sans.get(0).unwrap().uri(),
            Some(format!("https://onboard.example/devices/{}", device_id()).as_str())
        );
        assert!(x.verify(&ca.cert.public_key().unwrap()).unwrap());
        assert_eq!(
            x.authority_key_id().unwrap().as_slice(),
            ca.cert.subject_key_id().unwrap().as_slice()
        );
        assert!(format!("{cred:?}").contains("[redacted]"));
        assert!(!format!("{cred:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn validity_is_cut_at_the_ca_end() {
        let mut spec = CaSpec::new("Short CA");
        spec.validity_days = 30;
        let ca = CertificateAuthority::generate(&spec, now()).unwrap();
        let c = ca
            .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id()))
            .unwrap()
            .certificate;
        assert_eq!(c.not_after, now() + Duration::days(30));
        let later = IssueParams {
            now: now() + Duration::days(31),
            ..params(device_id())
        };
        assert!(matches!(
            ca.issue_with_new_key(KeyAlgorithm::EcdsaP256, &later),
            Err(PkiError::InvalidInput { .. })
        ));
    }

    #[test]
    fn serials_differ() {
        let ca = CertificateAuthority::generate(&CaSpec::new("Test Root CA"), now()).unwrap();
        let a = ca
            .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id()))
            .unwrap();
        let b = ca
            .issue_with_new_key(KeyAlgorithm::EcdsaP256, &params(device_id()))
            .unwrap();
        assert_ne!(a.certificate.serial, b.certificate.serial);
        assert_ne!(a.certificate.fingerprint, b.certificate.fingerprint);
    }
}
