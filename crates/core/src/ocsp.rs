//! The OCSP responder (RFC 6960) as the server uses it: answers from the registry,
//! so a revocation shows in the next answer, signed by a delegated responder
//! certificate that is issued on first use and again once half its validity has
//! passed.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{CertificateRepository, RevocationReason, Store};
use onboard_pki::{OcspFailure, OcspResponder, OcspStatus, ParsedOcspRequest};

use crate::app::Onboard;
use crate::ca::pki_error;
use crate::error::CoreError;

/// nextUpdate is this long after thisUpdate.
pub const OCSP_VALIDITY_SECONDS: i64 = 3600;

/// The responder certificate in use; one per process (each replica issues its own,
/// which RFC 6960 allows: every answer carries the certificate that signed it).
#[derive(Debug, Default, Clone)]
pub struct OcspResponderCache(Arc<Mutex<Option<Arc<OcspResponder>>>>);

/// A DER OCSPResponse and what HTTP caching needs to know about it.
#[derive(Debug, Clone)]
pub struct OcspAnswer {
    pub der: Vec<u8>,
    /// Set for successful answers.
    pub this_update: Option<DateTime<Utc>>,
    pub next_update: Option<DateTime<Utc>>,
    /// False when the request had a nonce (the answer is for that request only) or
    /// the answer is an error.
    pub cacheable: bool,
}

impl OcspAnswer {
    fn failure(f: OcspFailure) -> Self {
        Self {
            der: f.to_der(),
            this_update: None,
            next_update: None,
            cacheable: false,
        }
    }
}

impl Onboard {
    fn ocsp_responder(&self, cache: &OcspResponderCache) -> Result<Arc<OcspResponder>, CoreError> {
        let now = self.clock().now();
        let mut current = cache.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = current.as_ref().filter(|r| !r.needs_renewal(now)) {
            return Ok(r.clone());
        }
        let responder = Arc::new(self.ca()?.issue_ocsp_responder(now).map_err(pki_error)?);
        tracing::info!(not_after = %responder.not_after(), "issued an OCSP responder certificate");
        *current = Some(responder.clone());
        Ok(responder)
    }

    /// The OCSP responder certificate in use (PEM), issued if there is none yet.
    pub fn ocsp_responder_pem(&self, cache: &OcspResponderCache) -> Result<String, CoreError> {
        self.ocsp_responder(cache)?
            .certificate_pem()
            .map_err(pki_error)
    }

    /// Answers a DER OCSP request: `malformedRequest` when it cannot be read,
    /// `unauthorized` when no certificate it asks about is from our issuing CA,
    /// `internalError` when the registry or the signing fails; otherwise a signed
    /// basic response with good / revoked (time and reason) / unknown per
    /// certificate, as the registry says now.
    pub fn answer_ocsp(&self, cache: &OcspResponderCache, der: &[u8]) -> OcspAnswer {
        let request = match ParsedOcspRequest::from_der(der) {
            Ok(r) => r,
            Err(f) => return OcspAnswer::failure(f),
        };
        match self.try_answer_ocsp(cache, &request) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::error!(error = %e, "OCSP answer failed");
                OcspAnswer::failure(OcspFailure::InternalError)
            }
        }
    }

    fn try_answer_ocsp(
        &self,
        cache: &OcspResponderCache,
        request: &ParsedOcspRequest,
    ) -> Result<OcspAnswer, CoreError> {
        let ca = self.ca()?;
        let serials = ca.ocsp_serials(request).map_err(pki_error)?;
        if serials.iter().all(Option::is_none) {
            return Ok(OcspAnswer::failure(OcspFailure::Unauthorized));
        }
        let issuer = ca.subject();
        let statuses = self
            .store()
            .read(|tx| -> Result<Vec<OcspStatus>, CoreError> {
                let mut out = Vec::with_capacity(serials.len());
                for serial in &serials {
                    let status = match serial {
                        None => OcspStatus::Unknown,
                        Some(s) => match tx.certificate_by_serial(s)? {
                            Some(c) if c.issuer == issuer => match c.revoked_at {
                                Some(at) => OcspStatus::Revoked {
                                    at,
                                    reason: c
                                        .revocation_reason
                                        .unwrap_or(RevocationReason::Unspecified),
                                },
                                None => OcspStatus::Good,
                            },
                            _ => OcspStatus::Unknown,
                        },
                    };
                    out.push(status);
                }
                Ok(out)
            })?;
        let responder = self.ocsp_responder(cache)?;
        let now = self.clock().now();
        let next_update = now + Duration::seconds(OCSP_VALIDITY_SECONDS);
        let der = ca
            .ocsp_response(&responder, request, &statuses, now, next_update)
            .map_err(pki_error)?;
        Ok(OcspAnswer {
            der,
            this_update: Some(now),
            next_update: Some(next_update),
            cacheable: !request.has_nonce(),
        })
    }
}
