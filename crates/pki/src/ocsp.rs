//! OCSP (RFC 6960): request parsing and signed basic responses.
//!
//! The openssl crate parses OCSP but cannot sign a basic response, so responses are
//! built with RustCrypto's `x509-ocsp` and signed by [`OpensslSigner`], an adapter
//! over an openssl key (ECDSA with SHA-256/SHA-384 as DER signatures, RSA PKCS#1
//! v1.5 with SHA-256).
//!
//! Responses are signed by a delegated responder certificate
//! ([`CertificateAuthority::issue_ocsp_responder`]): issued by the CA with
//! extendedKeyUsage id-kp-OCSPSigning and id-pkix-ocsp-nocheck, so the CA key signs
//! only certificates and CRLs, and a responder key that leaks is worth at most its
//! short validity. Its key lives only in memory; callers issue a new one when
//! [`OcspResponder::needs_renewal`] says so.

use chrono::{DateTime, Duration, Utc};
use der::asn1::{BitString, GeneralizedTime, ObjectIdentifier};
use der::{Decode, Encode};
use onboard_domain::{CertSerial, KeyAlgorithm, RevocationReason};
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer as OpensslSign;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509};
use x509_cert::ext::pkix::CrlReason;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SignatureBitStringEncoding,
};
use x509_ocsp::builder::OcspResponseBuilder;
use x509_ocsp::{
    CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, RevokedInfo, SingleResponse,
};

use crate::ca::CertificateAuthority;
use crate::error::PkiError;
use crate::keys;
use crate::x509util::{
    asn1_time, extension_from_der, random_serial, tlv, to_datetime, truncate, validity,
};

/// The largest OCSP request we read (a request for a handful of certificates is a few
/// hundred octets).
pub const MAX_OCSP_REQUEST_BYTES: usize = 8 * 1024;

/// The most certificates one request may ask about.
pub const MAX_OCSP_REQUESTS: usize = 16;

/// How long a delegated responder certificate is valid.
pub const RESPONDER_VALIDITY_DAYS: u32 = 30;

const OID_OCSP_NOCHECK: &str = "1.3.6.1.5.5.7.48.1.5";
const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// Why no status can be given: the OCSPResponseStatus of an unsuccessful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspFailure {
    /// The request is not a DER OCSPRequest, is too large, or asks about nothing or
    /// too much.
    MalformedRequest,
    /// None of the certificates asked about is from our issuing CA.
    Unauthorized,
    /// Something failed on our side.
    InternalError,
}

impl OcspFailure {
    /// The DER OCSPResponse that carries only this status.
    pub fn to_der(self) -> Vec<u8> {
        let response = match self {
            Self::MalformedRequest => OcspResponse::malformed_request(),
            Self::Unauthorized => OcspResponse::unauthorized(),
            Self::InternalError => OcspResponse::internal_error(),
        };
        // The three responses are fixed values: encoding cannot fail. Fall back to
        // the hand-encoded internalError (SEQUENCE { ENUMERATED 2 }) regardless.
        response
            .to_der()
            .unwrap_or_else(|_| vec![0x30, 0x03, 0x0a, 0x01, 0x02])
    }
}

/// A parsed OCSP request: what it asks about and its nonce.
#[derive(Debug, Clone)]
pub struct ParsedOcspRequest {
    ids: Vec<CertId>,
    nonce: Option<x509_ocsp::ext::Nonce>,
}

impl ParsedOcspRequest {
    /// Parses a DER OCSPRequest. Signed requests are accepted; their signature is
    /// not checked (the answers are public).
    pub fn from_der(der: &[u8]) -> Result<Self, OcspFailure> {
        if der.is_empty() || der.len() > MAX_OCSP_REQUEST_BYTES {
            return Err(OcspFailure::MalformedRequest);
        }
        let request = OcspRequest::from_der(der).map_err(|_| OcspFailure::MalformedRequest)?;
        let ids: Vec<CertId> = request
            .tbs_request
            .request_list
            .iter()
            .map(|r| r.req_cert.clone())
            .collect();
        if ids.is_empty() || ids.len() > MAX_OCSP_REQUESTS {
            return Err(OcspFailure::MalformedRequest);
        }
        Ok(Self {
            ids,
            nonce: request.nonce(),
        })
    }

    /// How many certificates the request asks about.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Never true for a parsed request (at least one is required).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether the request carries a nonce (then the response echoes it and must not
    /// be cached).
    pub fn has_nonce(&self) -> bool {
        self.nonce.is_some()
    }
}

