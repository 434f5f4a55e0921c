//! What `deploy/` ships, checked offline: the kustomize base and overlay render and
//! every object validates against the Kubernetes schemas (kubernetes-validate),
//! the PrometheusRule parses (promtool), the compose file follows the compose
//! spec (check-jsonschema), the settings files load, every metric the alerts and
//! the dashboard use is on a running server's `/metrics`, the Dockerfile's runtime
//! has the libraries the binaries link, and every setting is documented.
//! The tools come from `scripts/test-services.sh` (PATH).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use onboard_core::Settings;
use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::{json, Value};

use crate::support::{self, post_json, Server};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a checker; panics with its output when it fails (or is missing).
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?} ({e}): run the tests through scripts/test-services.sh")
    });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every document of a YAML stream, as JSON (PyYAML from target/testenv).
fn yaml_docs(yaml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = run(Command::new("python3").arg("-c").arg(
        "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
    ).arg(&file));
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

fn kustomize(dir: &str) -> Vec<Value> {
    let rendered = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir)));
    yaml_docs(&rendered)
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

/// Every pod template in the objects (Deployment, Job, CronJob).
fn pod_specs(objects: &[Value]) -> Vec<(String, &Value)> {
    let mut specs = Vec::new();
    for o in objects {
        let name = format!(
            "{}/{}",
            o["kind"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        );
        let spec = match o["kind"].as_str() {
            Some("Deployment" | "Job") => &o["spec"]["template"]["spec"],
            Some("CronJob") => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => continue,
        };
        specs.push((name, spec));
    }
    specs
}

/// The rendered objects of one kustomization, checked: schemas, the settings in
/// the ConfigMap, the server's probes and hardening, one CA for every pod,
/// the CronJob, and the Prometheus Operator objects.
fn check_kustomization(dir: &str, secrets_generated: bool) -> Vec<Value> {
    let objects = kustomize(dir);
    let tmp = tempfile::tempdir().unwrap();

    // Built-in kinds against Kubernetes 1.30's schemas, each object on its own.
    let mut crds = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let api = o["apiVersion"].as_str().unwrap_or_default();
        if api.starts_with("monitoring.coreos.com/") {
            crds.push(o);
            continue;
        }
        let file = tmp.path().join(format!("{i}.json"));
        std::fs::write(&file, o.to_string()).unwrap();
        let said = run(Command::new("kubernetes-validate")
            .args(["--strict", "-k", "1.30.0"])
            .arg(&file));
        assert!(
            !said.contains("WARN") && !said.contains("ERROR"),
            "{dir}: {said}"
        );
    }
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
        "CronJob",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(kind), "{dir} has no {kind}: {kinds:?}");
    }
    assert_eq!(crds.len(), 2, "{dir}: ServiceMonitor and PrometheusRule");

    // The settings every pod reads are valid settings.
    let config = find(&objects, "ConfigMap")[0]["data"]["onboard.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let toml = tmp.path().join("onboard.toml");
    std::fs::write(&toml, &config).unwrap();
    let settings = Settings::load(Some(&toml)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    assert!(
        !settings.database.run_migrations,
        "{dir}: the migrate Job applies them"
    );
    assert!(
        settings.rate_limit.trust_forwarded_for,
        "{dir}: behind the ingress"
    );

    // The server: probes on the health routes, resources, hardening, and the CA
    // from the one Secret onboard-ca (never a per-pod directory).
    let deployment = find(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"];
    let server = &pod["spec"]["containers"][0];
    assert_eq!(server["livenessProbe"]["httpGet"]["path"], "/api/health");
    assert_eq!(
        server["readinessProbe"]["httpGet"]["path"],
        "/api/health/ready"
    );
    assert!(server["readinessProbe"]["timeoutSeconds"].as_i64().unwrap() > 2);
    assert!(server["resources"]["requests"]["cpu"].is_string());
    assert!(server["resources"]["limits"]["memory"].is_string());
    assert_eq!(server["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(server["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert!(labels_match(
        &deployment["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    let service = find(&objects, "Service")[0];
    assert!(labels_match(
        &service["spec"]["selector"],
        &pod["metadata"]["labels"]
    ));
    let pdb = find(&objects, "PodDisruptionBudget")[0];
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    let hpa = find(&objects, "HorizontalPodAutoscaler")[0];
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    // No other pod is selected by the Service (Jobs must not receive traffic).
    for (name, _) in pod_specs(&objects)
        .iter()
        .filter(|(n, _)| !n.starts_with("Deployment/"))
    {
        let o = objects
            .iter()
            .find(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ) == *name
            })
            .unwrap();
        let labels = if o["kind"] == "CronJob" {
            &o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        } else {
            &o["spec"]["template"]["metadata"]["labels"]
        };
        assert!(
            !labels_match(&service["spec"]["selector"], labels),
            "the Service selects {name}"
        );
    }
    let ca_dir = settings.ca.dir.clone();
    for (name, spec) in pod_specs(&objects) {
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        for c in spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(spec["initContainers"].as_array().into_iter().flatten())
        {
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                if m["mountPath"] == ca_dir.as_str() {
                    let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
                    assert_eq!(
                        v["secret"]["secretName"], "onboard-ca",
                        "{name}: the CA is the one Secret"
                    );
                }
            }
            // Every referenced Secret exists in the render, or is onboard-ca.
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(secret) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    if secrets_generated {
                        assert!(
                            objects
                                .iter()
                                .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == secret),
                            "{name} reads the missing Secret {secret}"
                        );
                    }
                }
            }
        }
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
    }
    let server_mounts_ca = server["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == ca_dir.as_str());
    assert!(server_mounts_ca, "the server mounts ca.dir from the Secret");

    // The CA is made once, by a Job running `onboardctl ca init`.
    let ca_init = find(&objects, "Job")
        .into_iter()
        .find(|j| j["metadata"]["name"] == "onboard-ca-init")
        .unwrap();
    let init = ca_init["spec"]["template"]["spec"]["initContainers"][0]["command"].to_string();
    assert!(init.contains("\"ca\",\"init\""), "{init}");
    let store = ca_init["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        store.contains("create secret generic onboard-ca"),
        "{store}"
    );
    let migrate = find(&objects, "Job")
        .into_iter()
        .find(|j| j["metadata"]["name"] == "onboard-migrate")
        .unwrap();
    assert!(
        migrate["spec"]["template"]["spec"]["containers"][0]["command"]
            .to_string()
            .contains("\"migrate\"")
    );

    // One rotation cycle at a time.
    let cron = find(&objects, "CronJob")[0];
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let cmd = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
        .to_string();
    assert!(cmd.contains("\"rotation\",\"run-job\""), "{cmd}");

    // The ServiceMonitor scrapes /metrics on a port the Service has; the rules parse.
    let monitor = find(&objects, "ServiceMonitor")[0];
    assert!(labels_match(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert!(service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == endpoint["port"]));
    promtool_check(&find(&objects, "PrometheusRule")[0]["spec"]);
    objects
}

/// `promtool check rules` on a PrometheusRule's spec (JSON is YAML).
fn promtool_check(spec: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, spec.to_string()).unwrap();
    let said = run(Command::new("promtool").args(["check", "rules"]).arg(&file));
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn kustomize_base_and_overlay_render_and_every_object_validates() {
    check_kustomization("deploy/kubernetes/base", false);
    let overlay = check_kustomization("deploy/kubernetes/overlays/example", true);
    for o in &overlay {
        if o["kind"] != "Namespace" {
            assert_eq!(
                o["metadata"]["namespace"], "onboard",
                "{}",
                o["metadata"]["name"]
            );
        }
    }
    let alerts: BTreeSet<String> = find(&overlay, "PrometheusRule")[0]["spec"]["groups"][0]
        ["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(alerts.len(), 5, "{alerts:?}");
}

#[test]
fn a_broken_rule_or_manifest_fails_the_checks() {
    // The checks can fail: promtool refuses a bad expression...
    let bad =
        json!({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, bad.to_string()).unwrap();
    assert!(!Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap()
        .status
        .success());
    // ...and kubernetes-validate a Deployment with a misspelt field.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x"}, "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let file = dir.path().join("d.json");
    std::fs::write(&file, deployment.to_string()).unwrap();
    assert!(!Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.30.0"])
        .arg(&file)
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn the_compose_file_follows_the_compose_spec_and_its_settings_load() {
    let compose = repo().join("deploy/compose/compose.yaml");
    run(Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&compose));
    let doc = &yaml_docs(&read("deploy/compose/compose.yaml"))[0];
    let services = doc["services"].as_object().unwrap();
    for name in ["postgres", "migrate", "ca-init", "mosquitto", "onboard"] {
        assert!(services.contains_key(name), "no {name} service");
    }
    let volumes = doc["volumes"].as_object().unwrap();
    for (name, service) in services {
        for dep in service["depends_on"].as_object().into_iter().flatten() {
            assert!(
                services.contains_key(dep.0),
                "{name} depends on the unknown {}",
                dep.0
            );
        }
        for v in service["volumes"].as_array().into_iter().flatten() {
            let source = v.as_str().unwrap().split(':').next().unwrap();
            if let Some(file) = source.strip_prefix("./") {
                assert!(
                    repo().join("deploy/compose").join(file).exists(),
                    "{name} mounts the missing {file}"
                );
            } else {
                assert!(
                    volumes.contains_key(source),
                    "{name} mounts the undeclared volume {source}"
                );
            }
        }
    }
    for name in ["postgres", "mosquitto", "onboard"] {
        assert!(
            services[name]["healthcheck"]["test"].is_array(),
            "{name} has no health check"
        );
    }
    assert_eq!(
        services["onboard"]["pid"], "service:mosquitto",
        "Onboard signals Mosquitto"
    );
    assert_eq!(
        services["onboard"]["user"], services["mosquitto"]["user"],
        "SIGHUP needs the same user"
    );
    let init = services["ca-init"]["command"].to_string();
    assert!(
        init.contains("onboardctl ca init") && init.contains("onboardctl acl sync"),
        "{init}"
    );

    // The compose settings are valid, and they point at the files Mosquitto reads.
    let settings = Settings::load(Some(&repo().join("deploy/compose/onboard.toml"))).unwrap();
    let conf = read("deploy/compose/mosquitto.conf");
    for path in [
        &settings.broker.acl_file,
        &settings.broker.password_file,
        &settings.broker.crl_file,
        &settings.broker.reload_pid_file,
    ] {
        assert!(
            conf.contains(path.as_str()),
            "mosquitto.conf does not use {path}"
        );
    }
}

/// Every `onboard_...` name in the alert rules and the dashboard.
fn metrics_used() -> BTreeSet<String> {
    let mut text = String::new();
    for o in yaml_docs(&read("deploy/kubernetes/base/prometheusrule.yaml")) {
        for r in o["spec"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
        {
            text.push_str(r["expr"].as_str().unwrap());
            text.push('\n');
        }
    }
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/onboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            text.push_str(t["expr"].as_str().unwrap());
            text.push('\n');
        }
    }
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("onboard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_served() {
    let used = metrics_used();
    for expected in [
        "onboard_registrations_total",
        "onboard_rotations",
        "onboard_crl_next_update_timestamp_seconds",
        "onboard_ca_not_after_timestamp_seconds",
        "onboard_devices",
        "onboard_http_requests_total",
    ] {
        assert!(used.contains(expected), "{expected} is not used: {used:?}");
    }
    // A real server that registered one device and refused one key.
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let env = crate::e2e::env_for(&db);
    let server = Server::start(dir.path(), &env);
    let key = crate::faults::create_key(dir.path(), &env, "metrics", 5).secret;
    let ok = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {key}"))],
        &json!({"serial": "SN-METRICS-1"}),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    let refused = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", "Bearer obk_nope")],
        &json!({"serial": "SN-METRICS-2"}),
    );
    assert_eq!(refused.status, 401);
    // The gauges are set by the server's first reconciler pass and device count.
    let mut missing = Vec::new();
    for _ in 0..100 {
        let served = support::get(&server.url("/metrics")).body;
        let names: BTreeSet<&str> = served
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        missing = used
            .iter()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("not on /metrics: {missing:?}\n{}", server.log());
}

#[test]
fn the_dockerfile_builds_both_binaries_and_runs_them_unprivileged_with_the_libraries_they_link() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(
        stages[0].starts_with("FROM rust:") && stages[0].ends_with(" AS builder"),
        "{}",
        stages[0]
    );
    assert!(
        stages[1].starts_with("FROM debian:bookworm-slim"),
        "{}",
        stages[1]
    );
    let runtime = &dockerfile[dockerfile.find(stages[1]).unwrap()..];
    assert!(dockerfile.contains("--bin onboard-server --bin onboardctl"));
    assert!(
        runtime.contains("target/release/onboard-server")
            && runtime.contains("target/release/onboardctl")
    );
    let user = runtime
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    let uid = user.trim_start_matches("USER ").split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "{user}: non-root, numeric (runAsNonRoot)"
    );

    // Each shared library the binaries need comes from a package the runtime
    // installs (libc and libgcc are in the base image).
    let installed: BTreeSet<&str> = runtime.split_whitespace().collect();
    for bin in ["onboard-server", "onboardctl"] {
        let exe = support::workspace_bin(bin);
        let needed = run(Command::new("readelf").arg("-d").arg(&exe));
        for lib in needed
            .lines()
            .filter_map(|l| l.split("Shared library: [").nth(1))
            .map(|l| l.trim_end_matches(']'))
        {
            let path = run(Command::new("sh").arg("-c").arg(format!(
                "ldd {} | awk '$1 == \"{lib}\" {{print $3}}'",
                exe.display()
            )));
            let path = path.trim();
            if lib.starts_with("ld-linux") {
                continue; // the dynamic loader, part of libc6
            }
            assert!(
                path.starts_with('/'),
                "ldd does not resolve {lib} for {bin}"
            );
            // dpkg knows a library by one of its two names on a merged /usr.
            let alternative = path
                .strip_prefix("/usr")
                .map(str::to_owned)
                .unwrap_or(format!("/usr{path}"));
            let owner = [path, alternative.as_str()]
                .iter()
                .find_map(|p| {
                    let out = Command::new("dpkg").arg("-S").arg(p).output().ok()?;
                    out.status
                        .success()
                        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
                })
                .unwrap_or_else(|| panic!("no package owns {path}"));
            let package = owner.split(':').next().unwrap().to_owned();
            if ["libc6", "libgcc-s1"].contains(&package.as_str()) {
                continue;
            }
            assert!(
                installed.contains(package.as_str()),
                "{bin} links {lib} from {package}, which the runtime does not install"
            );
        }
    }
    let ignore = read(".dockerignore");
    assert!(
        ignore
            .lines()
            .any(|l| l.trim() == "target/" || l.trim() == "target"),
        "target/ stays out of the context"
    );
}

/// Every key of onboard.example.toml is explained in docs/settings.md.
#[test]
fn every_setting_in_the_example_file_is_documented() {
    let example = read("onboard.example.toml");
    let docs = read("docs/settings.md");
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in example.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            section = name.to_owned();
        } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            keys.push(format!("{section}.{}", key.trim()));
        }
    }
    assert!(keys.len() > 40, "{keys:?}");
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| !docs.contains(&format!("`{k}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/settings.md: {undocumented:?}"
    );
}

/// The Kubernetes settings run a server: on PostgreSQL, with the CA that `ca
/// init` made (encrypted with the mounted passphrase), admin tokens from the
/// environment, and nothing written outside the mounted directories (the pods'
/// root file system is read-only).
#[test]
fn the_kubernetes_settings_serve_on_postgres_and_write_nothing_outside_the_mounts() {
    let objects = kustomize("deploy/kubernetes/base");
    let config = find(&objects, "ConfigMap")[0]["data"]["onboard.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let db = TestDb::new(TestBackend::Postgres);
    let mounts = tempfile::tempdir().unwrap();
    let ca = mounts.path().join("ca");
    let passphrase = mounts.path().join("passphrase");
    std::fs::write(&passphrase, "a long example passphrase\n").unwrap();
    let config = config
        .replace(
            "/etc/onboard/ca-passphrase/passphrase",
            &passphrase.display().to_string(),
        )
        .replace("/etc/onboard/ca", &ca.display().to_string())
        .replace("0.0.0.0:8080", "127.0.0.1:0");
    let toml = mounts.path().join("onboard.toml");
    std::fs::write(&toml, config).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    // What `onboardctl admin token create` prints as the hash (a SHA-256).
    let hash = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881".to_owned();
    let env = vec![
        ("ONBOARD_CONFIG", toml.display().to_string()),
        ("ONBOARD__DATABASE__URL", db.url.clone()),
        ("ONBOARD__ADMIN__TOKEN_HASHES", hash),
    ];
    // The migrate Job, then the ca-init Job (into what becomes the Secret).
    let (ok, out, err) = support::onboardctl(cwd.path(), &env, &["migrate"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = support::onboardctl(cwd.path(), &env, &["ca", "init"]);
    assert!(ok, "{out}{err}");
    let key = std::fs::read_to_string(ca.join("ca.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let server = Server::start(cwd.path(), &env);
    let ready = support::get(&server.url("/api/health/ready"));
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["database"], "postgres");
    let metrics = support::get(&server.url("/metrics"));
    assert_eq!(metrics.status, 200);
    // Only the test's own server log is in the working directory.
    let written: Vec<String> = std::fs::read_dir(cwd.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "server.log")
        .collect();
    assert!(
        written.is_empty(),
        "written outside the mounts: {written:?}\n{}",
        server.log()
    );
}
