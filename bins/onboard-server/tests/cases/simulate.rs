//! The reference device (`onboardctl device simulate`) against the real server and
//! a real Mosquitto: it registers with its own CSR, activates through its status
//! message, registers again safely after a lost answer, and reports its
//! revocation by `onboardctl devices revoke` with one line and exit code 5.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use onboard_broker::testing::{Auth, TestBroker, TestBrokerSpec};
use onboard_core::domain::{Clock, SystemClock};
use onboard_core::{Onboard, Settings};
use onboard_registry::testing::{TestBackend, TestDb};

use crate::support::{onboardctl, openssl, workspace_bin, Server};

/// A failure guard for waits that must end (not a timing assertion).
const WAIT: Duration = Duration::from_secs(60);

/// Settings (as environment) for the server and `onboardctl`: the file broker
/// pointed at the test Mosquitto's files, activation through its service account.
fn broker_env(db: &TestDb, dir: &Path, broker: &TestBroker) -> Vec<(&'static str, String)> {
    let service = broker.service_endpoint();
    let (cert, key) = service.client_cert.as_ref().unwrap();
    std::fs::write(dir.join("service.crt"), cert).unwrap();
    std::fs::write(dir.join("service.key"), key.expose()).unwrap();
    std::fs::write(dir.join("broker-ca.pem"), service.ca_pem.as_ref().unwrap()).unwrap();
    let p = |f: std::path::PathBuf| f.display().to_string();
    vec![
        ("ONBOARD__DATABASE__URL", db.url.clone()),
        ("ONBOARD__BROKER__KIND", "mosquitto-file".into()),
        ("ONBOARD__BROKER__ACL_FILE", p(broker.acl_file())),
        ("ONBOARD__BROKER__PASSWORD_FILE", p(broker.password_file())),
        ("ONBOARD__BROKER__CRL_FILE", p(broker.crl_file())),
        ("ONBOARD__BROKER__RELOAD_PID_FILE", p(broker.pid_file())),
        ("ONBOARD__BROKER__PUBLIC_HOST", "127.0.0.1".into()),
        ("ONBOARD__BROKER__PUBLIC_PORT", broker.tls_port.to_string()),
        (
            "ONBOARD__BROKER__MQTT_URL",
            format!("mqtts://127.0.0.1:{}", broker.tls_port),
        ),
        ("ONBOARD__BROKER__CA_FILE", p(dir.join("broker-ca.pem"))),
        (
            "ONBOARD__BROKER__CLIENT_CERT_FILE",
            p(dir.join("service.crt")),
        ),
        (
            "ONBOARD__BROKER__CLIENT_KEY_FILE",
            p(dir.join("service.key")),
        ),
    ]
}

/// The simulator, its stdout and stderr in files under `dir`.
struct Simulator {
    child: Child,
    out: std::path::PathBuf,
}

