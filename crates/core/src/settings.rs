//! Settings: one typed struct, loaded from defaults, then an optional TOML file, then
//! the environment names of the systems Onboard replaces (`DATABASE_URL`, ...), then
//! `ONBOARD__SECTION__KEY` variables; then validated into an error that names the
//! setting. Tests build settings from a map, never from the process environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Source, Value};
use onboard_domain::KeyAlgorithm;
use serde::{Deserialize, Serialize};

/// A setting that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load settings: {0}")]
    Load(String),
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// A secret setting: never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub ca: CaSettings,
    pub admin: AdminSettings,
    pub rate_limit: RateLimitSettings,
    pub broker: BrokerSettings,
    pub aws: AwsSettings,
    pub delivery: DeliverySettings,
    pub rotation: RotationSettings,
    pub assets: AssetsSettings,
    pub device: DeviceSettings,
    pub activation: ActivationSettings,
    pub log: LogSettings,
    pub tokens: TokenSettings,
    pub console: ConsoleSettings,
}

/// The web admin console at `/admin/` ([console.md](../../../docs/console.md)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// A session unused for this many minutes ends.
    pub idle_timeout_minutes: u32,
    /// A session ends this many hours after sign-in, used or not.
    pub absolute_timeout_hours: u32,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            idle_timeout_minutes: 30,
            absolute_timeout_hours: 12,
        }
    }
}

/// Device access tokens from `POST /iot/token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// Seconds an access token is valid (`expires_in`).
    pub lifetime_seconds: u32,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            lifetime_seconds: 3600,
        }
    }
}

/// Devices that register but never report in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivationSettings {
    /// Report (log, metric, `onboardctl devices unactivated`) devices still
    /// `registered` this many hours after registering; 0 turns it off.
    pub report_after_hours: u32,
    /// Revoke them (rollback of credentials nobody uses) after this many hours;
    /// 0 never does. At least `report_after_hours` when both are set, and only
    /// with an activation source (`broker.mqtt_url`).
    pub revoke_after_hours: u32,
}

impl Default for ActivationSettings {
    fn default() -> Self {
        Self {
            report_after_hours: 24,
            revoke_after_hours: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address the HTTP server listens on.
    pub bind: String,
    /// The URL devices and operators reach the server at (CRL and bundle links).
    pub public_base_url: String,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_timeout_seconds: u64,
    /// Address of the TLS listener (`/iot`, EST, and every other route); empty: off.
    pub tls_bind: String,
    /// PEM certificate chain of the TLS listener; empty: a server certificate issued
    /// from our CA for `tls_names`, renewed before it expires.
    pub tls_cert_file: String,
    /// PEM private key that goes with `tls_cert_file`.
    pub tls_key_file: String,
    /// DNS names and IP addresses in the issued server certificate; empty: the host
    /// of `public_base_url`, `localhost` and `127.0.0.1`.
    pub tls_names: Vec<String>,
    /// Addresses of TLS-terminating proxies (an ingress) whose client-certificate
    /// header is believed; empty: the header is ignored from everyone.
    pub trusted_proxies: Vec<String>,
    /// The header such a proxy puts the client certificate in (URL-encoded PEM, as
    /// ingress-nginx's `ssl-client-cert`).
    pub client_cert_header: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0:8080".into(),
            public_base_url: "http://localhost:8080".into(),
            max_body_bytes: 64 * 1024,
            shutdown_timeout_seconds: 30,
            tls_bind: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_names: Vec::new(),
            trusted_proxies: Vec::new(),
            client_cert_header: "ssl-client-cert".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (the embedded default) or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
    /// Seconds to wait for a connection before the database counts as unavailable.
    pub connect_timeout_seconds: u64,
    /// Apply pending migrations when the server starts.
    pub run_migrations: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/onboard.db".into(),
            max_connections: 10,
            connect_timeout_seconds: 5,
            run_migrations: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaSettings {
    pub dir: String,
    /// Common name of a CA created by Onboard (the root; an intermediate gets
    /// "<name> Issuing").
    pub common_name: String,
    pub key_algorithm: KeyAlgorithm,
    /// Validity of device certificates, in days.
    pub validity_days: u32,
    /// Passphrase that encrypts the CA key at rest (prefer `passphrase_file` or the
    /// `ONBOARD__CA__PASSPHRASE` variable; never a command-line argument).
    pub passphrase: Secret,
    /// File whose first line is the CA key passphrase.
    pub passphrase_file: String,
    /// Hours between a CRL's thisUpdate and nextUpdate.
    pub crl_validity_hours: u32,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            dir: "data/ca".into(),
            common_name: "Onboard Device CA".into(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            validity_days: 365,
            passphrase: Secret::default(),
            passphrase_file: String::new(),
            crl_validity_hours: 24,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// SHA-256 hashes of the admin bearer tokens (`onboardctl admin token create`).
    pub token_hashes: Vec<String>,
    /// With no hashes configured: the file holding the one admin token, created
    /// (mode 0600) on first start.
    pub token_file: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            token_hashes: Vec::new(),
            token_file: "data/admin.token".into(),
        }
    }
}

/// Limits on the public routes, per client address (per replica).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests a client may make per minute (0: no limit).
    pub requests_per_minute: u32,
    /// Requests a client may make at once before the per-minute rate applies.
    pub burst: u32,
    /// Failed bootstrap-key attempts a client may make per hour (0: no limit).
    pub failures_per_hour: u32,
    /// Failed attempts allowed at once before the client is locked out.
    pub failure_burst: u32,
    /// Take the client address from the rightmost X-Forwarded-For entry (only
    /// behind a proxy that sets it).
    pub trust_forwarded_for: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: 60,
            burst: 20,
            failures_per_hour: 30,
            failure_burst: 10,
            trust_forwarded_for: false,
        }
    }
}

