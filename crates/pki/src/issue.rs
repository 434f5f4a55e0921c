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
use der::asn1::{
    Any, BitString, GeneralizedTime, Ia5String, OctetString, SetOfVec, UtcTime, Utf8StringRef,
};
use der::oid::db::rfc4519::CN;
use der::oid::db::rfc5280::ID_KP_CLIENT_AUTH;
use der::oid::{AssociatedOid, ObjectIdentifier};
use der::{Decode, Encode};
use onboard_domain::{CertSerial, DeviceId, Fingerprint, KeyAlgorithm};
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::sign::Signer;
use openssl::x509::X509Ref;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::constraints::BasicConstraints;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, CrlDistributionPoints, ExtendedKeyUsage,
    KeyUsage, KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned,
};
use x509_cert::time::{Time, Validity};

use crate::ca::CertificateAuthority;
use crate::csr::{self, CheckedCsr};
use crate::error::PkiError;
use crate::keys::{self, PrivateKeyPem};
use crate::ocsp::OpensslSigner;
use crate::x509util::{
    crl_distribution_point, fingerprint_of_der, ocsp_access, random_serial_bytes, tlv, to_datetime,
    validity,
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
        self.issue_for_spki(csr.spki.clone(), csr.key_algorithm, params)
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
        let spki = SubjectPublicKeyInfoOwned::from_der(&key.public_key_to_der()?)?;
        self.issue_for_spki(spki, key_algorithm, params)
    }

    /// Builds the TBSCertificate with RustCrypto's `x509-cert` types (the issuer's
    /// name, the authority key identifier and the signature algorithm encoded once
    /// per CA, see [`IssuerParts`]) and signs its DER with the CA key through
    /// OpenSSL. OpenSSL's `X509Builder` did the same in more than twice the CPU: it
    /// parses and re-encodes every extension, and on OpenSSL 3.0 the public key
    /// goes through the encoder framework (see `docs/benchmarks.md`).
    fn issue_for_spki(
        &self,
        spki: SubjectPublicKeyInfoOwned,
        key_algorithm: KeyAlgorithm,
        params: &IssueParams<'_>,
    ) -> Result<IssuedCertificate, PkiError> {
        let base = base_url(params.public_base_url)?;
        let crl_url = format!("{base}{CRL_PATH}");
        let uri = format!("{base}{DEVICE_URI_PATH}{}", params.device_id);
        let (not_before, requested_end) = validity(params.now, params.validity_days)?;
        let not_after = requested_end.min(self.issuer.not_after);
        if not_after <= not_before {
            return Err(PkiError::invalid(
                "validity days",
                "the issuing CA certificate has expired",
            ));
        }
        let id = params.device_id.to_string();
        let (serial_bytes, serial) = random_serial_bytes()?;

        let mut usage = KeyUsages::DigitalSignature.into();
        if key_algorithm.is_rsa() {
            usage |= KeyUsages::KeyEncipherment;
        }
        // SKI: SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2, method 1), as
        // OpenSSL computes it.
        let ski = openssl::hash::hash(MessageDigest::sha1(), spki.subject_public_key.raw_bytes())?;
        let extensions = vec![
            extension(
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                true,
            )?,
            extension(&KeyUsage(usage), true)?,
            extension(&ExtendedKeyUsage(vec![ID_KP_CLIENT_AUTH]), false)?,
            extension(&SubjectKeyIdentifier(OctetString::new(&*ski)?), false)?,
            self.issuer.authority_key_id.clone(),
            extension(
                &SubjectAltName(vec![GeneralName::UniformResourceIdentifier(
                    Ia5String::new(&uri)?,
                )]),
                false,
            )?,
            raw_extension(
                CrlDistributionPoints::OID,
                &crl_distribution_point(&crl_url),
            )?,
            raw_extension(
                AuthorityInfoAccessSyntax::OID,
                &ocsp_access(&format!("{base}{OCSP_PATH}")),
            )?,
        ];
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&serial_bytes)?,
            signature: self.issuer.signature_algorithm.clone(),
            issuer: self.issuer.name.clone(),
            validity: Validity {
                not_before: x509_time(not_before)?,
                not_after: x509_time(not_after)?,
            },
            subject: common_name(&id)?,
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(extensions),
        }
        .to_der()?;
        let mut signer = Signer::new(keys::signing_digest(self.key_algorithm), &self.key)?;
        signer.update(&tbs)?;
        let signature = BitString::from_bytes(&signer.sign_to_vec()?)?.to_der()?;
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
        let mut body = tbs;
        body.extend_from_slice(&self.issuer.signature_algorithm_der);
        body.extend_from_slice(&signature);
        let der = tlv(0x30, &body);
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der)
            .map_err(|e| PkiError::Der(e.to_string()))?;
        Ok(IssuedCertificate {
            pem,
            fingerprint: fingerprint_of_der(&der)?,
            der,
            serial,
            not_before,
            not_after,
            key_algorithm,
            subject: format!("CN={id}"),
        })
    }
}

/// What every certificate a CA issues carries of it, encoded once when the CA is
/// loaded.
pub(crate) struct IssuerParts {
    /// The CA certificate's subject, the issued certificates' issuer.
    name: Name,
    /// authorityKeyIdentifier with the CA certificate's subject key identifier.
    authority_key_id: Extension,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature_algorithm_der: Vec<u8>,
    /// The CA certificate's end: nothing it issues outlasts it.
    not_after: DateTime<Utc>,
}