/// What the registry says about one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspStatus {
    Good,
    Revoked {
        at: DateTime<Utc>,
        reason: RevocationReason,
    },
    /// Not a certificate we issued.
    Unknown,
}

/// A delegated OCSP signing certificate and its key. `Debug` shows no key.
pub struct OcspResponder {
    cert: X509,
    cert_der: Vec<u8>,
    key: PKey<Private>,
    key_algorithm: KeyAlgorithm,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder")
            .field("key_algorithm", &self.key_algorithm)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl OcspResponder {
    /// The responder certificate as PEM.
    pub fn certificate_pem(&self) -> Result<String, PkiError> {
        String::from_utf8(self.cert.to_pem()?)
            .map_err(|_| PkiError::invalid("certificate", "OpenSSL wrote non-UTF-8 PEM"))
    }

    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// True once half of the validity has passed: issue a new responder then, so a
    /// response never outlives the certificate that signed it.
    pub fn needs_renewal(&self, now: DateTime<Utc>) -> bool {
        let half = (self.not_after - self.not_before) / 2;
        now >= self.not_before + half
    }
}

/// A `signature::Signer` over an openssl private key, for the RustCrypto builders.
pub(crate) struct OpensslSigner<'a> {
    key: &'a PKey<Private>,
    algorithm: KeyAlgorithm,
}

impl<'a> OpensslSigner<'a> {
    pub(crate) fn new(key: &'a PKey<Private>, algorithm: KeyAlgorithm) -> Self {
        Self { key, algorithm }
    }
}

/// A signature as openssl produces it: DER ECDSA-Sig-Value or the RSA octets.
pub(crate) struct OpensslSignature(Vec<u8>);

impl SignatureBitStringEncoding for OpensslSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl signature::Signer<OpensslSignature> for OpensslSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<OpensslSignature, signature::Error> {
        let mut signer = OpensslSign::new(keys::signing_digest(self.algorithm), self.key)
            .map_err(|_| signature::Error::new())?;
        signer.update(msg).map_err(|_| signature::Error::new())?;
        let sig = signer.sign_to_vec().map_err(|_| signature::Error::new())?;
        Ok(OpensslSignature(sig))
    }
}

impl DynSignatureAlgorithmIdentifier for OpensslSigner<'_> {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        Ok(match self.algorithm {
            KeyAlgorithm::EcdsaP256 => AlgorithmIdentifierOwned {
                oid: OID_ECDSA_SHA256,
                parameters: None,
            },
            KeyAlgorithm::EcdsaP384 => AlgorithmIdentifierOwned {
                oid: OID_ECDSA_SHA384,
                parameters: None,
            },
            _ => AlgorithmIdentifierOwned {
                oid: OID_RSA_SHA256,
                parameters: Some(der::Any::from(der::asn1::Null)),
            },
        })
    }
}

fn digest_for(oid: &ObjectIdentifier) -> Option<MessageDigest> {
    match *oid {
        OID_SHA1 => Some(MessageDigest::sha1()),
        OID_SHA256 => Some(MessageDigest::sha256()),
        OID_SHA384 => Some(MessageDigest::sha384()),
        OID_SHA512 => Some(MessageDigest::sha512()),
        _ => None,
    }
}

fn generalized(t: DateTime<Utc>) -> Result<OcspGeneralizedTime, PkiError> {
    let secs = u64::try_from(truncate(t).timestamp())
        .map_err(|_| PkiError::invalid("time", "before 1970"))?;
    let time = GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_err(|_| PkiError::invalid("time", "out of range for GeneralizedTime"))?;
    Ok(OcspGeneralizedTime(time))
}

fn crl_reason(reason: RevocationReason) -> CrlReason {
    match reason {
        RevocationReason::Unspecified => CrlReason::Unspecified,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::CaCompromise => CrlReason::CaCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::CertificateHold => CrlReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => CrlReason::AaCompromise,
    }
}

fn der_error(e: impl std::fmt::Display) -> PkiError {
    PkiError::invalid("OCSP response", e.to_string())
}

