//! The real binaries with AWS IoT Core on (a moto server): a device flashed for the
//! earlier FastAPI service registers unchanged, the operator sees the AWS ids, and
//! AWS going away answers 503 with our JSON body naming the AWS call.

use onboard_aws_iot::testing::MotoServer;
use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::support::{onboardctl, post_json, Server};

fn env_with_aws(db: &TestDb, moto: &MotoServer, mode: &str) -> Vec<(&'static str, String)> {
    let mut env = crate::e2e::env_for(db);
    env.extend([
        ("ONBOARD__AWS__ENABLED", "true".into()),
        ("ONBOARD__AWS__ENDPOINT_URL", moto.url()),
        ("ONBOARD__AWS__REGION", "us-east-1".into()),
        ("ONBOARD__AWS__CERTIFICATE_MODE", mode.into()),
        ("ONBOARD__AWS__TIMEOUT_SECONDS", "5".into()),
        ("ONBOARD__AWS__MAX_ATTEMPTS", "2".into()),
        // The standard credential chain, from the environment.
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]);
    env
}

fn certificate_status(moto: &MotoServer, id: &str) -> String {
    let aws = moto.registrar(|_| {});
    aws.block_on(async {
        aws.client()
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .unwrap()
            .certificate_description()
            .unwrap()
            .status()
            .unwrap()
            .as_str()
            .to_owned()
    })
}

fn an_earlier_service_device_registers_unchanged(backend: TestBackend, mode: &str) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut moto = MotoServer::start().unwrap();
    let env = env_with_aws(&db, &moto, mode);
    let server = Server::start(dir.path(), &env);
    let key = crate::faults::create_key(dir.path(), &env, "legacy", 5).secret;

    // What a device flashed for the earlier service sends, and reads.
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("X-Api-Key", &key)],
        &json!({"device_id": "SN-legacy-aws"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let body = r.json();
    for field in [
        "certificate_pem",
        "private_key",
        "certificate_id",
        "thing_name",
        "thing_arn",
    ] {
        assert!(
            body[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field} missing: {body}"
        );
    }
    assert!(body["private_key"]
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));
    assert_eq!(body["private_key"], body["private_key_pem"]);
    assert_eq!(body["serial"], "SN-legacy-aws");
    assert_eq!(body["aws"]["thing_name"], body["thing_name"]);
    assert!(body["aws"]["endpoint"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    let cert_id = body["certificate_id"].as_str().unwrap().to_owned();
    assert_eq!(certificate_status(&moto, &cert_id), "ACTIVE");
    let device_id = body["device_id"].as_str().unwrap().to_owned();

    // The operator sees the AWS ids (CLI table and JSON).
    let (ok, stdout, stderr) = onboardctl(dir.path(), &env, &["devices", "show", &device_id]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&cert_id), "{stdout}");
    assert!(
        stdout.contains(body["thing_arn"].as_str().unwrap()),
        "{stdout}"
    );
    let (ok, stdout, stderr) = onboardctl(
        dir.path(),
        &env,
        &["--output", "json", "devices", "show", &device_id],
    );
    assert!(ok, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["aws"]["certificate_id"], cert_id.as_str());
    assert_eq!(shown["aws"]["thing_name"], body["thing_name"]);

    // Revocation from the CLI reaches AWS.
    let (ok, _, stderr) = onboardctl(dir.path(), &env, &["devices", "revoke", &device_id]);
    assert!(ok, "{stderr}");
    assert_eq!(certificate_status(&moto, &cert_id), "REVOKED");

    // AWS gone: 503 with our JSON body naming the call, and nothing registered.
    moto.stop();
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("X-Api-Key", &key)],
        &json!({"device_id": "SN-aws-down"}),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    let err = r.json();
    assert_eq!(err["error"], "aws_unavailable");
    assert!(
        err["message"].as_str().unwrap().contains("AWS IoT"),
        "{err}"
    );
    let (ok, stdout, _) = onboardctl(dir.path(), &env, &["--output", "json", "devices", "list"]);
    assert!(ok);
    assert!(!stdout.contains("SN-aws-down"), "{stdout}");
}

#[test]
fn sqlite_an_earlier_service_device_registers_unchanged_own_ca() {
    an_earlier_service_device_registers_unchanged(TestBackend::Sqlite, "own-ca");
}

#[test]
fn postgres_an_earlier_service_device_registers_unchanged_aws_issued() {
    an_earlier_service_device_registers_unchanged(TestBackend::Postgres, "aws-issued");
}

/// Bounded wait for `cond` (a failure guard, not a timing bound).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("gave up waiting for {what}");
}

/// Whether a request waits unread in a socket that listens on `port` (the
/// kernel accepted the connection and holds its bytes while the server is paused).
fn request_waiting(port: u16) -> bool {
    let local = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local address, remote, state 01 = ESTABLISHED, tx_queue:rx_queue
            f.len() > 4
                && format!("{} ", f[1]).ends_with(&local)
                && f[3] == "01"
                && f[4]
                    .split(':')
                    .nth(1)
                    .is_some_and(|rx| u64::from_str_radix(rx, 16).unwrap_or(0) > 0)
        })
}

fn inventory(moto: &MotoServer) -> (Vec<String>, Vec<String>) {
    onboard_aws_iot::testing::inventory(&moto.registrar(|_| {}))
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// kill -9 of the real server while a registration's AWS call is in flight: the
/// call lands in AWS after the crash (a Thing that nobody owns); the restarted
/// server's first reconciler pass removes it, and no device, certificate or key
/// use remains.
#[test]
fn a_kill_during_an_aws_call_converges_after_restart() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    let mut env = env_with_aws(&db, &moto, "own-ca");
    env.retain(|(k, _)| *k != "ONBOARD__AWS__TIMEOUT_SECONDS");
    env.push(("ONBOARD__AWS__TIMEOUT_SECONDS", "60".into()));
    let mut server = Server::start(dir.path(), &env);
    let key = crate::faults::create_key(dir.path(), &env, "crash", 5);
    // A first device: the policy exists and the endpoint is known, so the next
    // registration's first AWS call creates its Thing.
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {}", key.secret))],
        &json!({"serial": "SN-first"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let before = inventory(&moto);
    assert_eq!((before.0.len(), before.1.len()), (1, 1), "{before:?}");

    let pid = moto.pid().unwrap();
    signal(pid, "STOP");
    let url = server.url("/public/v1/register");
    let secret = key.secret.clone();
    let call = std::thread::spawn(move || {
        crate::support::try_post_json(
            &url,
            &[("Authorization", &format!("Bearer {secret}"))],
            &json!({"serial": "SN-crash"}),
        )
    });
    wait_until("the AWS request to reach the paused emulator", || {
        request_waiting(moto.port())
    });
    server.kill();
    assert!(
        call.join().unwrap().is_none(),
        "no answer from a killed server"
    );
    signal(pid, "CONT");
    wait_until("the request to land in AWS after the crash", || {
        inventory(&moto).0.len() == 2
    });

    // The restart's reconciler pass (before it serves) removes what nobody owns.
    let _server = Server::start(dir.path(), &env);
    assert_eq!(
        inventory(&moto),
        before,
        "only the first device is left in AWS"
    );
    let (ok, stdout, stderr) =
        onboardctl(dir.path(), &env, &["--output", "json", "devices", "list"]);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("SN-crash"), "{stdout}");
    let (ok, stdout, stderr) = onboardctl(
        dir.path(),
        &env,
        &["--output", "json", "keys", "show", &key.id],
    );
    assert!(ok, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        shown["uses"], 1,
        "only the first device's use was spent: {shown}"
    );
}
