//! Device access tokens: compact JWS (RFC 7515) signed with ES256 (ECDSA P-256 with
//! SHA-256, RFC 7518 section 3.4), published as a JWK (RFC 7517) whose `kid` is its
//! RFC 7638 thumbprint.
//!
//! The signing key is derived from the CA's private key (HMAC-SHA256 over the key's
//! DER encoding with a fixed label, the result taken as a P-256 scalar), so every
//! replica that holds the CA signs with the same key and nothing else has to be
//! stored, mounted or backed up. The CA key itself never signs a token. A new CA key
//! gives a new token key, and every token signed with the old one stops verifying.
//!
//! Only the signature and the header are checked here; the claims (issuer,
//! audience, expiry, subject) are the caller's, who knows the clock.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{Private, Public};
use openssl::sha::sha256;
use openssl::sign::Signer;
use serde_json::{json, Value};

use crate::ca::CertificateAuthority;
use crate::error::PkiError;

/// Label of the derivation; a new version of the scheme changes it.
const LABEL: &[u8] = b"onboard device access token signing key v1";

/// Longest token [`TokenKey::verify`] looks at.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token does not verify. The text is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a compact JWS")]
    Malformed,
    #[error("the token is not signed with ES256 by this service's key")]
    WrongKey,
    #[error("the token's signature does not verify")]
    BadSignature,
}

/// The ES256 key that signs device access tokens.
pub struct TokenKey {
    key: EcKey<Private>,
    public: EcKey<Public>,
    x: Vec<u8>,
    y: Vec<u8>,
    kid: String,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

impl TokenKey {
    /// The token key of this CA (see the module documentation).
    pub fn derive(ca: &CertificateAuthority) -> Result<Self, PkiError> {
        let der = zeroize::Zeroizing::new(ca.key.private_key_to_der()?);
        Self::from_secret(&der)
    }

    /// The key derived from `secret` (high-entropy key material).
    pub fn from_secret(secret: &[u8]) -> Result<Self, PkiError> {
        let group = crate::keys::curve_group(onboard_domain::KeyAlgorithm::EcdsaP256)?;
        let mut ctx = BigNumContext::new()?;
        let mut order = BigNum::new()?;
        group.order(&mut order, &mut ctx)?;
        let hmac_key = openssl::pkey::PKey::hmac(secret)?;
        // A 256-bit HMAC output is below the group order with probability
        // 1 - 2^-32; the counter takes the next one otherwise.
        for counter in 0u8..=255 {
            let mut signer = Signer::new(MessageDigest::sha256(), &hmac_key)?;
            signer.update(LABEL)?;
            signer.update(&[counter])?;
            let bytes = zeroize::Zeroizing::new(signer.sign_to_vec()?);
            let d = BigNum::from_slice(&bytes)?;
            if d.num_bits() == 0 || d >= order {
                continue;
            }
            let mut point = EcPoint::new(group)?;
            point.mul_generator2(group, &d, &mut ctx)?;
            let key = EcKey::from_private_components(group, &d, &point)?;
            key.check_key()?;
            let public = EcKey::from_public_key(group, &point)?;
            let mut x = BigNum::new()?;
            let mut y = BigNum::new()?;
            point.affine_coordinates(group, &mut x, &mut y, &mut ctx)?;
            let x = x.to_vec_padded(32)?;
            let y = y.to_vec_padded(32)?;
            // RFC 7638: the required members in lexicographic order, no spaces.
            let thumb = format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(&x),
                b64(&y)
            );
            let kid = b64(&sha256(thumb.as_bytes()));
            return Ok(Self {
                key,
                public,
                x,
                y,
                kid,
            });
        }
        Err(PkiError::invalid(
            "token key",
            "no P-256 scalar could be derived",
        ))
    }

