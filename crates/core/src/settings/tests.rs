use std::collections::HashMap;
use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn error_of(file: Option<&str>, vars: &[(&str, &str)]) -> String {
    let f = file.map(toml_file);
    Settings::load_from(f.as_ref().map(|f| f.path()), &env(vars))
        .unwrap_err()
        .to_string()
}

#[test]
fn no_settings_at_all_gives_the_embedded_default() {
    let s = Settings::load_from(None, &HashMap::new()).unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(s.database.url, "sqlite://data/onboard.db");
    assert_eq!(s.ca.key_algorithm, KeyAlgorithm::EcdsaP256);
    assert_eq!(s.broker.kind, BrokerKind::MosquittoFile);
    assert!(!s.aws.enabled);
}

#[test]
fn the_example_file_equals_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../onboard.example.toml");
    let example: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let defaults = toml::Value::try_from(Settings::default()).unwrap();
    assert_eq!(
        example, defaults,
        "onboard.example.toml must list every setting with its default value"
    );
}

#[test]
fn the_file_overrides_defaults() {
    let f = toml_file(
        "[server]\nbind = \"127.0.0.1:9000\"\n[ca]\nvalidity_days = 90\nkey_algorithm = \"rsa-2048\"\n",
    );
    let s = Settings::load_from(Some(f.path()), &HashMap::new()).unwrap();
    assert_eq!(s.server.bind, "127.0.0.1:9000");
    assert_eq!(s.ca.validity_days, 90);
    assert_eq!(s.ca.key_algorithm, KeyAlgorithm::Rsa2048);
    assert_eq!(s.database, DatabaseSettings::default());
}

#[test]
fn environment_overrides_the_file_and_legacy_names_sit_between() {
    let f = toml_file("[database]\nurl = \"sqlite://file.db\"\n[ca]\nvalidity_days = 90\n");
    let vars = env(&[
        ("DATABASE_URL", "postgres://legacy@127.0.0.1/onboard"),
        ("CERT_VALIDITY_DAYS", "30"),
        ("ONBOARD__CA__VALIDITY_DAYS", "10"),
        ("BASEURL", "https://onboard.example.com"),
        ("ROTATION_TIMEOUT_SECONDS", "600"),
        ("WIFI_PASSWORD", "12345678"),
        ("ONBOARD__SERVER__MAX_BODY_BYTES", "2048"),
    ]);
    let s = Settings::load_from(Some(f.path()), &vars).unwrap();
    assert_eq!(s.database.url, "postgres://legacy@127.0.0.1/onboard");
    assert_eq!(s.ca.validity_days, 10, "ONBOARD__ beats the legacy name");
    assert_eq!(s.server.public_base_url, "https://onboard.example.com");
    assert_eq!(s.rotation.timeout_seconds, 600);
    assert_eq!(s.device.wifi_password.expose(), "12345678");
    assert_eq!(s.server.max_body_bytes, 2048);
}

#[test]
fn every_legacy_name_lands_on_its_setting() {
    let values = [
        ("DATABASE_URL", "sqlite://legacy.db"),
        ("CERT_VALIDITY_DAYS", "42"),
        ("CA_ROOT_PATH", "/etc/onboard/ca"),
        ("BROKER_ACL_FILE", "/etc/mosquitto/acl"),
        ("DOWNLOAD_EXPIRY_MINUTES", "15"),
        ("ROTATION_CRON", "0 3 * * *"),
        ("ROTATION_TIMEOUT_SECONDS", "120"),
        ("MQTT_URL", "mqtts://broker.local:8883"),
        ("BASEURL", "https://legacy.example.com"),
        ("ASSETS_DIR", "/srv/assets"),
        ("WIFI_SSID", "factory"),
        ("WIFI_PASSWORD", "hunter22"),
    ];
    assert_eq!(values.len(), LEGACY_ENV.len());
    let s = Settings::load_from(None, &env(&values)).unwrap();
    let json = serde_json::to_value(&s).unwrap();
    for ((name, value), (legacy, key)) in values.iter().zip(LEGACY_ENV) {
        assert_eq!(name, legacy);
        let (section, field) = key.split_once('.').unwrap();
        let got = &json[section][field];
        let got = got
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| got.to_string());
        assert_eq!(&got, value, "{name} -> {key}");
    }
}

#[test]
fn token_hash_lists_come_from_one_variable() {
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let s = Settings::load_from(
        None,
        &env(&[("ONBOARD__ADMIN__TOKEN_HASHES", &format!("{a},{b}"))]),
    )
    .unwrap();
    assert_eq!(s.admin.token_hashes, vec![a, b]);
}