/// Which broker integration manages device permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    MosquittoFile,
    MosquittoDynsec,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    pub kind: BrokerKind,
    pub acl_file: String,
    pub password_file: String,
    pub crl_file: String,
    /// SIGHUP this pid after a change, when set.
    pub reload_pid_file: String,
    /// Service connection for dynsec, activation and notifications (`mqtts://...`).
    pub mqtt_url: String,
    /// The broker host devices are told to connect to.
    pub public_host: String,
    /// The broker's TLS port for devices.
    pub public_port: u16,
    /// Onboard's own MQTT client id / username on `mqtt_url` (the CN of its client
    /// certificate on an mTLS listener); the ACL file grants it read access to
    /// `status_topic` and write access to every device's rotation topic.
    pub service_client_id: String,
    /// Username and password on `mqtt_url` (when not using a client certificate).
    pub username: String,
    pub password: Secret,
    /// CA chain (PEM) that signed the broker's server certificate (`mqtts://`).
    pub ca_file: String,
    /// Onboard's client certificate and key (PEM) for an mTLS listener.
    pub client_cert_file: String,
    pub client_key_file: String,
    /// Where devices report in; the first message marks a device active.
    pub status_topic: String,
    /// How often the server's reconciler runs: it re-signs the CRL before half its
    /// validity has passed, installs it in the broker, and applies broker and
    /// cloud changes that a crash or an unreachable broker left pending.
    pub reconcile_seconds: u64,
    /// `mosquitto-file`: every device's default topics are `pattern` lines, and
    /// only devices with other topics (and devices shut out) get a block, so a
    /// registration with the default topics changes no broker file.
    pub acl_patterns: bool,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            kind: BrokerKind::MosquittoFile,
            acl_file: "data/mosquitto/acl".into(),
            password_file: "data/mosquitto/passwd".into(),
            crl_file: "data/mosquitto/crl.pem".into(),
            reload_pid_file: String::new(),
            mqtt_url: String::new(),
            public_host: "localhost".into(),
            public_port: 8883,
            service_client_id: "onboard-service".into(),
            username: String::new(),
            password: Secret::default(),
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            status_topic: "devices/+/status".into(),
            reconcile_seconds: 10,
            acl_patterns: true,
        }
    }
}

/// Who issues device certificates when AWS IoT Core is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AwsCertificateMode {
    /// Our CA issues; the certificate is registered with
    /// `RegisterCertificateWithoutCA`, so one identity works on Mosquitto and AWS.
    #[default]
    OwnCa,
    /// AWS issues (`CreateCertificateFromCsr`, or `CreateKeysAndCertificate`
    /// without a CSR); devices get Amazon's root chain.
    AwsIssued,
}

/// AWS IoT Core (`docs/aws.md`). Credentials come from the standard AWS chain
/// (environment, profile, web identity, instance or container role).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsSettings {
    pub enabled: bool,
    pub region: String,
    /// Overrides the AWS IoT endpoint (tests point it at a local emulator).
    pub endpoint_url: String,
    pub certificate_mode: AwsCertificateMode,
    /// The IoT policy attached to every device certificate; created from the
    /// template in `docs/aws.md` when missing.
    pub policy_name: String,
    /// The Thing name: `{device_id}`, `{serial}`, `{model}`.
    pub thing_name_template: String,
    /// Thing group name templates (`{model}`, `{batch}`), created when missing.
    pub thing_groups: Vec<String>,
    /// Every Thing is of this type (it marks Things as Onboard's).
    pub thing_type: String,
    /// The most one AWS call may take, retries included.
    pub timeout_seconds: u64,
    /// Attempts per AWS call (throttling and transient errors are retried).
    pub max_attempts: u32,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            region: "us-east-1".into(),
            endpoint_url: String::new(),
            certificate_mode: AwsCertificateMode::OwnCa,
            policy_name: "onboard-device".into(),
            thing_name_template: "{device_id}".into(),
            thing_groups: Vec::new(),
            thing_type: "onboard-device".into(),
            timeout_seconds: 10,
            max_attempts: 3,
        }
    }
}