impl IssuerParts {
    pub(crate) fn new(
        cert: &X509Ref,
        key: &PKey<Private>,
        key_algorithm: KeyAlgorithm,
    ) -> Result<Self, PkiError> {
        let key_id = cert
            .subject_key_id()
            .ok_or_else(|| PkiError::InvalidCaCertificate {
                certificate: "the issuing CA".into(),
                reason: "it has no subject key identifier".into(),
            })?;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(key_id.as_slice())?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        let signature_algorithm = OpensslSigner::new(key, key_algorithm)
            .signature_algorithm_identifier()
            .map_err(|_| PkiError::invalid("CA key", "no signature algorithm for it"))?;
        Ok(Self {
            name: Name::from_der(&cert.subject_name().to_der()?)?,
            authority_key_id: extension(&aki, false)?,
            signature_algorithm_der: signature_algorithm.to_der()?,
            signature_algorithm,
            not_after: to_datetime(cert.not_after())?,
        })
    }
}

fn extension<T: Encode + AssociatedOid>(value: &T, critical: bool) -> Result<Extension, PkiError> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

fn raw_extension(oid: ObjectIdentifier, der: &[u8]) -> Result<Extension, PkiError> {
    Ok(Extension {
        extn_id: oid,
        critical: false,
        extn_value: OctetString::new(der)?,
    })
}

/// `CN=<value>` as one UTF8String attribute, as OpenSSL writes it.
fn common_name(value: &str) -> Result<Name, PkiError> {
    let cn = AttributeTypeAndValue {
        oid: CN,
        value: Any::from(Utf8StringRef::new(value)?),
    };
    Ok(RdnSequence(vec![RelativeDistinguishedName(
        SetOfVec::try_from(vec![cn])?,
    )]))
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5).
fn x509_time(t: DateTime<Utc>) -> Result<Time, PkiError> {
    let secs =
        u64::try_from(t.timestamp()).map_err(|_| PkiError::invalid("time", "before 1970"))?;
    let since = std::time::Duration::from_secs(secs);
    Ok(match UtcTime::from_unix_duration(since) {
        Ok(utc) => Time::UtcTime(utc),
        Err(_) => Time::GeneralTime(GeneralizedTime::from_unix_duration(since)?),
    })
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
    fn the_key_identifiers_and_the_key_are_what_openssl_reads() {
        let ca = CertificateAuthority::generate(&CaSpec::new("Test Root CA"), now()).unwrap();
        let key = keys::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ec = key.ec_key().unwrap();
        // A CSR whose point is compressed: the certificate carries it uncompressed.
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let compressed = ec
            .public_key()
            .to_bytes(
                ec.group(),
                openssl::ec::PointConversionForm::COMPRESSED,
                &mut ctx,
            )
            .unwrap();
        assert_eq!(compressed.len(), 33);
        let mut b = openssl::x509::X509ReqBuilder::new().unwrap();
        b.set_pubkey(&key).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let req = b.build().to_der().unwrap();
        // Rebuild the request info with the compressed point and sign it again.
        let mut info = x509_cert::request::CertReq::from_der(&req).unwrap().info;
        info.public_key.subject_public_key = BitString::from_bytes(&compressed).unwrap();
        let info_der = info.to_der().unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
        signer.update(&info_der).unwrap();
        let signature = signer.sign_to_vec().unwrap();
        let csr = x509_cert::request::CertReq {
            info,
            algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
                parameters: None,
            },
            signature: BitString::from_bytes(&signature).unwrap(),
        }
        .to_der()
        .unwrap();
        let checked = crate::parse_csr(&csr).unwrap();
        let issued = ca
            .issue_from_checked(&checked, &params(device_id()))
            .unwrap();
        let x = X509::from_der(&issued.der).unwrap();
        assert!(x.public_key().unwrap().public_eq(&key));
        let bits = SubjectPublicKeyInfoOwned::from_der(
            &x.public_key().unwrap().public_key_to_der().unwrap(),
        )
        .unwrap()
        .subject_public_key;
        assert_eq!(bits.raw_bytes().len(), 65, "uncompressed");
        let sha1 = openssl::hash::hash(MessageDigest::sha1(), bits.raw_bytes()).unwrap();
        assert_eq!(x.subject_key_id().unwrap().as_slice(), &*sha1);
        assert_eq!(
            x.authority_key_id().unwrap().as_slice(),
            ca.cert.subject_key_id().unwrap().as_slice()
        );
        assert!(x.verify(&ca.cert.public_key().unwrap()).unwrap());
        assert_eq!(x.to_pem().unwrap(), issued.pem.as_bytes());
        assert_eq!(
            issued.fingerprint.as_str(),
            hex::encode(x.digest(MessageDigest::sha256()).unwrap())
        );
    }

    #[test]
    fn times_from_2050_are_generalized() {
        let start = Utc.with_ymd_and_hms(2049, 6, 1, 0, 0, 0).unwrap();
        let mut spec = CaSpec::new("Long CA");
        spec.validity_days = 36_500;
        let ca = CertificateAuthority::generate(&spec, start).unwrap();
        let p = IssueParams {
            now: start,
            ..params(device_id())
        };
        let c = ca
            .issue_with_new_key(KeyAlgorithm::EcdsaP256, &p)
            .unwrap()
            .certificate;
        let parsed = x509_cert::Certificate::from_der(&c.der).unwrap();
        let validity = parsed.tbs_certificate.validity;
        assert!(matches!(validity.not_before, Time::UtcTime(_)));
        assert!(matches!(validity.not_after, Time::GeneralTime(_)));
        let x = X509::from_der(&c.der).unwrap();
        assert_eq!(
            to_datetime(x.not_after()).unwrap(),
            start + Duration::days(365)
        );
        assert_eq!(
            to_datetime(x.not_before()).unwrap(),
            start - Duration::minutes(5)
        );
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
