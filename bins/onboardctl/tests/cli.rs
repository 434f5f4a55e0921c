//! `onboardctl` as an operator runs it: the real binary, real databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use onboard_registry::testing::{TestBackend, TestDb};

fn onboardctl(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onboardctl"));
    cmd.current_dir(dir).env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn migrate_applies_once(backend: TestBackend) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let env = [("ONBOARD__DATABASE__URL", db.url.as_str())];

    let out = onboardctl(
        dir.path(),
        &env,
        &["migrate", "--dry-run", "--output", "json"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let pending: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/sqlite"
    ))
    .unwrap()
    .count();
    assert_eq!(pending["pending"].as_array().unwrap().len(), migrations);

    let out = onboardctl(dir.path(), &env, &["migrate"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("20261123000001"), "{stdout}");
    assert!(stdout.contains("applied"), "{stdout}");

    let out = onboardctl(dir.path(), &env, &["--output", "json", "migrate"]);
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["applied"], serde_json::json!([]));
    assert!(db.db.pending_migrations().unwrap().is_empty());
}

#[test]
fn sqlite_migrate_applies_once() {
    migrate_applies_once(TestBackend::Sqlite);
}

#[test]
fn postgres_migrate_applies_once() {
    migrate_applies_once(TestBackend::Postgres);
}

