//! Running the real `onboard-server` binary, a throwaway PostgreSQL cluster, and a
//! plain HTTP client, for the end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::Duration;

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn read(mut r: ureq::http::Response<ureq::Body>) -> Response {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Response {
        status,
        content_type,
        body,
    }
}

pub fn post_json(url: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Response {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    read(
        req.content_type("application/json")
            .send(body.to_string())
            .unwrap(),
    )
}

/// Like [`post_json`], but `None` when the exchange did not complete (connection
/// refused or reset, or the body cut off): the server was killed meanwhile.
pub fn try_post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Option<Response> {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req
        .content_type("application/json")
        .send(body.to_string())
        .ok()?;
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = r.body_mut().read_to_string().ok()?;
    Some(Response {
        status,
        content_type,
        body,
    })
}

pub fn patch_json(url: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Response {
    let mut req = agent().patch(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    read(
        req.content_type("application/json")
            .send(body.to_string())
            .unwrap(),
    )
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    read(req.call().unwrap())
}

pub fn delete_with(url: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = agent().delete(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    read(req.call().unwrap())
}

/// Another binary of the workspace, never a stale copy left by an earlier build.
/// `make test` builds the whole workspace first and says so with
/// `ONBOARD_TEST_PREBUILT=1`: then the binary beside this test is used as it is.
/// Otherwise (a plain `cargo test`) the test builds it first, once per test process,
/// with the same command as `make test` (`cargo build --workspace --all-targets`,
/// into this test binary's target directory and profile), so dependencies are
/// built with the same features and nothing is compiled twice.
pub fn workspace_bin(name: &str) -> PathBuf {
    use std::sync::OnceLock;
    static BUILT: OnceLock<()> = OnceLock::new();
    // This binary is <target>/<profile dir>/deps/<test>-<hash>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    if std::env::var("ONBOARD_TEST_PREBUILT").as_deref() != Ok("1") {
        BUILT.get_or_init(|| {
            let target_dir = profile_dir.parent().unwrap();
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()).unwrap() {
                "debug" => "dev".to_owned(),
                other => other.to_owned(),
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
            let out = Command::new(&cargo)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "--quiet", "--locked", "--profile", &profile])
                .args(["--workspace", "--all-targets", "--target-dir"])
                .arg(target_dir)
                .output()
                .unwrap_or_else(|e| panic!("{cargo}: {e}"));
            assert!(
                out.status.success(),
                "cargo build --workspace: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
    }
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "no {}: build the workspace first",
        path.display()
    );
    path
}

/// Runs `onboardctl` in `dir` with `env`; returns (success, stdout, stderr).
pub fn onboardctl(dir: &Path, env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(workspace_bin("onboardctl"));
    cmd.current_dir(dir).env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub fn get(url: &str) -> Response {
    read(agent().get(url).call().unwrap())
}

pub fn try_get(url: &str) -> Option<Response> {
    agent().get(url).call().ok().map(read)
}

/// The server binary, running until stopped or dropped.
/// On PostgreSQL the server never creates its CA by itself (replicas would each
/// make their own): like the deployment's Job, run `onboardctl ca init` once when
/// the CA directory is still empty.
pub fn init_shared_ca(dir: &Path, env: &[(&str, String)]) {
    let value = |names: &[&str]| {
        env.iter()
            .rev()
            .find(|(k, _)| names.contains(k))
            .map(|(_, v)| v.clone())
    };
    let url = value(&["ONBOARD__DATABASE__URL", "DATABASE_URL"]).unwrap_or_default();
    // With a settings file the caller makes the CA where that file says.
    if !url.starts_with("postgres") || value(&["ONBOARD_CONFIG"]).is_some() {
        return;
    }
    let ca_dir = dir.join(value(&["ONBOARD__CA__DIR", "CA_ROOT_PATH"]).unwrap_or("data/ca".into()));
    if ca_dir.join("ca.crt").exists() {
        return;
    }
    let (ok, out, err) = onboardctl(dir, env, &["ca", "init"]);
    assert!(ok, "onboardctl ca init: {out}{err}");
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts the binary in `dir` with only `env` (plus PATH) and waits until it
    /// answers `/api/health` (bounded, so a broken start fails instead of hanging).
    pub fn start(dir: &Path, env: &[(&str, String)]) -> Server {
        init_shared_ca(dir, env);
        let port = free_port();
        let log = dir.join("server.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onboard-server"));
        cmd.current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ONBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut server = Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.to_owned(),
            log,
        };
        for _ in 0..300 {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited with {status}: {}", server.log());
            }
            if try_get(&server.url("/api/health")).is_some_and(|r| r.status == 200) {
                return server;
            }
            sleep(Duration::from_millis(100));
        }
        panic!("server did not come up: {}", server.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no clean-up of any kind; returns once the process is gone.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap()
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("server ignored SIGTERM: {}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the server binary to completion (for start-up failures).
pub fn run_to_exit(dir: &Path, env: &[(&str, String)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onboard-server"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "ONBOARD__SERVER__BIND",
            format!("127.0.0.1:{}", free_port()),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// A PostgreSQL cluster of our own on a free loopback port, so a test can stop and
/// start it without touching the machine's server. Needs the PostgreSQL server
/// binaries (`ONBOARD_TEST_PG_BINDIR`, set by scripts/test-services.sh).
pub struct PgCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    pub port: u16,
}

fn as_postgres_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let bindir = PathBuf::from(std::env::var("ONBOARD_TEST_PG_BINDIR").expect(
            "ONBOARD_TEST_PG_BINDIR is not set: run the tests through scripts/test-services.sh (make test)",
        ));
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let out = as_postgres_user(&bindir.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = PgCluster {
            dir,
            bindir,
            port: free_port(),
        };
        cluster.resume();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let out = as_postgres_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn resume(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log");
        self.pg_ctl(&["-w", "-l", &log.display().to_string(), "-o", &opts, "start"]);
    }

    pub fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Rows of `query` run directly on the database at `url` (`sqlite://FILE` through
/// the sqlite3 CLI, `postgres://...` through psql), each row split into its
/// columns: an independent look at what the server committed.
pub fn sql(url: &str, query: &str) -> Vec<Vec<String>> {
    let out = if let Some(file) = url.strip_prefix("sqlite://") {
        Command::new("sqlite3")
            .args(["-batch", "-noheader", "-separator", "|", file, query])
            .output()
            .expect("the sqlite3 CLI (apt-get install sqlite3)")
    } else {
        Command::new("psql")
            .args([
                url,
                "-X",
                "-A",
                "-t",
                "-q",
                "-F",
                "|",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                query,
            ])
            .output()
            .expect("psql")
    };
    assert!(
        out.status.success(),
        "{query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// A small deterministic generator (xorshift64*) for test choices; seeded and
/// printed by the caller so a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    /// A seed from `ONBOARD_TEST_SEED` when set, else a fresh one.
    pub fn seeded(name: &str) -> Rng {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::env::var("ONBOARD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write(name.as_bytes());
                h.finish()
            });
        eprintln!("{name}: ONBOARD_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// A fresh P-256 key and a CSR for it, from the openssl CLI, written as
/// `NAME.key` / `NAME.csr` in `dir`; returns the CSR (PEM).
pub fn p256_csr(dir: &Path, name: &str) -> String {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    let (ok, out) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=ignored",
        ],
    );
    assert!(ok, "{out}");
    std::fs::read_to_string(dir.join(csr)).unwrap()
}

/// `ONBOARD_TEST_HEAVY=1`: the fault tests run their heavier variants (more
/// devices, kills and outages; `make test-faults-heavy`).
pub fn heavy() -> bool {
    std::env::var("ONBOARD_TEST_HEAVY").is_ok_and(|v| v == "1")
}