impl CertificateAuthority {
    /// Issues a delegated OCSP responder certificate: `CN=<CA CN> OCSP Responder`, a
    /// new key of the CA's algorithm, basicConstraints critical CA:FALSE, keyUsage
    /// critical digitalSignature, extendedKeyUsage id-kp-OCSPSigning,
    /// id-pkix-ocsp-nocheck, SKI, AKI; valid [`RESPONDER_VALIDITY_DAYS`] days (cut
    /// at the CA's end).
    pub fn issue_ocsp_responder(&self, now: DateTime<Utc>) -> Result<OcspResponder, PkiError> {
        let (not_before, requested_end) = validity(now, RESPONDER_VALIDITY_DAYS)?;
        let not_after = requested_end.min(to_datetime(self.cert.not_after())?);
        if not_after <= not_before {
            return Err(PkiError::invalid(
                "validity days",
                "the issuing CA certificate has expired",
            ));
        }
        let key = keys::generate(self.key_algorithm)?;
        let ca_cn = self
            .cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
            .unwrap_or_else(|| "Onboard".into());
        // ub-common-name is 64 characters.
        let mut cn = format!("{ca_cn} OCSP Responder");
        if cn.chars().count() > 64 {
            cn = "Onboard OCSP Responder".into();
        }
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let (serial_bn, _) = random_serial()?;
        b.set_serial_number(&*serial_bn.to_asn1_integer()?)?;
        let mut name = X509Name::builder()?;
        name.append_entry_by_nid(Nid::COMMONNAME, &cn)?;
        let name = name.build();
        b.set_subject_name(&name)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*asn1_time(not_before)?)?;
        b.set_not_after(&*asn1_time(not_after)?)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().other("OCSPSigning").build()?)?;
        b.append_extension(extension_from_der(
            OID_OCSP_NOCHECK,
            false,
            &tlv(0x05, &[]),
        )?)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        b.sign(&self.key, keys::signing_digest(self.key_algorithm))?;
        let cert = b.build();
        Ok(OcspResponder {
            cert_der: cert.to_der()?,
            cert,
            key,
            key_algorithm: self.key_algorithm,
            not_before,
            not_after,
        })
    }

    /// The serial of each certificate the request asks about, in request order;
    /// `None` where the CertID names another issuer (or a hash we do not know).
    pub fn ocsp_serials(
        &self,
        request: &ParsedOcspRequest,
    ) -> Result<Vec<Option<CertSerial>>, PkiError> {
        let ca = x509_cert::Certificate::from_der(&self.cert.to_der()?).map_err(der_error)?;
        let name_der = ca.tbs_certificate.subject.to_der().map_err(der_error)?;
        let key_bits = ca
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let mut out = Vec::with_capacity(request.ids.len());
        for id in &request.ids {
            let Some(md) = digest_for(&id.hash_algorithm.oid) else {
                out.push(None);
                continue;
            };
            let ours = hash(md, &name_der)?.as_ref() == id.issuer_name_hash.as_bytes()
                && hash(md, &key_bits)?.as_ref() == id.issuer_key_hash.as_bytes();
            out.push(if ours { serial_from(id) } else { None });
        }
        Ok(out)
    }

    /// Signs the basic response to `request` with `responder`: one SingleResponse per
    /// CertID (in request order, `statuses` index for index; CertIDs of another
    /// issuer answer `unknown`), thisUpdate = `now`, nextUpdate = `next_update`,
    /// producedAt = `now`, the request's nonce echoed, the responder certificate
    /// included.
    pub fn ocsp_response(
        &self,
        responder: &OcspResponder,
        request: &ParsedOcspRequest,
        statuses: &[OcspStatus],
        now: DateTime<Utc>,
        next_update: DateTime<Utc>,
    ) -> Result<Vec<u8>, PkiError> {
        if statuses.len() != request.ids.len() {
            return Err(PkiError::invalid(
                "OCSP statuses",
                "one status per request is needed",
            ));
        }
        if next_update <= now {
            return Err(PkiError::invalid("next update", "must be later than now"));
        }
        let responder_cert =
            x509_cert::Certificate::from_der(&responder.cert_der).map_err(der_error)?;
        let this_update = generalized(now)?;
        let next = generalized(next_update)?;
        let mut builder = OcspResponseBuilder::new(responder_cert.tbs_certificate.subject.clone());
        for (id, status) in request.ids.iter().zip(statuses) {
            let status = match status {
                OcspStatus::Good => CertStatus::good(),
                OcspStatus::Unknown => CertStatus::unknown(),
                OcspStatus::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
                    revocation_time: generalized(*at)?,
                    revocation_reason: Some(crl_reason(*reason)),
                }),
            };
            builder = builder.with_single_response(
                SingleResponse::new(id.clone(), status, this_update).with_next_update(next),
            );
        }
        if let Some(nonce) = &request.nonce {
            builder = builder.with_extension(nonce.clone()).map_err(der_error)?;
        }
        let mut signer = OpensslSigner::new(&responder.key, responder.key_algorithm);
        let response = builder
            .sign(&mut signer, Some(vec![responder_cert]), this_update)
            .map_err(der_error)?;
        response.to_der().map_err(der_error)
    }
}