fn models_firmware_upload_show_and_download(backend: TestBackend) {
    use onboard_firmware::testing::ImageBuilder;
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let env = [("ONBOARD__DATABASE__URL", db.url.as_str())];
    let out = onboardctl(dir.path(), &env, &["models", "create", "tempsensor"]);
    assert!(out.status.success(), "{:?}", text(&out));

    let image = ImageBuilder::app("1.4.2", "tempsensor", "v5.3.1").build();
    let digest = onboard_firmware::hex(&onboard_firmware::sha256(&image));
    std::fs::write(dir.path().join("fw.bin"), &image).unwrap();
    let out = onboardctl(
        dir.path(),
        &env,
        &["models", "firmware", "upload", "tempsensor", "fw.bin"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("1.4.2") && stdout.contains(&digest),
        "{stdout}"
    );
    assert!(
        dir.path()
            .join(format!("data/assets/firmware/{digest}.bin"))
            .is_file(),
        "stored under assets.dir by its SHA-256"
    );

    let out = onboardctl(
        dir.path(),
        &env,
        &["--output", "json", "models", "show", "tempsensor"],
    );
    let model: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(model["firmware"]["version"], "1.4.2");
    assert_eq!(model["firmware"]["sha256"], digest);
    assert_eq!(model["firmware"]["idf_version"], "v5.3.1");
    let out = onboardctl(dir.path(), &env, &["models", "list"]);
    assert!(text(&out).0.contains("1.4.2"), "{:?}", text(&out));

    let out = onboardctl(
        dir.path(),
        &env,
        &[
            "models",
            "firmware",
            "download",
            "tempsensor",
            "--out",
            "copy.bin",
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read(dir.path().join("copy.bin")).unwrap(), image);

    // A bootloader image: refused with the reason, exit 1, nothing changed.
    std::fs::write(
        dir.path().join("boot.bin"),
        ImageBuilder::bootloader("v5.3.1").build(),
    )
    .unwrap();
    let out = onboardctl(
        dir.path(),
        &env,
        &["models", "firmware", "upload", "tempsensor", "boot.bin"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bootloader image"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let out = onboardctl(
        dir.path(),
        &env,
        &[
            "--output",
            "json",
            "models",
            "firmware",
            "show",
            "tempsensor",
        ],
    );
    let fw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fw["sha256"], digest, "the model keeps its firmware");
    let stored = std::fs::read_dir(dir.path().join("data/assets/firmware"))
        .unwrap()
        .count();
    assert_eq!(stored, 1, "no file left by the refused upload");

    let out = onboardctl(
        dir.path(),
        &env,
        &["models", "firmware", "upload", "tempsensor", "missing.bin"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("missing.bin"), "{:?}", text(&out));
}

#[test]
fn sqlite_models_firmware_upload_show_and_download() {
    models_firmware_upload_show_and_download(TestBackend::Sqlite);
}

#[test]
fn postgres_models_firmware_upload_show_and_download() {
    models_firmware_upload_show_and_download(TestBackend::Postgres);
}

#[test]
fn the_config_file_is_read_from_the_flag_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("from-file.db");
    let config = dir.path().join("onboard.toml");
    std::fs::write(
        &config,
        format!("[database]\nurl = \"sqlite://{}\"\n", db_path.display()),
    )
    .unwrap();
    let out = onboardctl(
        dir.path(),
        &[],
        &["--config", config.to_str().unwrap(), "migrate"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(db_path.is_file());
    std::fs::remove_file(&db_path).unwrap();
    let out = onboardctl(
        dir.path(),
        &[("ONBOARD_CONFIG", config.to_str().unwrap())],
        &["migrate"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(db_path.is_file());
}

#[test]
fn failures_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], i32, &'a str);
    let cases: [Case; 4] = [
        (
            &[("ONBOARD__CA__VALIDITY_DAYS", "0")],
            &["migrate"],
            2,
            "ca.validity_days",
        ),
        (
            &[],
            &["--config", "/nonexistent.toml", "migrate"],
            2,
            "/nonexistent.toml",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
                ("ONBOARD__DATABASE__CONNECT_TIMEOUT_SECONDS", "1"),
            ],
            &["migrate"],
            3,
            "unavailable",
        ),
        (&[], &["no-such-command"], 2, "unrecognized subcommand"),
    ];
    for (env, args, code, needle) in cases {
        let out = onboardctl(dir.path(), env, args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            stdout.is_empty(),
            "{args:?}: errors go to stderr only: {stdout}"
        );
        // clap's own usage errors carry a usage hint on further lines.
        if !args.contains(&"no-such-command") {
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "{args:?}: one line: {stderr}"
            );
        }
    }
    assert!(!dir.path().join("data").exists());
}

#[test]
fn ca_init_show_and_crl() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "s3cret phrase\n").unwrap();
    let pass = pass.to_str().unwrap().to_owned();
    let env = [
        ("ONBOARD__DATABASE__URL", db.url.as_str()),
        ("ONBOARD__CA__PASSPHRASE_FILE", pass.as_str()),
    ];

    let out = onboardctl(dir.path(), &env, &["ca", "init", "--intermediate"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("move it offline"), "{stdout}");
    let out = onboardctl(dir.path(), &env, &["ca", "init"]);
    assert_eq!(out.status.code(), Some(1), "a second init refuses");

    let out = onboardctl(dir.path(), &env, &["--output", "json", "ca", "show"]);
    let show: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(show["chain"].as_array().unwrap().len(), 2);
    assert_eq!(show["key_encrypted"], true);
    assert_eq!(show["chain"][1]["self_signed"], true);

    let out = onboardctl(dir.path(), &env, &["ca", "crl", "--out", "crl.pem"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = onboardctl(dir.path(), &env, &["ca", "crl"]);
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");
    let verify = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "crl",
            "-in",
            "crl.pem",
            "-CAfile",
            "data/ca/chain.pem",
            "-verify",
            "-noout",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verify.stderr).contains("verify OK"),
        "{verify:?}"
    );

    // Without the passphrase the CA cannot be used, and the CLI says why.
    let out = onboardctl(
        dir.path(),
        &[("ONBOARD__DATABASE__URL", db.url.as_str())],
        &["ca", "show"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no passphrase"), "{stderr}");
}

#[test]
fn devices_register_import_and_revoke() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let env = [("ONBOARD__DATABASE__URL", db.url.as_str())];
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let out = onboardctl(
        dir.path(),
        &env,
        &[
            "--output", "json", "devices", "register", "--name", "boiler", "--serial", "SN-REG-1",
            "--out", "single",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let reg: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(reg["bundle_password"].as_str().unwrap().len() >= 20);
    assert_eq!(mode(&dir.path().join("single/SN-REG-1.zip")), 0o600);

    let out = onboardctl(dir.path(), &env, &["models", "create", "tempsensor"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let mut csv = String::from("name,model,location,firmware\n");
    for i in 0..20 {
        let model = if i % 10 == 3 {
            "Bad Model"
        } else {
            "tempsensor"
        };
        csv.push_str(&format!("dev {i},{model},hall {i},1.0.{i}\n"));
    }
    std::fs::write(dir.path().join("devices.csv"), csv).unwrap();
    let out = onboardctl(
        dir.path(),
        &env,
        &[
            "devices",
            "import",
            "--csv",
            "devices.csv",
            "--out",
            "bundles",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(4),
        "failed rows: exit 4 after the result: {stderr}"
    );
    assert!(
        stdout.contains("18 created, 0 already registered, 2 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid model"),
        "row errors are shown: {stdout}"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let manifests: Vec<_> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("manifest-"))
        .collect();
    assert_eq!(manifests.len(), 1);
    assert_eq!(mode(manifests[0]), 0o600);
    let manifest = std::fs::read_to_string(manifests[0]).unwrap();
    assert_eq!(manifest.lines().count(), 19, "a header and 18 devices");
    assert_eq!(
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "zip"))
            .count(),
        18
    );

    let out = onboardctl(
        dir.path(),
        &env,
        &[
            "--output",
            "json",
            "devices",
            "import",
            "--csv",
            "devices.csv",
            "--out",
            "bundles",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "the same 2 rows fail again");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(18))
    );
    // Only the good rows: exit 0.
    let good: String = std::fs::read_to_string(dir.path().join("devices.csv"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("Bad Model"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("good.csv"), good).unwrap();
    let out = onboardctl(
        dir.path(),
        &env,
        &["devices", "import", "--csv", "good.csv", "--out", "bundles"],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(text(&out)
        .0
        .contains("0 created, 18 already registered, 0 failed"));

    let id = reg["device_id"].as_str().unwrap();
    let out = onboardctl(
        dir.path(),
        &env,
        &["devices", "revoke", id, "--reason", "keyCompromise"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("revoked"));
    let out = onboardctl(
        dir.path(),
        &env,
        &["devices", "revoke", id, "--reason", "nonsense"],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = onboardctl(
        dir.path(),
        &env,
        &["--output", "json", "devices", "list", "--status", "revoked"],
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"][0]["serial"], "SN-REG-1");
}

#[test]
fn ca_issues_the_broker_and_service_certificates() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let env = [("ONBOARD__DATABASE__URL", db.url.as_str())];
    let out = onboardctl(
        dir.path(),
        &env,
        &[
            "ca",
            "server-cert",
            "--cn",
            "mqtt.local",
            "--dns",
            "mqtt.local",
            "--ip",
            "127.0.0.1",
            "--out",
            "certs",
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let out = onboardctl(dir.path(), &env, &["ca", "service-cert", "--out", "certs"]);
    assert!(out.status.success(), "{:?}", text(&out));
    for (file, purpose) in [
        ("certs/server.crt", "sslserver"),
        ("certs/onboard-service.crt", "sslclient"),
    ] {
        let v = Command::new("openssl")
            .current_dir(dir.path())
            .args([
                "verify",
                "-CAfile",
                "certs/chain.pem",
                "-purpose",
                purpose,
                file,
            ])
            .output()
            .unwrap();
        assert!(v.status.success(), "{file}: {v:?}");
    }
    let out = onboardctl(
        dir.path(),
        &env,
        &["ca", "server-cert", "--cn", "x", "--out", "certs2"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a server certificate needs a DNS name or an IP"
    );
    assert!(
        text(&out).1.contains("alternative names"),
        "{:?}",
        text(&out)
    );
}

/// `onboardctl completions bash|zsh|fish` and `onboardctl man` need no settings
/// (an invalid one does not stop them) and list the subcommands; bash parses the
/// bash script and, once sourced, completes `onboardctl mi` to `migrate`.
#[test]
fn completions_and_the_man_page_are_generated_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CERT_VALIDITY_DAYS", "forever")];
    for shell in ["bash", "zsh", "fish"] {
        let out = onboardctl(dir.path(), &env, &["completions", shell]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{shell}: {stderr}");
        for word in ["migrate", "keys", "devices", "reconcile", "acl", "output"] {
            assert!(stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    let bash = onboardctl(dir.path(), &env, &["completions", "bash"]);
    let script = dir.path().join("onboardctl.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{:?}", text(&parsed));
    // Complete the word after `onboardctl` the way bash would on <TAB>.
    let completed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(onboardctl mi); COMP_CWORD=1; COMP_LINE='onboardctl mi'; \
             COMP_POINT=${{#COMP_LINE}}; _onboardctl onboardctl mi onboardctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let (words, _) = text(&completed);
    assert_eq!(words.trim(), "migrate", "{:?}", text(&completed));

    let out = onboardctl(dir.path(), &env, &["man"]);
    let (page, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for section in [
        ".TH onboardctl",
        ".TH onboardctl-migrate",
        ".TH onboardctl-ca-init",
        "keys",
        "devices",
        "reconcile",
    ] {
        assert!(page.contains(section), "the man page lacks {section}");
    }
    // groff (what man runs) renders it without a warning.
    let page_file = dir.path().join("onboardctl.1");
    std::fs::write(&page_file, &page).unwrap();
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .arg(&page_file)
        .output()
        .unwrap();
    let (text_page, warnings) = text(&rendered);
    assert!(
        rendered.status.success() && warnings.is_empty(),
        "{warnings}"
    );
    assert!(text_page.contains("Settings file (TOML)"), "{text_page}");
}

fn rotation_commands_report_in_one_line_and_refuse_bad_input(backend: TestBackend) {
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let env = [("ONBOARD__DATABASE__URL", db.url.as_str())];

    // Nothing is due: a no-op cycle, exit 0, one summary line.
    let out = onboardctl(dir.path(), &env, &["rotation", "run-job"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "rotation cycle: 0 timed out, 0 started, 0 pending (max 1)\n"
    );
    let out = onboardctl(
        dir.path(),
        &env,
        &["--output", "json", "rotation", "run-job"],
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["started"], 0);
    assert_eq!(summary["max_in_flight"], 1);

    let out = onboardctl(
        dir.path(),
        &env,
        &["--output", "json", "rotation", "status"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<_> = status["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap().to_owned(),
                s["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("OK", 0), ("QUEUED", 0), ("PENDING", 0), ("TIMEOUT", 0)]
            .map(|(s, n)| (s.to_owned(), n))
            .to_vec()
    );
    // The first cycle set the schedule's baseline.
    assert!(status["last_scheduled_run"].is_string(), "{status}");

    let out = onboardctl(dir.path(), &env, &["rotation", "trigger"]);
    assert_eq!(text(&out).0, "0 device(s) queued for rotation\n");

    for (args, needle) in [
        (
            &["rotation", "trigger", "--device", "not-an-id"][..],
            "device id",
        ),
        (
            &[
                "rotation",
                "trigger",
                "--device",
                "0190a0b0-0000-7000-8000-000000000000",
            ][..],
            "not found",
        ),
    ] {
        let out = onboardctl(dir.path(), &env, args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }

    // A schedule that is not five cron fields stops the job with exit 2, naming it.
    let mut bad = env.to_vec();
    bad.push(("ROTATION_CRON", "0 0 8 * * 6"));
    let out = onboardctl(dir.path(), &bad, &["rotation", "run-job"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rotation.cron"), "{stderr}");
}

#[test]
fn sqlite_rotation_commands_report_in_one_line_and_refuse_bad_input() {
    rotation_commands_report_in_one_line_and_refuse_bad_input(TestBackend::Sqlite);
}

#[test]
fn postgres_rotation_commands_report_in_one_line_and_refuse_bad_input() {
    rotation_commands_report_in_one_line_and_refuse_bad_input(TestBackend::Postgres);
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(out)))
}

fn load_test_data_fills_an_empty_database_only(backend: TestBackend) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let env = [("ONBOARD__DATABASE__URL", db.url.as_str())];
    let run = |args: &[&str]| onboardctl(dir.path(), &env, args);
    assert!(run(&["migrate"]).status.success());
    let out = run(&["ca", "init"]);
    assert!(out.status.success(), "{:?}", text(&out));

    let out = run(&["--output", "json", "load-test-data"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let loaded = json_of(&out);
    assert_eq!(
        loaded["models"],
        serde_json::json!(["tempsensor", "smartplug", "gateway"])
    );
    let key = loaded["key"]["key"].as_str().unwrap().to_owned();
    assert_eq!(loaded["key"]["max_uses"], 100);
    assert_eq!(loaded["devices"].as_array().unwrap().len(), 5);

    // The models carry topic templates and default configuration.
    let model = json_of(&run(&["--output", "json", "models", "show", "smartplug"]));
    assert_eq!(
        model["subscribe_topics"],
        serde_json::json!(["devices/{device_id}/#", "fleet/{model}/commands"])
    );
    assert_eq!(model["config"]["max_load_watts"], 2300);
    // The devices are registered with the batch key, each with its model.
    let devices = json_of(&run(&[
        "--output", "json", "devices", "list", "--batch", "demo",
    ]));
    let items = devices["items"].as_array().unwrap();
    let mut serials: Vec<_> = items
        .iter()
        .map(|d| d["serial"].as_str().unwrap())
        .collect();
    serials.sort_unstable();
    assert_eq!(
        serials,
        [
            "DEMO-0001",
            "DEMO-0002",
            "DEMO-0003",
            "DEMO-0004",
            "DEMO-0005"
        ]
    );
    assert!(items.iter().all(|d| d["status"] == "registered"));
    let gateway = items.iter().find(|d| d["serial"] == "DEMO-0005").unwrap();
    assert_eq!(gateway["model"], "gateway");
    let shown = json_of(&run(&[
        "--output",
        "json",
        "devices",
        "show",
        gateway["id"].as_str().unwrap(),
    ]));
    assert!(shown["current_certificate"].is_string(), "{shown}");
    let keys = json_of(&run(&[
        "--output", "json", "keys", "list", "--batch", "demo",
    ]));
    let keys = keys["items"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["uses"], 5, "one use per sample device");
    assert!(key.starts_with(keys[0]["prefix"].as_str().unwrap()));
    let snapshot = |run: &dyn Fn(&[&str]) -> Output| {
        (
            json_of(&run(&["--output", "json", "devices", "list"]))["items"]
                .as_array()
                .unwrap()
                .len(),
            json_of(&run(&["--output", "json", "keys", "list"]))["items"]
                .as_array()
                .unwrap()
                .len(),
            json_of(&run(&["--output", "json", "models", "list"]))
                .as_array()
                .unwrap()
                .len(),
        )
    };
    assert_eq!(snapshot(&run), (5, 1, 3));

    // Devices exist: refused, exit 1, one line, nothing changed.
    let out = run(&["load-test-data"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("already holds devices"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(snapshot(&run), (5, 1, 3));

    // --force: a new key; existing models and sample serials are left alone.
    let out = run(&["load-test-data", "--force"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("0 model(s) and 0 device(s) created"),
        "{stdout}"
    );
    assert_eq!(snapshot(&run), (5, 2, 3));

    // Another database with a device that is no sample: --force adds the samples.
    let other = TestDb::new(backend);
    let env2 = [("ONBOARD__DATABASE__URL", other.url.as_str())];
    let run2 = |args: &[&str]| onboardctl(dir.path(), &env2, args);
    assert!(run2(&["migrate"]).status.success());
    let out = run2(&[
        "devices", "register", "--name", "boiler", "--serial", "SN-X", "--out", "b2",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(run2(&["load-test-data"]).status.code(), Some(1));
    assert_eq!(snapshot(&run2), (1, 0, 0));
    let out = run2(&["load-test-data", "--force"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(snapshot(&run2), (6, 1, 3));
}

#[test]
fn sqlite_load_test_data_fills_an_empty_database_only() {
    load_test_data_fills_an_empty_database_only(TestBackend::Sqlite);
}

#[test]
fn postgres_load_test_data_fills_an_empty_database_only() {
    load_test_data_fills_an_empty_database_only(TestBackend::Postgres);
}

#[test]
fn device_simulate_refuses_bad_arguments_and_gives_up_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["device", "simulate", "--key", "k", "--serial", "SIM-1"];
        all.extend_from_slice(args);
        onboardctl(dir.path(), &[], &all)
    };
    let out = run(&["--server", "https://localhost:8443"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("must be an http:// URL"), "{stderr}");
    let out = run(&["--server", "http://x", "--status-topic", "devices/#"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("--status-topic"));
    // Nothing listens on this port: one retry, then exit 3 (try again later).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&["--server", &url, "--retries", "1", "--state-dir", "st"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains("SIM-1: no answer") && stdout.contains("sending the same CSR again"),
        "{stdout}"
    );
    assert!(
        stderr.contains("no registration answer after 2 attempt(s)"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // The key and CSR it made are kept for the next start.
    assert!(dir.path().join("st/SIM-1/device.key").is_file());
    assert!(dir.path().join("st/SIM-1/device.csr").is_file());
}
