//! `Settings::validate`: every check a typed field cannot make by itself, each
//! failure naming its setting.

use std::net::SocketAddr;
use std::str::FromStr;

use super::*;

impl Settings {
    /// Checks every value a typed field cannot check by itself.
    pub fn validate(&self) -> Result<(), SettingsError> {
        SocketAddr::from_str(&self.server.bind)
            .map_err(|_| invalid("server.bind", "must be an address like 0.0.0.0:8080"))?;
        check_http_url("server.public_base_url", &self.server.public_base_url)?;
        self.validate_tls()?;
        if self.server.max_body_bytes < 1024 || self.server.max_body_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "server.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        onboard_registry::Backend::from_url(&self.database.url)
            .map_err(|e| invalid("database.url", e.to_string()))?;
        if self.database.max_connections == 0 || self.database.max_connections > 1000 {
            return Err(invalid("database.max_connections", "must be 1 to 1000"));
        }
        if self.database.connect_timeout_seconds == 0 {
            return Err(invalid(
                "database.connect_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.ca.dir.trim().is_empty() {
            return Err(invalid("ca.dir", "must not be empty"));
        }
        if self.assets.dir.trim().is_empty() {
            return Err(invalid("assets.dir", "must not be empty"));
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.assets.max_firmware_bytes) {
            return Err(invalid(
                "assets.max_firmware_bytes",
                "must be between 1024 and 268435456",
            ));
        }
        if self.ca.common_name.trim().is_empty() || self.ca.common_name.len() > 64 {
            return Err(invalid("ca.common_name", "must be 1 to 64 characters"));
        }
        if !(1..=3650).contains(&self.ca.validity_days) {
            return Err(invalid("ca.validity_days", "must be 1 to 3650 days"));
        }
        if !(1..=24 * 366).contains(&self.ca.crl_validity_hours) {
            return Err(invalid("ca.crl_validity_hours", "must be 1 to 8784 hours"));
        }
        if !self.ca.passphrase.is_empty() && !self.ca.passphrase_file.is_empty() {
            return Err(invalid(
                "ca.passphrase",
                "set ca.passphrase or ca.passphrase_file, not both",
            ));
        }
        if self.admin.token_hashes.is_empty() && self.admin.token_file.trim().is_empty() {
            return Err(invalid(
                "admin.token_file",
                "must be set when admin.token_hashes is empty",
            ));
        }
        if self.rate_limit.requests_per_minute > 0 && self.rate_limit.burst == 0 {
            return Err(invalid(
                "rate_limit.burst",
                "must be at least 1 when requests are limited",
            ));
        }
        if self.rate_limit.failures_per_hour > 0 && self.rate_limit.failure_burst == 0 {
            return Err(invalid(
                "rate_limit.failure_burst",
                "must be at least 1 when failures are limited",
            ));
        }
        for (i, hash) in self.admin.token_hashes.iter().enumerate() {
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid(
                    "admin.token_hashes",
                    format!(
                        "entry {} is not a SHA-256 hex digest (64 hex characters)",
                        i + 1
                    ),
                ));
            }
        }
        if !self.broker.mqtt_url.is_empty() {
            let scheme = self.broker.mqtt_url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("mqtt" | "mqtts" | "tcp" | "ssl")) {
                return Err(invalid(
                    "broker.mqtt_url",
                    "must start with mqtt://, mqtts://, tcp:// or ssl://",
                ));
            }
        }
        if self.broker.public_host.trim().is_empty() || self.broker.public_port == 0 {
            return Err(invalid(
                "broker.public_host",
                "broker.public_host and broker.public_port must name where devices connect",
            ));
        }
        if self.broker.kind == BrokerKind::MosquittoFile && self.broker.acl_file.trim().is_empty() {
            return Err(invalid("broker.acl_file", "must be set for mosquitto-file"));
        }
        if self.broker.client_cert_file.is_empty() != self.broker.client_key_file.is_empty() {
            return Err(invalid(
                "broker.client_cert_file",
                "broker.client_cert_file and broker.client_key_file go together",
            ));
        }
        if !self.broker.status_topic.contains('+') || self.broker.status_topic.contains('#') {
            return Err(invalid(
                "broker.status_topic",
                "must be a topic filter with one + where the client id stands, e.g. devices/+/status",
            ));
        }
        if self.broker.kind == BrokerKind::MosquittoDynsec && self.broker.mqtt_url.is_empty() {
            return Err(invalid(
                "broker.mqtt_url",
                "must be set for mosquitto-dynsec",
            ));
        }
        self.aws.validate()?;
        if !(1..=7 * 24 * 60).contains(&self.delivery.download_expiry_minutes) {
            return Err(invalid(
                "delivery.download_expiry_minutes",
                "must be 1 to 10080 minutes",
            ));
        }
        self.rotation
            .cron
            .parse::<onboard_rotation::Schedule>()
            .map_err(|e| invalid("rotation.cron", e.to_string()))?;
        if self.rotation.timeout_seconds == 0 {
            return Err(invalid("rotation.timeout_seconds", "must be at least 1"));
        }
        if self.rotation.max_in_flight == 0 {
            return Err(invalid("rotation.max_in_flight", "must be at least 1"));
        }
        if !self.rotation.secret_key.is_empty() {
            onboard_pki::SealKey::from_hex(self.rotation.secret_key.expose()).map_err(|_| {
                invalid(
                    "rotation.secret_key",
                    "must be 64 hex digits (openssl rand -hex 32)",
                )
            })?;
        }
        if !(1..=300).contains(&self.rotation.notify_timeout_seconds) {
            return Err(invalid(
                "rotation.notify_timeout_seconds",
                "must be 1 to 300",
            ));
        }
        if self.rotation.topic_prefix.is_empty()
            || self
                .rotation
                .topic_prefix
                .contains(|c: char| matches!(c, '#' | '+') || c.is_whitespace())
        {
            return Err(invalid(
                "rotation.topic_prefix",
                "must be a topic without wildcards or spaces",
            ));
        }
        let a = &self.activation;
        if a.revoke_after_hours > 0 && a.report_after_hours > a.revoke_after_hours {
            return Err(invalid(
                "activation.revoke_after_hours",
                "must be at least activation.report_after_hours",
            ));
        }
        if a.revoke_after_hours > 0 && self.broker.mqtt_url.is_empty() {
            // Without a status listener no device ever activates, so the policy
            // would revoke the whole fleet.
            return Err(invalid(
                "activation.revoke_after_hours",
                "needs an activation source: set broker.mqtt_url so the server sees status messages",
            ));
        }
        tracing_filter_is_plausible(&self.log.level)?;
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), SettingsError> {
        let s = &self.server;
        if !s.tls_bind.is_empty() {
            SocketAddr::from_str(&s.tls_bind)
                .map_err(|_| invalid("server.tls_bind", "must be an address like 0.0.0.0:8443"))?;
        }
        if s.tls_cert_file.is_empty() != s.tls_key_file.is_empty() {
            return Err(invalid(
                "server.tls_cert_file",
                "server.tls_cert_file and server.tls_key_file go together",
            ));
        }
        for name in &s.tls_names {
            let ok = name.parse::<std::net::IpAddr>().is_ok()
                || (!name.is_empty()
                    && name.len() <= 253
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*')));
            if !ok {
                return Err(invalid(
                    "server.tls_names",
                    format!("{name:?} is neither a DNS name nor an IP address"),
                ));
            }
        }
        for proxy in &s.trusted_proxies {
            proxy.parse::<std::net::IpAddr>().map_err(|_| {
                invalid(
                    "server.trusted_proxies",
                    format!("{proxy:?} is not an IP address"),
                )
            })?;
        }
        let header_ok = !s.client_cert_header.is_empty()
            && s.client_cert_header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !header_ok {
            return Err(invalid(
                "server.client_cert_header",
                "must be a header name (letters, digits, dashes)",
            ));
        }
        if !(1..=1440).contains(&self.console.idle_timeout_minutes) {
            return Err(invalid(
                "console.idle_timeout_minutes",
                "must be 1 to 1440 minutes",
            ));
        }
        if !(1..=168).contains(&self.console.absolute_timeout_hours) {
            return Err(invalid(
                "console.absolute_timeout_hours",
                "must be 1 to 168 hours",
            ));
        }
        if !(60..=86_400).contains(&self.tokens.lifetime_seconds) {
            return Err(invalid(
                "tokens.lifetime_seconds",
                "must be 60 to 86400 seconds",
            ));
        }
        if self.device.renew_grace_hours == 0 || self.device.renew_grace_hours > 24 * 90 {
            return Err(invalid(
                "device.renew_grace_hours",
                "must be 1 to 2160 hours",
            ));
        }
        // Otherwise the grace-period clean-up could retire the certificate of a
        // device whose rotation is still waiting for it to use the new one.
        if self.rotation.timeout_seconds >= u64::from(self.device.renew_grace_hours) * 3600 {
            return Err(invalid(
                "rotation.timeout_seconds",
                "must be shorter than device.renew_grace_hours",
            ));
        }
        Ok(())
    }
}

pub(super) fn check_http_url(setting: &'static str, url: &str) -> Result<(), SettingsError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') && !url.ends_with('/') => Ok(()),
        _ => Err(invalid(
            setting,
            "must be an http:// or https:// URL with a host and no trailing slash",
        )),
    }
}

fn tracing_filter_is_plausible(level: &str) -> Result<(), SettingsError> {
    let ok = !level.trim().is_empty()
        && level.split(',').all(|part| {
            let lvl = part.rsplit('=').next().unwrap_or("");
            matches!(
                lvl.trim().to_ascii_lowercase().as_str(),
                "trace" | "debug" | "info" | "warn" | "error" | "off"
            ) || (!part.contains('=') && !part.trim().is_empty())
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "log.level",
            "must be a level (trace, debug, info, warn, error) or target=level list",
        ))
    }
}