    /// The key id: the JWK's RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK, for `/.well-known/jwks.json`.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(&self.x),
            "y": b64(&self.y),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        })
    }

    /// Signs `claims` into a compact JWS with `typ` (e.g. `at+jwt`, RFC 9068).
    /// The claims must be a JSON object (RFC 7519 section 7.2), as [`Self::verify`]
    /// requires; anything else is refused rather than signed into a token that
    /// never verifies.
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, PkiError> {
        if !claims.is_object() {
            return Err(PkiError::invalid("claims", "must be a JSON object"));
        }
        let header = json!({"alg": "ES256", "typ": typ, "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = EcdsaSig::sign(&sha256(input.as_bytes()), &self.key)?;
        let mut raw = sig.r().to_vec_padded(32)?;
        raw.extend(sig.s().to_vec_padded(32)?);
        Ok(format!("{input}.{}", b64(&raw)))
    }

    /// Checks the header (ES256, this key's `kid`, `typ` when given) and the
    /// signature, and returns the claims. Claims are not checked.
    pub fn verify(&self, token: &str, typ: Option<&str>) -> Result<Value, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let header: Value =
            serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || header.get("kid").and_then(Value::as_str) != Some(self.kid.as_str())
            || header.get("crit").is_some()
        {
            return Err(TokenError::WrongKey);
        }
        if let Some(typ) = typ {
            let got = header.get("typ").and_then(Value::as_str).unwrap_or("");
            if !got.eq_ignore_ascii_case(typ) {
                return Err(TokenError::WrongKey);
            }
        }
        let raw = decode(s)?;
        if raw.len() != 64 {
            return Err(TokenError::BadSignature);
        }
        let verified = (|| -> Result<bool, openssl::error::ErrorStack> {
            let r = BigNum::from_slice(&raw[..32])?;
            let s = BigNum::from_slice(&raw[32..])?;
            let sig = EcdsaSig::from_private_components(r, s)?;
            let signed = &token[..h.len() + 1 + c.len()];
            sig.verify(&sha256(signed.as_bytes()), &self.public)
        })();
        if !matches!(verified, Ok(true)) {
            return Err(TokenError::BadSignature);
        }
        let claims: Value =
            serde_json::from_slice(&decode(c)?).map_err(|_| TokenError::Malformed)?;
        if !claims.is_object() {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_secret(b"a test secret of some length").unwrap()
    }

    #[test]
    fn the_derivation_is_stable_and_depends_on_the_secret() {
        assert_eq!(key().kid(), key().kid());
        assert_eq!(key().jwk(), key().jwk());
        let other = TokenKey::from_secret(b"another secret").unwrap();
        assert_ne!(key().kid(), other.kid());
        let token = other.sign("at+jwt", &json!({"sub": "x"})).unwrap();
        assert_eq!(key().verify(&token, None), Err(TokenError::WrongKey));
    }

    /// Found by the `access_token` fuzz target: `5` was signed into a token that
    /// `verify` refuses as malformed.
    #[test]
    fn claims_that_are_not_an_object_are_never_signed() {
        let k = key();
        for claims in [json!(5), json!("sub"), json!([1]), json!(null)] {
            assert!(
                matches!(
                    k.sign("at+jwt", &claims),
                    Err(PkiError::InvalidInput {
                        field: "claims",
                        ..
                    })
                ),
                "{claims}"
            );
        }
        let token = k.sign("at+jwt", &json!({})).unwrap();
        assert_eq!(k.verify(&token, None), Ok(json!({})));
    }

    #[test]
    fn a_signed_token_verifies_and_any_change_breaks_it() {
        let k = key();
        let token = k.sign("at+jwt", &json!({"sub": "dev", "n": 1})).unwrap();
        assert_eq!(k.verify(&token, Some("at+jwt")).unwrap()["sub"], "dev");
        assert_eq!(k.verify(&token, Some("jwt")), Err(TokenError::WrongKey));
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = format!(
            "{}.{}.{}",
            parts[0],
            b64(br#"{"sub":"other","n":1}"#),
            parts[2]
        );
        assert_eq!(
            k.verify(&forged_claims, None),
            Err(TokenError::BadSignature)
        );
        let none_alg = format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(k.verify(&none_alg, None), Err(TokenError::WrongKey));
        let hs256 = format!(
            "{}.{}.{}",
            b64(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, k.kid()).as_bytes()),
            parts[1],
            parts[2]
        );
        assert_eq!(k.verify(&hs256, None), Err(TokenError::WrongKey));
        assert_eq!(k.verify("a.b", None), Err(TokenError::Malformed));
        assert_eq!(k.verify("a.b.c.d", None), Err(TokenError::Malformed));
        assert_eq!(
            k.verify(&"x".repeat(MAX_TOKEN_BYTES + 1), None),
            Err(TokenError::Malformed)
        );
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[5] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
        assert_eq!(k.verify(&flipped, None), Err(TokenError::BadSignature));
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        let k = key();
        let jwk = k.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(k.kid(), b64(&sha256(canonical.as_bytes())));
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
}