impl Simulator {
    fn start(dir: &Path, args: &[&str], key: &str, name: &str) -> Simulator {
        let out = dir.join(format!("{name}.out"));
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new(workspace_bin("onboardctl"))
            .current_dir(dir)
            .env_clear()
            .env("ONBOARD_SIMULATE_KEY", key)
            .args(["device", "simulate"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Simulator { child, out }
    }

    fn output(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.out).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.output().contains(what) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "simulator exited ({status}) before {what:?}: {}",
                    self.output()
                );
            }
            assert!(Instant::now() < deadline, "no {what:?}: {}", self.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn device_by_serial(dir: &Path, env: &[(&str, String)], serial: &str) -> serde_json::Value {
    let (ok, out, err) = onboardctl(dir, env, &["--output", "json", "devices", "list"]);
    assert!(ok, "{err}");
    json(&out)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == serial)
        .cloned()
        .unwrap_or_else(|| panic!("no device {serial}: {out}"))
}

fn wait_active(dir: &Path, env: &[(&str, String)], serial: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = device_by_serial(dir, env, serial);
        if d["status"] == "active" {
            return d["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{serial} never became active: {d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn key_uses(dir: &Path, env: &[(&str, String)]) -> u64 {
    let (ok, out, err) = onboardctl(dir, env, &["--output", "json", "keys", "list"]);
    assert!(ok, "{err}");
    json(&out)["items"][0]["uses"].as_u64().unwrap()
}

fn the_reference_device_registers_activates_and_reports_its_revocation(backend: TestBackend) {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = [("ONBOARD__DATABASE__URL", db.url.clone())];
    let (ok, out, err) = onboardctl(d, &base, &["ca", "init"]);
    assert!(ok, "{out}{err}");
    let ca = {
        let mut settings = Settings::default();
        settings.database.url = db.url.clone();
        settings.ca.dir = d.join("data/ca").display().to_string();
        settings.broker.kind = onboard_core::settings::BrokerKind::None;
        Onboard::open(settings).unwrap().ca().unwrap()
    };
    let broker = TestBroker::start(&TestBrokerSpec {
        ca: &ca,
        now: SystemClock.now(),
        auth: Auth::Files,
        password_listener: false,
        env: &[],
    })
    .unwrap();
    let env = broker_env(&db, d, &broker);
    let server = Server::start(d, &env);
    let (ok, out, err) = onboardctl(
        d,
        &env,
        &[
            "--output",
            "json",
            "keys",
            "create",
            "--batch",
            "sim",
            "--max-uses",
            "10",
        ],
    );
    assert!(ok, "{err}");
    let key = json(&out)["keys"][0]["key"].as_str().unwrap().to_owned();

    let args = [
        "--server",
        server.base.as_str(),
        "--serial",
        "SIM",
        "--count",
        "2",
        "--state-dir",
        "state",
        "--interval",
        "1",
    ];
    let mut sim = Simulator::start(d, &args, &key, "first");
    sim.wait_for("SIM-001: registered as");
    sim.wait_for("SIM-002: registered as");
    let first = wait_active(d, &env, "SIM-001");
    let second = wait_active(d, &env, "SIM-002");
    assert_eq!(key_uses(d, &env), 2);
    sim.wait_for(&format!(
        "SIM-001: connected to 127.0.0.1:{}",
        broker.tls_port
    ));

    // The stored credentials: private files, a certificate our CA chain verifies.
    let state = d.join("state/SIM-001");
    for f in [
        "device.key",
        "device.csr",
        "device.crt",
        "registration.json",
    ] {
        let mode = std::fs::metadata(state.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let (ok, said) = openssl(&state, &["verify", "-CAfile", "ca-chain.pem", "device.crt"]);
    assert!(ok, "{said}");
    let answer = json(&std::fs::read_to_string(state.join("registration.json")).unwrap());
    assert_eq!(answer["device_id"], first.as_str());
    assert!(
        answer.get("private_key_pem").is_none(),
        "the key never left the device"
    );

    // A lost answer: the device stops, its answer is gone, it starts again with the
    // same key pair and CSR and gets the same certificate, without a key use.
    sim.child.kill().unwrap();
    sim.child.wait().unwrap();
    std::fs::remove_file(state.join("registration.json")).unwrap();
    std::fs::remove_file(d.join("state/SIM-002/registration.json")).unwrap();
    let mut sim = Simulator::start(d, &args, &key, "again");
    sim.wait_for(&format!(
        "SIM-001: registered as {first} (certificate {})",
        answer["certificate_serial"].as_str().unwrap()
    ));
    sim.wait_for(&format!("SIM-002: registered as {second}"));
    sim.wait_for("SIM-001: status published");
    sim.wait_for("SIM-002: status published");
    assert_eq!(
        key_uses(d, &env),
        2,
        "a retry with the same CSR takes no use"
    );

    // Revoking one: it reports it and the other keeps running.
    let (ok, out, err) = onboardctl(d, &env, &["devices", "revoke", &first]);
    assert!(ok, "{out}{err}");
    sim.wait_for(&format!("device SIM-001 ({first}) was revoked"));
    let said = sim.output();
    let line = said.lines().find(|l| l.contains("was revoked")).unwrap();
    assert!(
        line.contains("certificate revoked") || line.contains("Revoked"),
        "{line}"
    );
    assert!(
        sim.child.try_wait().unwrap().is_none(),
        "SIM-002 still runs: {said}"
    );
    let (ok, out, err) = onboardctl(d, &env, &["devices", "revoke", &second]);
    assert!(ok, "{out}{err}");
    assert_eq!(sim.wait_exit(), Some(5), "{}", sim.output());
    let said = sim.output();
    assert!(
        said.contains(&format!("device SIM-002 ({second}) was revoked")),
        "{said}"
    );
    assert_eq!(
        said.lines().filter(|l| l.contains("was revoked")).count(),
        3,
        "one line per device, and the last line of the command: {said}"
    );

    // A refused registration: exit 1 with the server's reason.
    let mut bad = Simulator::start(
        d,
        &[
            "--server",
            server.base.as_str(),
            "--serial",
            "SIM-X",
            "--state-dir",
            "state",
        ],
        "not-a-key",
        "bad",
    );
    assert_eq!(bad.wait_exit(), Some(1), "{}", bad.output());
    assert!(
        bad.output()
            .contains("registration refused (401 unauthorized)"),
        "{}",
        bad.output()
    );
    drop(server);
}

#[test]
fn sqlite_the_reference_device_registers_activates_and_reports_its_revocation() {
    the_reference_device_registers_activates_and_reports_its_revocation(TestBackend::Sqlite);
}

#[test]
fn postgres_the_reference_device_registers_activates_and_reports_its_revocation() {
    the_reference_device_registers_activates_and_reports_its_revocation(TestBackend::Postgres);
}
