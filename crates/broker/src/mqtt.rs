//! How Onboard's own MQTT clients (the dynamic-security admin, the status
//! listener) reach the broker: address, TLS and credentials.

use std::time::Duration;

use onboard_domain::SecretString;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::error::BrokerError;

/// One MQTT connection's settings. `Debug` never shows the key or the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    /// Host name or IP address; with TLS it must be in the broker certificate's
    /// subjectAltName.
    pub host: String,
    pub port: u16,
    /// The MQTT client id. Listeners with `use_username_as_clientid` replace it
    /// by the username.
    pub client_id: String,
    /// The CA chain (PEM) that issued the broker's certificate; `None` connects
    /// without TLS (acceptable on loopback only).
    pub ca_pem: Option<String>,
    /// A client certificate and its private key (PEM), for a listener with
    /// `require_certificate true`.
    pub client_cert: Option<(String, SecretString)>,
    /// Username and password.
    pub credentials: Option<(String, SecretString)>,
    pub keep_alive: Duration,
}

impl std::fmt::Debug for MqttEndpoint {
    /// The CA chain and the certificate as their presence only; the key and the
    /// password never (the username is shown).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("tls", &self.ca_pem.is_some())
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|_| "<certificate and key>"),
            )
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<password>")),
            )
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// `url` as it may appear in a message: everything between the scheme and the
/// last `@` (a user name and password, perhaps with characters a URL would have
/// to escape) is replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let start = url.find("://").map_or(0, |i| i + 3);
    let start = if start <= at { start } else { 0 };
    format!("{}***{}", &url[..start], &url[at..])
}

impl MqttEndpoint {
    /// From a URL as in the settings: `mqtt://host:port` (plain, default port
    /// 1883) or `mqtts://host:port` (TLS, default 8883; `ca_pem` must be set
    /// before connecting). Credentials and certificates are set on the result;
    /// a URL with a user (`mqtts://user:password@host`) is refused, and the
    /// error shows it without the user and password.
    pub fn from_url(url: &str, client_id: impl Into<String>) -> Result<Self, BrokerError> {
        let shown = redact_url(url);
        let bad = |why: &str| BrokerError::InvalidConfig(format!("MQTT URL {shown:?}: {why}"));
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad("must start with mqtt:// or mqtts://"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            return Err(bad(
                "must not carry a user or password (set the broker's username and password settings)",
            ));
        }
        if rest.contains(['/', '?', '#']) {
            return Err(bad("must be scheme://host[:port] without path or user"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("has an unclosed ["))?;
            match after.strip_prefix(':') {
                Some(port) => (host, port),
                None if after.is_empty() => (host, ""),
                None => return Err(bad("has text after the IPv6 address")),
            }
        } else {
            rest.rsplit_once(':').unwrap_or((rest, ""))
        };
        let port = if port.is_empty() {
            default_port
        } else {
            port.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))?
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            client_id: client_id.into(),
            ca_pem: tls.then(String::new),
            client_cert: None,
            credentials: None,
            keep_alive: Duration::from_secs(30),
        })
    }

    /// rumqttc options: clean session, the packet size limits given (the
    /// dynamic-security plugin's answers for a large fleet are big).
    pub(crate) fn options(&self, max_packet: usize) -> Result<MqttOptions, BrokerError> {
        let mut o = MqttOptions::new(&self.client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive);
        o.set_clean_session(true);
        o.set_max_packet_size(max_packet, max_packet);
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user, password.expose());
        }
        match &self.ca_pem {
            Some(ca) if ca.trim().is_empty() => {
                return Err(BrokerError::InvalidConfig(
                    "an mqtts:// endpoint needs the broker's CA chain".into(),
                ))
            }
            Some(ca) => {
                let client_auth = self.client_cert.as_ref().map(|(cert, key)| {
                    (cert.as_bytes().to_vec(), key.expose().as_bytes().to_vec())
                });
                o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                    ca: ca.as_bytes().to_vec(),
                    alpn: None,
                    client_auth,
                }));
            }
            None if self.client_cert.is_some() => {
                return Err(BrokerError::InvalidConfig(
                    "a client certificate needs TLS: set the broker's CA chain".into(),
                ))
            }
            None => {}
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use onboard_domain::PortError;

    #[test]
    fn urls_parse() {
        let e = MqttEndpoint::from_url("mqtts://broker.example:8884", "x").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.ca_pem.is_some()),
            ("broker.example", 8884, true)
        );
        let e = MqttEndpoint::from_url("mqtt://127.0.0.1", "x").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.ca_pem.is_none()),
            ("127.0.0.1", 1883, true)
        );
        let e = MqttEndpoint::from_url("mqtt://[::1]", "x").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 1883));
        let e = MqttEndpoint::from_url("mqtts://[::1]:9000/", "x").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://u@h",
            "mqtt://h:port",
            "mqtt://h/path",
        ] {
            assert!(MqttEndpoint::from_url(bad, "x").is_err(), "{bad}");
        }
        // TLS without a CA chain cannot connect.
        let e = MqttEndpoint::from_url("mqtts://h", "x").unwrap();
        assert!(e.options(1024).is_err());
    }

    #[test]
    fn credentials_in_a_url_never_show() {
        for url in [
            "mqtts://user:s3cr3t-pw@broker.example",
            "mqtts://user:s3cr3t-pw@broker.example:8883",
            "mqtts://user:s3cr3t-pw@broker.example:port",
            "mqtts://user:s3cr3t-pw@broker.example/path",
            "mqtt://user:s3/cr3t-pw@broker.example",
            "mqtt://user:s3cr3t@pw@broker.example",
            "http://user:s3cr3t-pw@broker.example",
            "user:s3cr3t-pw@broker.example",
        ] {
            let e = MqttEndpoint::from_url(url, "x").unwrap_err();
            for shown in [
                e.to_string(),
                format!("{e:?}"),
                PortError::from(e).to_string(),
            ] {
                assert!(!shown.contains("s3cr3t"), "{url}: {shown}");
                assert!(!shown.contains("user:"), "{url}: {shown}");
                assert!(shown.contains("***@"), "{url}: {shown}");
            }
        }
        assert_eq!(redact_url("mqtts://u:p@h:1"), "mqtts://***@h:1".to_string());
        assert_eq!(redact_url("mqtts://h:1"), "mqtts://h:1".to_string());

        // Debug of an endpoint shows neither the password nor the key.
        let mut e = MqttEndpoint::from_url("mqtts://broker.example", "svc").unwrap();
        e.credentials = Some(("svc".into(), SecretString::new("s3cr3t-pw")));
        e.client_cert = Some(("CERT".into(), SecretString::new("PRIVATE-KEY-PEM")));
        let shown = format!("{e:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("PRIVATE-KEY-PEM"), "{shown}");
        assert!(shown.contains("svc"), "{shown}");
        let config = crate::StatusConfig::new(e.clone());
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let config = crate::DynsecConfig::new(e);
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