impl AwsSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !self.endpoint_url.is_empty() {
            check_http_url("aws.endpoint_url", &self.endpoint_url)?;
        }
        if !self.enabled {
            return Ok(());
        }
        let region_ok = !self.region.is_empty()
            && self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            return Err(invalid(
                "aws.region",
                "must be an AWS region such as eu-west-1",
            ));
        }
        onboard_aws_iot::check_policy_name(&self.policy_name)
            .map_err(|r| invalid("aws.policy_name", r))?;
        if !(self.thing_name_template.contains("{device_id}")
            || self.thing_name_template.contains("{serial}"))
        {
            return Err(invalid(
                "aws.thing_name_template",
                "must contain {device_id} or {serial}, so every device gets its own Thing",
            ));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":_-{}".contains(c))
        };
        if !name_ok(&self.thing_name_template) {
            return Err(invalid(
                "aws.thing_name_template",
                "may contain only A-Z a-z 0-9 : _ - and the placeholders",
            ));
        }
        if !name_ok(&self.thing_type) || self.thing_type.contains(['{', '}']) {
            return Err(invalid(
                "aws.thing_type",
                "must be 1 to 128 of A-Z a-z 0-9 : _ -",
            ));
        }
        for g in &self.thing_groups {
            if !name_ok(g) {
                return Err(invalid(
                    "aws.thing_groups",
                    format!("{g:?}: a group template may contain only A-Z a-z 0-9 : _ - {{model}} {{batch}}"),
                ));
            }
        }
        if !(1..=120).contains(&self.timeout_seconds) {
            return Err(invalid("aws.timeout_seconds", "must be 1 to 120 seconds"));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(invalid("aws.max_attempts", "must be 1 to 10"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Minutes a credential bundle link stays valid.
    pub download_expiry_minutes: u32,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            download_expiry_minutes: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationSettings {
    /// When the fleet is queued for rotation (cron, `#` for "nth weekday").
    pub cron: String,
    /// Seconds a device has to take up its new credential.
    pub timeout_seconds: u64,
    /// Rotations PENDING at once.
    pub max_in_flight: u32,
    /// Notifications go to `<topic_prefix>/<client id>/rotation`.
    pub topic_prefix: String,
    /// The longest a cycle waits for the broker to take its notifications
    /// (connection and acknowledgments together); those not acknowledged are
    /// retried by the next cycle.
    pub notify_timeout_seconds: u64,
    /// 64 hex digits: the AES-256-GCM key that keeps a password device's old and
    /// new secret during its rotation (ADR 6). Empty: password devices are not
    /// rotated.
    pub secret_key: Secret,
    /// Whether `onboard-server` runs the rotation cycle itself (every minute).
    /// Off: the CronJob (`onboardctl rotation run-job`) is the one scheduler.
    pub run_in_server: bool,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            cron: "0 8 * * 6#1".into(),
            timeout_seconds: 300,
            max_in_flight: 1,
            topic_prefix: "iotsupport".into(),
            notify_timeout_seconds: 10,
            secret_key: Secret::default(),
            run_in_server: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssetsSettings {
    /// Firmware images live under `<dir>/firmware/`, named by their SHA-256.
    pub dir: String,
    /// The largest firmware image an upload may send (the body is cut there).
    pub max_firmware_bytes: u64,
}

/// 16 MiB: the largest ESP32 application partition.
pub const DEFAULT_MAX_FIRMWARE_BYTES: u64 = 16 * 1024 * 1024;

impl Default for AssetsSettings {
    fn default() -> Self {
        Self {
            dir: "data/assets".into(),
            max_firmware_bytes: DEFAULT_MAX_FIRMWARE_BYTES,
        }
    }
}

/// Defaults handed to every device in its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceSettings {
    pub wifi_ssid: String,
    pub wifi_password: Secret,
    /// After `POST /iot/renew`, hours the previous certificate stays valid unless the
    /// device uses the new one first.
    pub renew_grace_hours: u32,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            wifi_ssid: String::new(),
            wifi_password: Secret::default(),
            renew_grace_hours: 24,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter: `info`, `onboard=debug,actix_web=info`, ...
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// The environment names of earlier systems, and the setting each one sets. They
/// apply above the file and below `ONBOARD__` variables.
pub const LEGACY_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("CERT_VALIDITY_DAYS", "ca.validity_days"),
    ("CA_ROOT_PATH", "ca.dir"),
    ("BROKER_ACL_FILE", "broker.acl_file"),
    (
        "DOWNLOAD_EXPIRY_MINUTES",
        "delivery.download_expiry_minutes",
    ),
    ("ROTATION_CRON", "rotation.cron"),
    ("ROTATION_TIMEOUT_SECONDS", "rotation.timeout_seconds"),
    ("MQTT_URL", "broker.mqtt_url"),
    ("BASEURL", "server.public_base_url"),
    ("ASSETS_DIR", "assets.dir"),
    ("WIFI_SSID", "device.wifi_ssid"),
    ("WIFI_PASSWORD", "device.wifi_password"),
];

#[derive(Debug, Clone)]
struct LegacyEnv(Map<String, Value>);

impl LegacyEnv {
    fn from_env(env: &HashMap<String, String>) -> Self {
        let origin = "environment".to_owned();
        let map = LEGACY_ENV
            .iter()
            .filter_map(|(name, key)| {
                env.get(*name)
                    .map(|v| ((*key).to_owned(), Value::new(Some(&origin), v.clone())))
            })
            .collect();
        Self(map)
    }
}

impl Source for LegacyEnv {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

impl Settings {
    /// Loads from the process environment and an optional file.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, &std::env::vars().collect())
    }

    /// Loads from `env` (not the process environment) and an optional file.
    pub fn load_from(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let load = |e: config::ConfigError| SettingsError::Load(e.to_string());
        let mut builder =
            Config::builder().add_source(Config::try_from(&Settings::default()).map_err(load)?);
        if let Some(path) = file {
            if !path.is_file() {
                return Err(SettingsError::Load(format!(
                    "settings file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let onboard_env: Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("ONBOARD__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(LegacyEnv::from_env(env)).add_source(
            Environment::with_prefix("ONBOARD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("admin.token_hashes")
                .source(Some(onboard_env)),
        );
        let settings: Settings = builder
            .build()
            .map_err(load)?
            .try_deserialize()
            .map_err(load)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The CA key passphrase, from `ca.passphrase` or the first line of
    /// `ca.passphrase_file`; `None` when neither is set (the key is then stored
    /// unencrypted, which start-up warns about).
    pub fn ca_passphrase(&self) -> Result<Option<Secret>, SettingsError> {
        if !self.ca.passphrase.is_empty() {
            return Ok(Some(self.ca.passphrase.clone()));
        }
        if self.ca.passphrase_file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.ca.passphrase_file).map_err(|e| {
            invalid(
                "ca.passphrase_file",
                format!("cannot read {}: {}", self.ca.passphrase_file, e.kind()),
            )
        })?;
        let line = text.lines().next().unwrap_or("").to_owned();
        if line.is_empty() {
            return Err(invalid(
                "ca.passphrase_file",
                "the file's first line is empty",
            ));
        }
        Ok(Some(Secret(line)))
    }

    /// The same settings with every file Onboard keeps (CA, admin token, broker
    /// files, assets) under `dir` instead of `./data/`: a second instance on one
    /// machine, or a test that must not write into the working directory.
    pub fn with_files_under(mut self, dir: &Path) -> Self {
        let at = |rest: &str| dir.join(rest).display().to_string();
        self.ca.dir = at("ca");
        self.admin.token_file = at("admin.token");
        self.broker.acl_file = at("mosquitto/acl");
        self.broker.password_file = at("mosquitto/passwd");
        self.broker.crl_file = at("mosquitto/crl.pem");
        self.assets.dir = at("assets");
        self
    }

    /// The names in the TLS listener's own certificate.
    pub fn tls_names(&self) -> Vec<String> {
        if !self.server.tls_names.is_empty() {
            return self.server.tls_names.clone();
        }
        let mut names = Vec::new();
        let url = &self.server.public_base_url;
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(authority),
        };
        for n in [host, "localhost", "127.0.0.1"] {
            if !n.is_empty() && !names.iter().any(|x| x == n) {
                names.push(n.to_owned());
            }
        }
        names
    }

    pub fn ca_dir(&self) -> PathBuf {
        PathBuf::from(&self.ca.dir)
    }
}

mod validate;
use validate::check_http_url;

#[cfg(test)]
mod tests;
