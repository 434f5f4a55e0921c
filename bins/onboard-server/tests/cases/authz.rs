//! The authorization matrix: every route of the served OpenAPI document, called
//! by every kind of caller, over the real binary's TLS listener with curl.
//!
//! Each route has exactly one row in `ROUTES`, saying who may get through. The
//! routes come from `/api/openapi.json` at run time, so a route added without a
//! row fails this test, as does a row whose route is gone.

use std::collections::BTreeSet;

use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::e2e::env_for;
use crate::iot::{admin, create_model, curl, headers, register, revoke, start, Tls};
use crate::support::{self, post_json};

/// Who a route lets through (beyond that, the handler decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// No credentials needed; credentials of any kind change nothing.
    Open,
    /// A bootstrap key (`Authorization: Bearer <key>`) only.
    Bootstrap,
    /// An admin token only.
    Admin,
    /// A device: its client certificate (mutual TLS) or an access token.
    Device,
    /// A device's client certificate only.
    Certificate,
    /// HTTP Basic credentials (an OAuth2 client's id and secret, or EST's serial
    /// and bootstrap key), which none of the matrix's callers presents: every one
    /// of them is refused.
    Client,
}

/// Every route and its gate. Adding a route means adding its row here.
const ROUTES: &[(&str, &str, Gate)] = &[
    ("GET", "/api/health", Gate::Open),
    ("GET", "/api/health/ready", Gate::Open),
    ("GET", "/metrics", Gate::Open),
    ("GET", "/api/openapi.json", Gate::Open),
    ("GET", "/api/docs", Gate::Open),
    ("GET", "/public/v1/ca", Gate::Open),
    ("GET", "/public/v1/crl", Gate::Open),
    ("GET", "/public/v1/bundles/{token}", Gate::Open),
    ("GET", "/.well-known/jwks.json", Gate::Open),
    ("POST", "/public/v1/ocsp", Gate::Open),
    ("GET", "/public/v1/ocsp/{request}", Gate::Open),
    ("GET", "/.well-known/openid-configuration", Gate::Open),
    ("POST", "/public/v1/register", Gate::Bootstrap),
    ("GET", "/.well-known/est/cacerts", Gate::Open),
    ("GET", "/.well-known/est/csrattrs", Gate::Open),
    ("POST", "/.well-known/est/simpleenroll", Gate::Client),
    ("POST", "/.well-known/est/simplereenroll", Gate::Certificate),
    ("GET", "/.well-known/est/{label}/cacerts", Gate::Open),
    ("GET", "/.well-known/est/{label}/csrattrs", Gate::Open),
    (
        "POST",
        "/.well-known/est/{label}/simpleenroll",
        Gate::Client,
    ),
    (
        "POST",
        "/.well-known/est/{label}/simplereenroll",
        Gate::Certificate,
    ),
    ("POST", "/iot/token", Gate::Client),
    ("GET", "/iot/config", Gate::Device),
    ("GET", "/iot/provisioning", Gate::Device),
    ("GET", "/iot/firmware", Gate::Device),
    ("POST", "/iot/activate", Gate::Device),
    ("POST", "/iot/renew", Gate::Device),
    ("POST", "/iot/rotation/ack", Gate::Device),
    ("GET", "/private/v1/admin/ca", Gate::Admin),
    ("GET", "/private/v1/admin/audit", Gate::Admin),
    ("GET", "/private/v1/admin/bootstrap-keys", Gate::Admin),
    ("POST", "/private/v1/admin/bootstrap-keys", Gate::Admin),
    ("GET", "/private/v1/admin/bootstrap-keys/{id}", Gate::Admin),
    (
        "DELETE",
        "/private/v1/admin/bootstrap-keys/{id}",
        Gate::Admin,
    ),
    (
        "POST",
        "/private/v1/admin/bootstrap-keys/{id}/activate",
        Gate::Admin,
    ),
    (
        "POST",
        "/private/v1/admin/bootstrap-keys/{id}/deactivate",
        Gate::Admin,
    ),
    ("GET", "/private/v1/admin/devices", Gate::Admin),
    ("POST", "/private/v1/admin/devices", Gate::Admin),
    ("GET", "/private/v1/admin/devices/{id}", Gate::Admin),
    ("PATCH", "/private/v1/admin/devices/{id}", Gate::Admin),
    ("DELETE", "/private/v1/admin/devices/{id}", Gate::Admin),
    ("POST", "/private/v1/admin/devices/{id}/revoke", Gate::Admin),
    (
        "GET",
        "/private/v1/admin/devices/{id}/provisioning",
        Gate::Admin,
    ),
    ("POST", "/private/v1/admin/devices/{id}/rotate", Gate::Admin),
    ("GET", "/private/v1/admin/models", Gate::Admin),
    ("POST", "/private/v1/admin/models", Gate::Admin),
    ("GET", "/private/v1/admin/models/{code}", Gate::Admin),
    ("PATCH", "/private/v1/admin/models/{code}", Gate::Admin),
    ("DELETE", "/private/v1/admin/models/{code}", Gate::Admin),
    (
        "GET",
        "/private/v1/admin/models/{code}/firmware",
        Gate::Admin,
    ),
    (
        "PUT",
        "/private/v1/admin/models/{code}/firmware",
        Gate::Admin,
    ),
    ("GET", "/private/v1/admin/rotation", Gate::Admin),
    ("POST", "/private/v1/admin/rotation/trigger", Gate::Admin),
];

