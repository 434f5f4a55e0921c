//! The formats of the secrets Onboard hands out, and how they are checked. Secrets
//! are stored only as SHA-256 hashes: they carry 256 random bits, so a fast hash is
//! enough (there is nothing to brute-force), and comparisons are constant-time.

use onboard_domain::SecretString;
use onboard_pki::secrets::{constant_time_eq, random_bytes, random_token, sha256_hex};

use crate::error::CoreError;

/// Every bootstrap key starts with this.
pub const BOOTSTRAP_KEY_TAG: &str = "obk_";
/// Every admin token starts with this.
pub const ADMIN_TOKEN_TAG: &str = "oat.";

fn rng_error(e: onboard_pki::PkiError) -> CoreError {
    CoreError::Internal(format!("the random generator failed: {e}"))
}

/// A new bootstrap key: `obk_<16 hex>.<43 base64url>`. The `obk_<16 hex>` part is
/// the public prefix kept in clear for lookup and display; the rest is 256 random
/// bits.
#[derive(Debug)]
pub struct NewSecret {
    pub prefix: String,
    pub secret: SecretString,
    pub hash: String,
}

pub fn new_bootstrap_key() -> Result<NewSecret, CoreError> {
    let prefix = format!(
        "{BOOTSTRAP_KEY_TAG}{}",
        hex_lower(&random_bytes(8).map_err(rng_error)?)
    );
    let secret = format!("{prefix}.{}", random_token().map_err(rng_error)?);
    Ok(NewSecret {
        hash: sha256_hex(secret.as_bytes()),
        prefix,
        secret: SecretString::new(secret),
    })
}

/// The public prefix of a presented bootstrap key, when it has the key's shape.
pub fn bootstrap_key_prefix(presented: &str) -> Option<&str> {
    let (prefix, secret) = presented.split_once('.')?;
    let hex = prefix.strip_prefix(BOOTSTRAP_KEY_TAG)?;
    let shaped = hex.len() == 16
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shaped.then_some(prefix)
}

/// Lowercase hex SHA-256 of `data` (for derived identifiers, not for secrets'
/// storage decisions made elsewhere).
pub fn digest_hex(data: &[u8]) -> String {
    sha256_hex(data)
}

/// Whether `presented` hashes to `hash`, in constant time.
pub fn matches_hash(presented: &str, hash: &str) -> bool {
    constant_time_eq(sha256_hex(presented.as_bytes()).as_bytes(), hash.as_bytes())
}

/// An admin token: `oat.<name>.<43 base64url>`. The name is part of what is hashed,
/// so it cannot be changed without invalidating the token; it names the operator
/// in the audit log.
#[derive(Debug)]
pub struct AdminToken {
    pub name: String,
    pub token: SecretString,
    pub hash: String,
}

pub fn validate_token_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CoreError::Invalid(onboard_domain::InvalidValue::new(
            "name",
            "must be 1 to 32 characters of a-z, 0-9, - and _",
        )))
    }
}

pub fn new_admin_token(name: &str) -> Result<AdminToken, CoreError> {
    validate_token_name(name)?;
    let token = format!(
        "{ADMIN_TOKEN_TAG}{name}.{}",
        random_token().map_err(rng_error)?
    );
    Ok(AdminToken {
        name: name.to_owned(),
        hash: sha256_hex(token.as_bytes()),
        token: SecretString::new(token),
    })
}

/// The admin tokens the server accepts, by hash.
#[derive(Debug, Clone, Default)]
pub struct AdminTokens {
    hashes: Vec<String>,
}

impl AdminTokens {
    pub fn new(hashes: Vec<String>) -> Self {
        Self {
            hashes: hashes.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The token's name when it is one of ours. Every configured hash is compared
    /// (no early exit), so timing says nothing about which one matched.
    pub fn authenticate(&self, presented: &str) -> Option<String> {
        let name = presented
            .strip_prefix(ADMIN_TOKEN_TAG)
            .and_then(|rest| rest.split_once('.'))
            .map(|(name, _)| name)?;
        let digest = sha256_hex(presented.as_bytes());
        let mut found = false;
        for hash in &self.hashes {
            found |= constant_time_eq(digest.as_bytes(), hash.as_bytes());
        }
        found.then(|| name.to_owned())
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_keys_have_a_prefix_and_256_secret_bits() {
        let k = new_bootstrap_key().unwrap();
        assert!(k.prefix.starts_with("obk_") && k.prefix.len() == 20);
        assert_eq!(k.secret.expose().len(), 20 + 1 + 43);
        assert_eq!(
            bootstrap_key_prefix(k.secret.expose()),
            Some(k.prefix.as_str())
        );
        assert!(matches_hash(k.secret.expose(), &k.hash));
        assert!(!matches_hash(&format!("{}x", k.secret.expose()), &k.hash));
        assert_ne!(new_bootstrap_key().unwrap().hash, k.hash);
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        let k = new_bootstrap_key().unwrap();
        let s = k.secret.expose();
        for bad in [
            "",
            "obk_",
            &s[..s.len() - 1],
            &s.replace("obk_", "xyz_"),
            &s.to_uppercase(),
            &format!("{s} "),
        ] {
            assert_eq!(bootstrap_key_prefix(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn admin_tokens_carry_their_name() {
        let t = new_admin_token("ops-team").unwrap();
        assert!(t.token.expose().starts_with("oat.ops-team."));
        let tokens = AdminTokens::new(vec!["0".repeat(64), t.hash.to_uppercase()]);
        assert_eq!(
            tokens.authenticate(t.token.expose()),
            Some("ops-team".into())
        );
        // Renaming the token breaks it.
        let renamed = t.token.expose().replace("ops-team", "root");
        assert_eq!(tokens.authenticate(&renamed), None);
        assert_eq!(tokens.authenticate("Bearer nonsense"), None);
        assert!(new_admin_token("Bad Name").is_err());
        assert!(new_admin_token("").is_err());
    }
}