#[test]
fn invalid_values_name_the_setting() {
    type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (None, &[("ONBOARD__SERVER__BIND", "nowhere")], "server.bind"),
        (
            None,
            &[("ONBOARD__CA__VALIDITY_DAYS", "0")],
            "ca.validity_days",
        ),
        (None, &[("CERT_VALIDITY_DAYS", "abc")], "validity_days"),
        (None, &[("DATABASE_URL", "mysql://x/y")], "database.url"),
        (
            None,
            &[("ONBOARD__CA__KEY_ALGORITHM", "dsa")],
            "key_algorithm",
        ),
        (None, &[("ONBOARD__BROKER__KIND", "rabbit")], "kind"),
        (None, &[("ROTATION_CRON", "every tuesday")], "rotation.cron"),
        (
            None,
            &[
                ("ROTATION_TIMEOUT_SECONDS", "7200"),
                ("ONBOARD__DEVICE__RENEW_GRACE_HOURS", "2"),
            ],
            "rotation.timeout_seconds",
        ),
        (None, &[("BASEURL", "ftp://x")], "server.public_base_url"),
        (None, &[("MQTT_URL", "http://x")], "broker.mqtt_url"),
        (
            None,
            &[("ONBOARD__ADMIN__TOKEN_HASHES", "short")],
            "admin.token_hashes",
        ),
        (
            None,
            &[("ONBOARD__DELIVERY__DOWNLOAD_EXPIRY_MINUTES", "0")],
            "delivery.download_expiry_minutes",
        ),
        (
            None,
            &[("ONBOARD__ROTATION__MAX_IN_FLIGHT", "0")],
            "rotation.max_in_flight",
        ),
        (
            None,
            &[("ONBOARD__ROTATION__NOTIFY_TIMEOUT_SECONDS", "0")],
            "rotation.notify_timeout_seconds",
        ),
        (
            None,
            &[("ONBOARD__ROTATION__SECRET_KEY", "not-hex")],
            "rotation.secret_key",
        ),
        (
            None,
            &[("ONBOARD__ROTATION__TOPIC_PREFIX", "iot/+/x")],
            "rotation.topic_prefix",
        ),
        (
            None,
            &[("ONBOARD__ASSETS__MAX_FIRMWARE_BYTES", "100")],
            "assets.max_firmware_bytes",
        ),
        (
            None,
            &[("ONBOARD__CONSOLE__IDLE_TIMEOUT_MINUTES", "0")],
            "console.idle_timeout_minutes",
        ),
        (
            None,
            &[("ONBOARD__CONSOLE__ABSOLUTE_TIMEOUT_HOURS", "200")],
            "console.absolute_timeout_hours",
        ),
        (
            None,
            &[("ONBOARD__LOG__LEVEL", "loud=verbose")],
            "log.level",
        ),
        (
            None,
            &[("ONBOARD__BROKER__KIND", "mosquitto-dynsec")],
            "broker.mqtt_url",
        ),
        (None, &[("ONBOARD__NOPE__KEY", "1")], "nope"),
        (
            None,
            &[
                ("ONBOARD__AWS__ENABLED", "true"),
                ("ONBOARD__AWS__POLICY_NAME", "no spaces"),
            ],
            "aws.policy_name",
        ),
        (
            None,
            &[
                ("ONBOARD__AWS__ENABLED", "true"),
                ("ONBOARD__AWS__THING_NAME_TEMPLATE", "fleet"),
            ],
            "aws.thing_name_template",
        ),
        (
            None,
            &[
                ("ONBOARD__AWS__ENABLED", "true"),
                ("ONBOARD__AWS__CERTIFICATE_MODE", "self-signed"),
            ],
            "certificate_mode",
        ),
        (Some("[server]\nbindd = \"x\"\n"), &[], "bindd"),
        (
            Some("[ca]\nvalidity_days = \"long\"\n"),
            &[],
            "validity_days",
        ),
    ];
    for (file, vars, setting) in cases {
        let err = error_of(*file, vars);
        assert!(
            err.contains(setting),
            "{vars:?} {file:?}: {err:?} should name {setting}"
        );
    }
}

#[test]
fn a_missing_settings_file_is_an_error() {
    let err = Settings::load_from(
        Some(Path::new("/nonexistent/onboard.toml")),
        &HashMap::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/onboard.toml"),
        "{err}"
    );
}

#[test]
fn secrets_never_show_in_debug() {
    let s = Settings::load_from(
        None,
        &env(&[
            ("WIFI_PASSWORD", "hunter22"),
            ("ONBOARD__CA__PASSPHRASE", "pass-phrase"),
        ]),
    )
    .unwrap();
    let debug = format!("{s:?}");
    assert!(!debug.contains("hunter22"));
    assert!(!debug.contains("pass-phrase"));
    assert!(debug.contains("***"));
}

#[test]
fn the_ca_passphrase_comes_from_the_setting_or_a_file() {
    assert!(Settings::default().ca_passphrase().unwrap().is_none());
    let f = toml_file("correct horse battery\nsecond line ignored\n");
    let mut s = Settings::default();
    s.ca.passphrase_file = f.path().display().to_string();
    assert_eq!(
        s.ca_passphrase().unwrap().unwrap().expose(),
        "correct horse battery"
    );
    s.ca.passphrase_file = "/nonexistent/passphrase".into();
    let err = s.ca_passphrase().unwrap_err().to_string();
    assert!(err.contains("ca.passphrase_file"), "{err}");
    assert!(error_of(
        None,
        &[
            ("ONBOARD__CA__PASSPHRASE", "x"),
            ("ONBOARD__CA__PASSPHRASE_FILE", "/y")
        ]
    )
    .contains("ca.passphrase"));
}

#[test]
fn every_kept_file_moves_under_one_directory() {
    let dir = Path::new("/srv/onboard-b");
    let s = Settings::default().with_files_under(dir);
    for path in [
        &s.ca.dir,
        &s.admin.token_file,
        &s.broker.acl_file,
        &s.broker.password_file,
        &s.broker.crl_file,
        &s.assets.dir,
    ] {
        assert!(path.starts_with("/srv/onboard-b/"), "{path}");
    }
    assert_eq!(
        s.database,
        DatabaseSettings::default(),
        "the database is chosen separately"
    );
    s.validate().unwrap();
}