/// The callers, each with the curl arguments that present its credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Nobody,
    BootstrapKey,
    AdminToken,
    /// Device A's client certificate.
    DeviceCertificate,
    /// Device B's access token (a password device).
    DeviceToken,
    /// Device C's certificate, revoked.
    RevokedCertificate,
    /// Device B's token with its signature altered.
    ForgedToken,
    /// A token with `alg: none` naming device B.
    UnsignedToken,
}

const CALLERS: [Caller; 8] = [
    Caller::Nobody,
    Caller::BootstrapKey,
    Caller::AdminToken,
    Caller::DeviceCertificate,
    Caller::DeviceToken,
    Caller::RevokedCertificate,
    Caller::ForgedToken,
    Caller::UnsignedToken,
];

impl Gate {
    /// Whether `caller` gets past this route's gate.
    fn admits(self, caller: Caller) -> bool {
        match self {
            Gate::Open => true,
            Gate::Bootstrap => caller == Caller::BootstrapKey,
            Gate::Admin => caller == Caller::AdminToken,
            Gate::Device => matches!(caller, Caller::DeviceCertificate | Caller::DeviceToken),
            Gate::Certificate => caller == Caller::DeviceCertificate,
            Gate::Client => false,
        }
    }
}

struct Credentials {
    bootstrap: String,
    admin: String,
    token: String,
    forged: String,
    unsigned: String,
}

impl Credentials {
    fn args(&self, caller: Caller) -> (Option<&'static str>, Vec<String>) {
        let bearer = |t: &str| vec!["-H".to_owned(), format!("Authorization: Bearer {t}")];
        match caller {
            Caller::Nobody => (None, vec![]),
            Caller::BootstrapKey => (None, bearer(&self.bootstrap)),
            Caller::AdminToken => (None, bearer(&self.admin)),
            Caller::DeviceCertificate => (Some("a"), vec![]),
            Caller::DeviceToken => (None, bearer(&self.token)),
            Caller::RevokedCertificate => (Some("c"), vec![]),
            Caller::ForgedToken => (None, bearer(&self.forged)),
            Caller::UnsignedToken => (None, bearer(&self.unsigned)),
        }
    }
}

