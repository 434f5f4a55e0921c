//! Mosquitto's password file, in the format `mosquitto_passwd` writes for
//! Mosquitto 2.0: `<username>:$7$<iterations>$<base64 salt>$<base64 hash>`, the
//! hash being PBKDF2-HMAC-SHA512 with a 64-byte output.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use onboard_domain::BrokerGrant;

use std::collections::BTreeMap;

use crate::acl::check_client_id;
use crate::error::BrokerError;

/// The PBKDF2 iteration count [`hash_password`] uses: `mosquitto_passwd`'s default.
/// Onboard's MQTT passwords are random 256-bit tokens, for which more iterations
/// add nothing but broker CPU at every login.
pub const PASSWORD_ITERATIONS: u32 = 101;

/// Salt length in bytes (as `mosquitto_passwd`).
const SALT_LEN: usize = 12;

/// Hashes `password` for Mosquitto's password file (and for
/// [`onboard_domain::BrokerGrant::password_hash`]): `$7$101$<salt>$<hash>` with a
/// fresh random salt.
pub fn hash_password(password: &str) -> Result<String, BrokerError> {
    let salt = onboard_pki::secrets::random_bytes(SALT_LEN)?;
    let hash =
        onboard_pki::mosquitto_password_hash(password.as_bytes(), &salt, PASSWORD_ITERATIONS)?;
    Ok(format!(
        "$7${PASSWORD_ITERATIONS}${}${}",
        STANDARD.encode(&salt),
        STANDARD.encode(&hash)
    ))
}

/// True when `password` is the one `hash` (a [`hash_password`] result) was made
/// from; compared in constant time. Any other hash shape is `false`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", "7", iterations, salt, digest] = parts.as_slice() else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(digest)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(digest),
    ) else {
        return false;
    };
    // Bounded, so a stored hash cannot make a check arbitrarily expensive.
    if iterations == 0 || iterations > 1_000_000 {
        return false;
    }
    match onboard_pki::mosquitto_password_hash(password.as_bytes(), &salt, iterations) {
        Ok(computed) => onboard_pki::secrets::constant_time_eq(&computed, &digest),
        Err(_) => false,
    }
}

/// True for `$7$<iterations>$<salt>$<hash>` (PBKDF2-SHA512) and `$6$<salt>$<hash>`
/// (the older salted SHA-512) with base64 fields, which Mosquitto 2.0 both reads.
pub(crate) fn is_mosquitto_hash(hash: &str) -> bool {
    let b64 = |s: &str| !s.is_empty() && STANDARD.decode(s).is_ok();
    let parts: Vec<&str> = hash.split('$').collect();
    match parts.as_slice() {
        ["", "7", iterations, salt, digest] => {
            iterations.parse::<u32>().is_ok_and(|i| i > 0) && b64(salt) && b64(digest)
        }
        ["", "6", salt, digest] => b64(salt) && b64(digest),
        _ => false,
    }
}

/// A password line is possible for this client id and hash.
pub(crate) fn check_password(
    client_id: &str,
    hash: &str,
    grant: &BrokerGrant,
) -> Result<(), BrokerError> {
    check_client_id(client_id)?;
    if client_id.contains(':') {
        return Err(BrokerError::InvalidGrant(format!(
            "client id {client_id:?} contains ':' and cannot log in with a password"
        )));
    }
    if !is_mosquitto_hash(hash) {
        return Err(BrokerError::InvalidGrant(format!(
            "the password hash of device {} is not in mosquitto_passwd format",
            grant.device_id
        )));
    }
    Ok(())
}

/// The password file: `preamble` (verbatim), then one line per grant that has a
/// password hash. A client id with a `:` cannot be in this file.
pub(crate) fn render(preamble: &str, grants: &[BrokerGrant]) -> Result<String, BrokerError> {
    let mut out = String::new();
    if !preamble.trim().is_empty() {
        out.push_str(preamble.trim_end());
        out.push('\n');
    }
    // Sorted by client id; the last hash given for a client id wins.
    let mut hashes: BTreeMap<&str, (&str, &BrokerGrant)> = BTreeMap::new();
    for g in grants {
        if let Some(hash) = g.password_hash.as_deref() {
            hashes.insert(g.client_id.as_str(), (hash, g));
        }
    }
    for (client_id, (hash, grant)) in hashes {
        check_password(client_id, hash, grant)?;
        out.push_str(client_id);
        out.push(':');
        out.push_str(hash);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::acl::tests::grant;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password("secret").unwrap();
        assert!(verify_password("secret", &h));
        assert!(!verify_password("secreT", &h));
        assert!(!verify_password("", &h));
        assert!(!verify_password("secret", "$6$abc$def"));
        assert!(!verify_password("secret", "plain"));
        let forged = h.replacen("$7$101$", "$7$0$", 1);
        assert!(!verify_password("secret", &forged));
    }

    #[test]
    fn hashes_have_the_mosquitto_format_and_fresh_salts() {
        let a = hash_password("secret").unwrap();
        let b = hash_password("secret").unwrap();
        assert_ne!(a, b);
        assert!(is_mosquitto_hash(&a), "{a}");
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts[1], "7");
        assert_eq!(parts[2], "101");
        assert_eq!(STANDARD.decode(parts[3]).unwrap().len(), 12);
        let digest = STANDARD.decode(parts[4]).unwrap();
        let salt = STANDARD.decode(parts[3]).unwrap();
        assert_eq!(
            digest,
            onboard_pki::mosquitto_password_hash(b"secret", &salt, 101).unwrap()
        );
    }

    #[test]
    fn only_devices_with_hashes_are_listed() {
        let mut with = grant(1);
        with.password_hash = Some(hash_password("pw").unwrap());
        let text = render(
            "onboard-service:$7$101$AAAA$BBBB",
            &[with.clone(), grant(2)],
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            format!("{}:{}", with.client_id, with.password_hash.unwrap())
        );
    }

    #[test]
    fn malformed_hashes_and_colons_are_rejected() {
        let mut g = grant(1);
        g.password_hash = Some("plaintext".into());
        assert!(matches!(
            render("", &[g]),
            Err(BrokerError::InvalidGrant(_))
        ));
        let mut g = grant(1);
        g.client_id = "a:b".into();
        g.password_hash = Some(hash_password("pw").unwrap());
        assert!(render("", &[g]).is_err());
        assert!(is_mosquitto_hash("$6$c2FsdA==$aGFzaA=="));
        assert!(!is_mosquitto_hash("$7$0$c2FsdA==$aGFzaA=="));
        assert!(!is_mosquitto_hash("$7$101$!!$aGFzaA=="));
    }
}