/// The CertID's serial as ours (uppercase hex of the positive value), or `None` when
/// it cannot be one of our serials.
fn serial_from(id: &CertId) -> Option<CertSerial> {
    let bytes = id.serial_number.as_bytes();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        return None; // negative
    }
    let start = bytes.iter().take_while(|b| **b == 0).count();
    let magnitude = &bytes[start..];
    if magnitude.is_empty() {
        return None;
    }
    CertSerial::parse(&hex::encode_upper(magnitude)).ok()
}

/// How long an answer may be cached: until `next_update`, at most `max`.
pub fn ocsp_max_age(now: DateTime<Utc>, next_update: DateTime<Utc>, max: Duration) -> Duration {
    (next_update - now).clamp(Duration::zero(), max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaSpec, IssueParams};
    use chrono::TimeZone;
    use onboard_domain::DeviceId;
    use openssl::ocsp::{
        OcspCertId, OcspCertStatus, OcspFlag, OcspRequest as SslRequest,
        OcspResponse as SslResponse, OcspResponseStatus, OcspRevokedStatus,
    };
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
    }

    fn setup(alg: KeyAlgorithm) -> (CertificateAuthority, X509) {
        let mut spec = CaSpec::new("Test CA");
        spec.key_algorithm = alg;
        let ca = CertificateAuthority::generate(&spec, now()).unwrap();
        let issued = ca
            .issue_with_new_key(
                KeyAlgorithm::EcdsaP256,
                &IssueParams {
                    device_id: "3f0c2a8e-0000-7000-8000-000000000001"
                        .parse::<DeviceId>()
                        .unwrap(),
                    validity_days: 30,
                    public_base_url: "https://onboard.example",
                    now: now(),
                },
            )
            .unwrap();
        (ca, X509::from_der(&issued.certificate.der).unwrap())
    }

    fn request_for(ca: &CertificateAuthority, cert: &X509, nonce: bool) -> Vec<u8> {
        let mut req = SslRequest::new().unwrap();
        let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, &ca.cert).unwrap();
        req.add_id(id).unwrap();
        if nonce {
            // openssl has no safe nonce setter: build the request with x509-ocsp.
            let mut parsed = OcspRequest::from_der(&req.to_der().unwrap()).unwrap();
            let n = x509_ocsp::ext::Nonce::new(vec![7u8; 16]).unwrap();
            use x509_cert::ext::AsExtension;
            let ext = n
                .to_extension(&x509_cert::name::Name::default(), &[])
                .unwrap();
            parsed.tbs_request.request_extensions = Some(vec![ext]);
            return parsed.to_der().unwrap();
        }
        req.to_der().unwrap()
    }

    fn verify(ca: &CertificateAuthority, cert: &X509, der: &[u8]) -> (OcspCertStatus, Option<i32>) {
        let resp = SslResponse::from_der(der).unwrap();
        assert_eq!(resp.status(), OcspResponseStatus::SUCCESSFUL);
        let basic = resp.basic().unwrap();
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.cert.clone()).unwrap();
        let store = store.build();
        let certs = Stack::new().unwrap();
        basic.verify(&certs, &store, OcspFlag::empty()).unwrap();
        let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, &ca.cert).unwrap();
        let status = basic.find_status(&id).unwrap();
        let reason = (status.status == OcspCertStatus::REVOKED).then(|| status.reason.as_raw());
        (status.status, reason)
    }

    #[test]
    fn responses_verify_for_every_ca_algorithm() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
        ] {
            let (ca, cert) = setup(alg);
            let responder = ca.issue_ocsp_responder(now()).unwrap();
            let req = ParsedOcspRequest::from_der(&request_for(&ca, &cert, false)).unwrap();
            let serials = ca.ocsp_serials(&req).unwrap();
            assert_eq!(
                serials,
                vec![Some(crate::x509util::serial_of(&cert).unwrap())]
            );
            let next = now() + Duration::hours(1);
            let good = ca
                .ocsp_response(&responder, &req, &[OcspStatus::Good], now(), next)
                .unwrap();
            assert_eq!(verify(&ca, &cert, &good), (OcspCertStatus::GOOD, None));
            let revoked = ca
                .ocsp_response(
                    &responder,
                    &req,
                    &[OcspStatus::Revoked {
                        at: now(),
                        reason: RevocationReason::KeyCompromise,
                    }],
                    now(),
                    next,
                )
                .unwrap();
            assert_eq!(
                verify(&ca, &cert, &revoked),
                (
                    OcspCertStatus::REVOKED,
                    Some(OcspRevokedStatus::KEY_COMPROMISE.as_raw())
                )
            );
            let unknown = ca
                .ocsp_response(&responder, &req, &[OcspStatus::Unknown], now(), next)
                .unwrap();
            assert_eq!(verify(&ca, &cert, &unknown).0, OcspCertStatus::UNKNOWN);
        }
    }

    #[test]
    fn the_nonce_is_echoed() {
        let (ca, cert) = setup(KeyAlgorithm::EcdsaP256);
        let responder = ca.issue_ocsp_responder(now()).unwrap();
        let req = ParsedOcspRequest::from_der(&request_for(&ca, &cert, true)).unwrap();
        assert!(req.has_nonce());
        let der = ca
            .ocsp_response(
                &responder,
                &req,
                &[OcspStatus::Good],
                now(),
                now() + Duration::hours(1),
            )
            .unwrap();
        let resp = OcspResponse::from_der(&der).unwrap();
        let bytes = resp.response_bytes.unwrap();
        let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
        assert_eq!(basic.nonce().unwrap().0.as_bytes(), &[7u8; 16]);
    }

    #[test]
    fn another_issuers_certificate_has_no_serial() {
        let (ca, _) = setup(KeyAlgorithm::EcdsaP256);
        let (other, other_cert) = setup(KeyAlgorithm::EcdsaP256);
        let req = ParsedOcspRequest::from_der(&request_for(&other, &other_cert, false)).unwrap();
        assert_eq!(ca.ocsp_serials(&req).unwrap(), vec![None]);
    }

    #[test]
    fn malformed_requests_are_refused_without_panic() {
        let (ca, cert) = setup(KeyAlgorithm::EcdsaP256);
        let good = request_for(&ca, &cert, true);
        assert!(ParsedOcspRequest::from_der(&good).is_ok());
        assert_eq!(
            ParsedOcspRequest::from_der(&[]).unwrap_err(),
            OcspFailure::MalformedRequest
        );
        assert_eq!(
            ParsedOcspRequest::from_der(&vec![0x30; MAX_OCSP_REQUEST_BYTES + 1]).unwrap_err(),
            OcspFailure::MalformedRequest
        );
        for cut in 0..good.len() {
            assert!(ParsedOcspRequest::from_der(&good[..cut]).is_err());
        }
        // Every single-octet corruption: an error or a request, never a panic.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = ParsedOcspRequest::from_der(&bad);
        }
        // A request that asks about nothing.
        let empty = x509_ocsp::OcspRequest {
            tbs_request: x509_ocsp::TbsRequest {
                version: Default::default(),
                requestor_name: None,
                request_list: vec![],
                request_extensions: None,
            },
            optional_signature: None,
        };
        assert_eq!(
            ParsedOcspRequest::from_der(&empty.to_der().unwrap()).unwrap_err(),
            OcspFailure::MalformedRequest
        );
        for failure in [
            OcspFailure::MalformedRequest,
            OcspFailure::Unauthorized,
            OcspFailure::InternalError,
        ] {
            let resp = SslResponse::from_der(&failure.to_der()).unwrap();
            assert_ne!(resp.status(), OcspResponseStatus::SUCCESSFUL);
        }
    }

    #[test]
    fn the_responder_certificate_is_delegated_and_renews_at_half_life() {
        let (ca, _) = setup(KeyAlgorithm::EcdsaP256);
        let responder = ca.issue_ocsp_responder(now()).unwrap();
        let text = String::from_utf8(responder.cert.to_text().unwrap()).unwrap();
        assert!(text.contains("OCSP Signing"), "{text}");
        assert!(text.contains("OCSP No Check"), "{text}");
        assert!(responder.cert.verify(&ca.key).unwrap());
        assert!(!responder.needs_renewal(now()));
        assert!(responder.needs_renewal(now() + Duration::days(15)));
    }

    #[test]
    fn device_certificates_carry_the_ocsp_url() {
        let (_, cert) = setup(KeyAlgorithm::EcdsaP256);
        let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
        assert!(
            text.contains("OCSP - URI:https://onboard.example/public/v1/ocsp"),
            "{text}"
        );
    }
}