/// The routes the served document lists, as (method, path).
fn documented_routes(t: &Tls) -> BTreeSet<(String, String)> {
    let doc = support::get(&t.server.url("/api/openapi.json")).json();
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// What the matrix counts to see that a refused call changed nothing.
fn snapshot(db: &TestDb) -> Vec<Vec<String>> {
    support::sql(
        &db.url,
        "SELECT (SELECT COUNT(*) FROM devices), \
                (SELECT COUNT(*) FROM certificates), \
                (SELECT COUNT(*) FROM certificates WHERE revoked_at IS NOT NULL), \
                (SELECT COUNT(*) FROM bootstrap_keys), \
                (SELECT COALESCE(SUM(uses), 0) FROM bootstrap_key_uses), \
                (SELECT COUNT(*) FROM device_models), \
                (SELECT COUNT(*) FROM mqtt_credentials), \
                (SELECT COUNT(*) FROM rotations), \
                (SELECT COUNT(*) FROM credential_bundles), \
                (SELECT COUNT(*) FROM model_firmware)",
    )
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn every_route_admits_only_its_callers() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = start(d, &db, &[]);
    let auth = admin(&t);

    // The fleet: certificate devices A and C (C revoked), password device B.
    create_model(&t, "thermo");
    let key = crate::faults::create_key(d, &env_for(&db), "authz", 10);
    let a = register(d, &t, &key.secret, "SN-AUTHZ-A", "a");
    let c = register(d, &t, &key.secret, "SN-AUTHZ-C", "c");
    revoke(&t, c["device_id"].as_str().unwrap());
    let r = post_json(
        &t.server.url("/private/v1/admin/devices"),
        &headers(&auth),
        &json!({"name": "pw-b", "credential": "password"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let b = r.json();
    let b_id = b["device"]["id"].as_str().unwrap().to_owned();
    let r = curl(
        d,
        &t,
        "POST",
        "/iot/token",
        None,
        &[
            "-u",
            &format!(
                "{}:{}",
                b["client_id"].as_str().unwrap(),
                b["client_secret"].as_str().unwrap()
            ),
            "--data",
            "grant_type=client_credentials",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut forged_sig = signature.as_bytes().to_vec();
    forged_sig[4] = if forged_sig[4] == b'A' { b'B' } else { b'A' };
    let forged = format!("{signed}.{}", String::from_utf8(forged_sig).unwrap());
    let claims = signed.split_once('.').unwrap().1;
    let unsigned = format!("{}.{claims}.", b64url(br#"{"alg":"none","typ":"at+jwt"}"#));
    let creds = Credentials {
        bootstrap: key.secret.clone(),
        admin: t.token.clone(),
        token,
        forged,
        unsigned,
    };

    // The document and the matrix name the same routes.
    let documented = documented_routes(&t);
    let rows: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(rows.len(), ROUTES.len(), "a route has two rows");
    let missing: Vec<_> = documented.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in ROUTES: {missing:?}"
    );
    let gone: Vec<_> = rows.difference(&documented).collect();
    assert!(gone.is_empty(), "rows whose route is not served: {gone:?}");

    // Path parameters name real things: device B (so device A's credentials aim
    // at another device), the batch's key, the model, an unknown bundle link.
    let concrete = |path: &str| {
        path.replace(
            "{id}",
            if path.contains("/bootstrap-keys/") {
                &key.id
            } else {
                &b_id
            },
        )
        .replace("{code}", "thermo")
        .replace("{token}", &"x".repeat(43))
        .replace("{request}", "MAA%3D")
        .replace("{label}", "authz")
    };
    // A well-formed registration, so that only the credential decides (the body
    // is read before the key); every other route checks the caller first.
    let registration = json!({
        "serial": "SN-AUTHZ-X",
        "model": "thermo",
        "csr": support::p256_csr(d, "x"),
    })
    .to_string();
    let call = |method: &str, path: &str, caller: Caller| {
        let (cert, mut args) = creds.args(caller);
        if path == "/iot/token" {
            args.extend([
                "--data".to_owned(),
                "grant_type=client_credentials".to_owned(),
            ]);
        } else if method != "GET" && method != "DELETE" {
            let body = if path == "/public/v1/register" {
                registration.clone()
            } else {
                "{}".to_owned()
            };
            args.extend([
                "-H".to_owned(),
                "Content-Type: application/json".to_owned(),
                "--data".to_owned(),
                body,
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(d, &t, method, &concrete(path), cert, &args)
    };

    // Every refusal first, and nothing may change through them.
    let before = snapshot(&db);
    let mut refused = 0;
    for &(method, path, gate) in ROUTES {
        for caller in CALLERS {
            if gate.admits(caller) {
                continue;
            }
            let r = call(method, path, caller);
            assert_eq!(
                r.status, 401,
                "{method} {path} as {caller:?} must be refused: {}",
                r.body
            );
            let body = r.json();
            assert!(
                body["error"].is_string(),
                "{method} {path} as {caller:?}: our JSON error body: {}",
                r.body
            );
            refused += 1;
        }
    }
    assert_eq!(snapshot(&db), before, "a refused call changed something");
    assert!(refused > 100, "{refused} refusals");

    // A device reaches its own data only, whichever device a path might name.
    let r = call("GET", "/iot/provisioning", Caller::DeviceCertificate);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["device_id"], a["device_id"]);
    let r = call("GET", "/iot/provisioning", Caller::DeviceToken);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["device_id"], b_id.as_str());

    // Then every admitted caller gets past the gate (last: these calls may change
    // things, such as B's secret or A's activation): the handler answers, never
    // 401, 403 or a server error.
    for &(method, path, gate) in ROUTES {
        for caller in CALLERS {
            if !gate.admits(caller) {
                continue;
            }
            let r = call(method, path, caller);
            assert!(
                r.status != 0 && r.status != 401 && r.status != 403 && r.status < 500,
                "{method} {path} as {caller:?}: {} {}",
                r.status,
                r.body
            );
        }
    }
}
