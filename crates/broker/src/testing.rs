//! A real Mosquitto for tests (feature `test-support`), in a temporary directory
//! on free loopback ports, killed on drop. It never touches the machine's own
//! Mosquitto.
//!
//! The TLS listener is the production setup of `docs/mosquitto.md`:
//! `require_certificate`, `use_identity_as_username`, `use_username_as_clientid`,
//! our CA as `cafile`, a server certificate from our CA for `127.0.0.1` /
//! `localhost`, and a `crlfile`. Authorisation is either the ACL and password
//! files ([`Auth::Files`]) or the dynamic-security plugin ([`Auth::Dynsec`], with
//! its JSON made by `mosquitto_ctrl dynsec init`). An optional second listener
//! with server-authenticated TLS only (no client certificate) serves password
//! logins and the plugin's admin.
//!
//! Both modes know a service account `onboard-service` (a client certificate from
//! [`TestBroker::service_endpoint`]) that may read `devices/+/status` and
//! `devices/#`, for the activation listener and for observing traffic, and
//! publish to `iotsupport/+/rotation`, for the rotation notifications.
//!
//! The binary is `$ONBOARD_TEST_MOSQUITTO` or `/usr/sbin/mosquitto`; Mosquitto
//! runs with `user root` so it can read the files this process writes.
//!
//! Also [`render_files`]: the texts a full rewrite of the file backend renders,
//! without writing them, for the benchmarks.

pub use crate::file::render_files;
pub use crate::test_client::{Mqtt, Msg, WAIT};
pub use rumqttc::SubscribeReasonCode;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use onboard_domain::SecretString;
use onboard_pki::{CertificateAuthority, CrlParams, ServerCertParams, ServiceCertParams};
use serde_json::json;
use tempfile::TempDir;

use crate::dynsec::{client_names, run_commands, DynsecConfig};
use crate::file::FileConfig;
use crate::mqtt::MqttEndpoint;
use crate::reload::Reload;

/// The environment variable naming the Mosquitto binary.
pub const MOSQUITTO_ENV: &str = "ONBOARD_TEST_MOSQUITTO";
/// The service account's username (its certificate's CN).
pub const SERVICE_USER: &str = "onboard-service";
/// The dynamic-security admin's username on the password listener.
pub const ADMIN_USER: &str = "onboard-admin";

const STDERR_FILE: &str = "mosquitto.stderr";

/// The rotation topic prefix the test broker's service account may publish
/// under (`rotation.topic_prefix`'s default).
pub const ROTATION_PREFIX: &str = "iotsupport";

/// The ACL preamble for the service account in [`Auth::Files`] mode: it reads
/// the devices' topics and writes every device's rotation topic, as the ACL file
/// Onboard writes grants it (`docs/mosquitto.md`).
pub const SERVICE_ACL_PREAMBLE: &str = "user onboard-service\ntopic read devices/+/status\n\
     topic read devices/#\ntopic write iotsupport/+/rotation\n";

/// How the test broker authorises clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `acl_file` and `password_file`.
    Files,
    /// The dynamic-security plugin.
    Dynsec,
}

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct TestBrokerSpec<'a> {
    /// Issues the broker's server certificate, the service certificate and the
    /// initial (empty) CRL; the broker trusts its chain.
    pub ca: &'a CertificateAuthority,
    /// The real current time: Mosquitto checks certificates and the CRL against
    /// the system clock.
    pub now: DateTime<Utc>,
    pub auth: Auth,
    /// Also open a password listener (TLS without client certificates), for
    /// password logins and the admin.
    pub password_listener: bool,
    /// Extra environment for the Mosquitto process (tests that move its clock
    /// with libfaketime set `LD_PRELOAD` and `FAKETIME_*` here).
    pub env: &'a [(&'a str, String)],
}

/// A running Mosquitto.
#[derive(Debug)]
pub struct TestBroker {
    child: Child,
    dir: TempDir,
    auth: Auth,
    /// The mTLS listener's port on 127.0.0.1.
    pub tls_port: u16,
    /// The password listener's port on 127.0.0.1, if asked for.
    pub password_port: Option<u16>,
    ca_pem: String,
    service_cert: (String, SecretString),
    admin_password: SecretString,
    /// What [`TestBroker::start_again`] runs.
    binary: PathBuf,
    env: Vec<(String, String)>,
}

/// The Mosquitto binary to run.
pub fn mosquitto_binary() -> PathBuf {
    std::env::var_os(MOSQUITTO_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"))
}

/// Where the dynamic-security plugin is: the Debian path, else what
/// `dpkg -L mosquitto` lists, else the usual library directories.
pub fn dynsec_plugin() -> Option<PathBuf> {
    const NAME: &str = "mosquitto_dynamic_security.so";
    let debian = PathBuf::from("/usr/lib/x86_64-linux-gnu").join(NAME);
    if debian.exists() {
        return Some(debian);
    }
    if let Ok(out) = Command::new("dpkg").args(["-L", "mosquitto"]).output() {
        let listed = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.ends_with(NAME))
            .map(PathBuf::from);
        if let Some(path) = listed.filter(|p| p.exists()) {
            return Some(path);
        }
    }
    let mut dirs = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/local/lib")];
    for base in ["/usr/lib", "/usr/local/lib"] {
        if let Ok(entries) = fs::read_dir(base) {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    dirs.into_iter()
        .flat_map(|d| [d.join(NAME), d.join("mosquitto").join(NAME)])
        .find(|p| p.exists())
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn write(path: &Path, contents: &str) -> io::Result<()> {
    fs::write(path, contents).map_err(|e| other(format!("write {}: {e}", path.display())))
}

/// Why an attempt to start Mosquitto failed.
#[derive(Debug)]
enum StartError {
    /// Mosquitto could not bind a port: another process took it between
    /// [`free_port`] and Mosquitto's start. Worth another try on new ports.
    PortTaken(io::Error),
    /// Anything else: trying again would fail the same way.
    Failed(io::Error),
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        Self::Failed(e)
    }
}

/// Mosquitto's words for a port that is taken.
const PORT_TAKEN: &str = "Address already in use";

impl TestBroker {
    /// Starts Mosquitto and waits until its listeners accept connections (and,
    /// with the plugin, until the service account exists). If Mosquitto exits
    /// because a port was taken meanwhile ("Address already in use" in its log
    /// or on its stderr), tries again with new ports, three attempts in all; any
    /// other failure is returned at once, with Mosquitto's log.
    pub fn start(spec: &TestBrokerSpec<'_>) -> io::Result<Self> {
        Self::start_with(spec, &mosquitto_binary(), &mut 0)
    }

    /// [`TestBroker::start`] with this binary, counting the attempts.
    fn start_with(
        spec: &TestBrokerSpec<'_>,
        binary: &Path,
        attempts: &mut usize,
    ) -> io::Result<Self> {
        const ATTEMPTS: usize = 3;
        loop {
            *attempts += 1;
            match Self::try_start(spec, binary) {
                Ok(b) => return Ok(b),
                Err(StartError::PortTaken(_)) if *attempts < ATTEMPTS => {}
                Err(StartError::PortTaken(e) | StartError::Failed(e)) => return Err(e),
            }
        }
    }

    fn try_start(spec: &TestBrokerSpec<'_>, binary: &Path) -> Result<Self, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("onboard-mosquitto-")
            .tempdir()?;
        let d = dir.path();
        let pki = |e: onboard_pki::PkiError| other(e.to_string());
        let server = spec
            .ca
            .issue_server_certificate(&ServerCertParams {
                common_name: "localhost".into(),
                dns_names: vec!["localhost".into()],
                ip_addresses: vec![Ipv4Addr::LOCALHOST.into()],
                validity_days: 2,
                now: spec.now,
            })
            .map_err(pki)?;
        let service = spec
            .ca
            .issue_service_certificate(&ServiceCertParams {
                common_name: SERVICE_USER.into(),
                validity_days: 2,
                now: spec.now,
            })
            .map_err(pki)?;
        let crl = spec
            .ca
            .build_crl(&CrlParams {
                number: 1,
                this_update: spec.now - chrono::Duration::minutes(5),
                next_update: spec.now + chrono::Duration::days(2),
                revoked: &[],
            })
            .map_err(pki)?;
        write(&d.join("ca.pem"), spec.ca.chain_pem())?;
        write(&d.join("server.crt"), &server.certificate.pem)?;
        write(&d.join("server.key"), server.private_key.expose_secret())?;
        write(&d.join("crl.pem"), &crl.pem)?;
        write(&d.join("service.crt"), &service.certificate.pem)?;
        write(&d.join("service.key"), service.private_key.expose_secret())?;

        let tls_port = free_port()?;
        let password_port = if spec.password_listener {
            Some(free_port()?)
        } else {
            None
        };
        let admin_password = SecretString::new(
            onboard_pki::secrets::random_token().map_err(|e| other(e.to_string()))?,
        );
        let mut conf = format!(
            "# Written by onboard_broker::testing\n\
             user root\n\
             per_listener_settings false\n\
             allow_anonymous false\n\
             persistence false\n\
             pid_file {dir}/mosquitto.pid\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             \n\
             listener {tls_port} 127.0.0.1\n\
             cafile {dir}/ca.pem\n\
             certfile {dir}/server.crt\n\
             keyfile {dir}/server.key\n\
             crlfile {dir}/crl.pem\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             use_username_as_clientid true\n",
            dir = d.display()
        );
        if let Some(port) = password_port {
            conf.push_str(&format!(
                "\nlistener {port} 127.0.0.1\n\
                 certfile {dir}/server.crt\n\
                 keyfile {dir}/server.key\n\
                 require_certificate false\n",
                dir = d.display()
            ));
        }
        match spec.auth {
            Auth::Files => {
                write(&d.join("acl"), SERVICE_ACL_PREAMBLE)?;
                write(&d.join("passwd"), "")?;
                conf.push_str(&format!(
                    "\nacl_file {dir}/acl\npassword_file {dir}/passwd\n",
                    dir = d.display()
                ));
            }
            Auth::Dynsec => {
                let plugin = dynsec_plugin()
                    .ok_or_else(|| other("the dynamic-security plugin is not installed"))?;
                let json = d.join("dynsec.json");
                let out = Command::new("mosquitto_ctrl")
                    .args(["dynsec", "init"])
                    .arg(&json)
                    .arg(ADMIN_USER)
                    .arg(admin_password.expose())
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| other(format!("mosquitto_ctrl: {e}")))?;
                if !out.status.success() {
                    return Err(StartError::Failed(other(format!(
                        "mosquitto_ctrl dynsec init failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ))));
                }
                conf.push_str(&format!(
                    "\nplugin {}\nplugin_opt_config_file {}\n",
                    plugin.display(),
                    json.display()
                ));
            }
        }
        write(&d.join("mosquitto.conf"), &conf)?;

        let env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let child = spawn(binary, &env, d)?;
        let mut broker = Self {
            child,
            dir,
            auth: spec.auth,
            tls_port,
            password_port,
            ca_pem: spec.ca.chain_pem().to_owned(),
            service_cert: (
                service.certificate.pem,
                SecretString::new(service.private_key.expose_secret()),
            ),
            admin_password,
            binary: binary.to_path_buf(),
            env,
        };
        broker.wait_listening()?;
        if spec.auth == Auth::Dynsec {
            broker.create_dynsec_service_account()?;
        }
        Ok(broker)
    }

    fn wait_listening(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let ports: Vec<u16> = std::iter::once(self.tls_port)
            .chain(self.password_port)
            .collect();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let said = self.output();
                let e = other(format!("mosquitto exited with {status}: {said}"));
                return Err(if said.contains(PORT_TAKEN) {
                    StartError::PortTaken(e)
                } else {
                    StartError::Failed(e)
                });
            }
            // The pid file must name this process: one that a killed
            // Mosquitto left behind names another.
            let pid_written = fs::read_to_string(self.pid_file())
                .is_ok_and(|p| p.trim() == self.child.id().to_string());
            if pid_written
                && ports
                    .iter()
                    .all(|p| TcpStream::connect((Ipv4Addr::LOCALHOST, *p)).is_ok())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError::Failed(other(format!(
                    "mosquitto does not listen: {}",
                    self.output()
                ))));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn create_dynsec_service_account(&self) -> io::Result<()> {
        let endpoint = self.admin_endpoint()?;
        let acls = json!([
            {"acltype": "subscribePattern", "topic": "devices/#", "allow": true},
            {"acltype": "publishClientReceive", "topic": "devices/#", "allow": true},
            {"acltype": "publishClientSend", "topic": format!("{ROTATION_PREFIX}/+/rotation"), "allow": true},
        ]);
        run_commands(
            &endpoint,
            Duration::from_secs(10),
            vec![
                json!({"command": "createRole", "rolename": "onboard-service", "acls": acls}),
                json!({"command": "createClient", "username": SERVICE_USER,
                       "roles": [{"rolename": "onboard-service"}]}),
            ],
        )
        .map_err(|e| other(e.to_string()))
    }

    /// Stops Mosquitto with `SIGTERM` and waits until it has exited; a clean
    /// stop removes its pid file.
    pub fn stop(&mut self) -> io::Result<()> {
        let pid = i32::try_from(self.pid()).map_err(|_| other("pid out of range"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .map_err(io::Error::from)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                return Err(other(format!("mosquitto ignored SIGTERM: {}", self.log())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills Mosquitto with `SIGKILL`: its pid file stays behind, naming a
    /// process that no longer exists.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts Mosquitto again after [`TestBroker::stop`] or [`TestBroker::kill`]:
    /// the same configuration, files (ACL, passwords, CRL, the plugin's JSON) and
    /// ports, and waits until it listens.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Err(other("mosquitto is still running"));
        }
        self.child = spawn(&self.binary, &self.env, self.dir.path())?;
        self.wait_listening().map_err(|e| match e {
            StartError::PortTaken(e) | StartError::Failed(e) => e,
        })
    }

    /// Runs dynamic-security commands as the plugin's admin; each must succeed.
    pub fn dynsec_commands(&self, commands: Vec<serde_json::Value>) -> io::Result<()> {
        run_commands(&self.admin_endpoint()?, Duration::from_secs(10), commands)
            .map_err(|e| other(e.to_string()))
    }

    /// The usernames of the dynamic-security plugin's clients.
    pub fn dynsec_clients(&self) -> io::Result<Vec<String>> {
        client_names(&self.admin_endpoint()?, Duration::from_secs(10))
            .map_err(|e| other(e.to_string()))
    }

    /// The dynamic-security admin's username and password (for the password
    /// listener).
    pub fn dynsec_admin(&self) -> (&'static str, &SecretString) {
        (ADMIN_USER, &self.admin_password)
    }

    /// The temporary directory with the configuration, files and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir().join("mosquitto.pid")
    }

    /// Mosquitto's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn acl_file(&self) -> PathBuf {
        self.dir().join("acl")
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir().join("passwd")
    }

    pub fn crl_file(&self) -> PathBuf {
        self.dir().join("crl.pem")
    }

    /// The CA chain file the broker trusts (for `mosquitto_pub --cafile`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// Mosquitto's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("mosquitto.log")).unwrap_or_default()
    }

    /// The log and whatever Mosquitto wrote to stderr (before the log was open).
    fn output(&self) -> String {
        let stderr = fs::read_to_string(self.dir().join(STDERR_FILE)).unwrap_or_default();
        if stderr.trim().is_empty() {
            return self.log();
        }
        format!("{}\nstderr: {}", self.log(), stderr.trim())
    }

    /// Sends `SIGHUP`: Mosquitto re-reads its files.
    pub fn reload(&self) -> io::Result<()> {
        let pid = i32::try_from(self.pid()).map_err(|_| other("pid out of range"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .map_err(io::Error::from)
    }

    /// A [`FileConfig`] for this broker: its ACL, password and CRL files, the
    /// service account preamble, `SIGHUP` through its pid file.
    pub fn file_config(&self) -> FileConfig {
        let mut c = FileConfig::new(self.acl_file(), self.pid_file());
        c.password_file = Some(self.password_file());
        c.crl_file = Some(self.crl_file());
        c.acl_preamble = SERVICE_ACL_PREAMBLE.into();
        c
    }

    /// A [`DynsecConfig`] for this broker: the admin on the password listener, its
    /// CRL file reloaded by `SIGHUP`.
    pub fn dynsec_config(&self) -> io::Result<DynsecConfig> {
        let mut c = DynsecConfig::new(self.admin_endpoint()?);
        c.crl_file = Some(self.crl_file());
        c.reload = Reload::Signal {
            pid_file: self.pid_file(),
        };
        Ok(c)
    }

    fn admin_endpoint(&self) -> io::Result<MqttEndpoint> {
        if self.auth != Auth::Dynsec {
            return Err(other("only a dynsec broker has an admin"));
        }
        let mut e = self.password_endpoint(ADMIN_USER, &self.admin_password)?;
        e.client_id = format!("onboard-admin-{}", std::process::id());
        Ok(e)
    }

    /// The mTLS listener with a client certificate and key (PEM).
    pub fn device_endpoint(&self, client_id: &str, cert_pem: &str, key_pem: &str) -> MqttEndpoint {
        MqttEndpoint {
            host: "127.0.0.1".into(),
            port: self.tls_port,
            client_id: client_id.into(),
            ca_pem: Some(self.ca_pem.clone()),
            client_cert: Some((cert_pem.into(), SecretString::new(key_pem))),
            credentials: None,
            keep_alive: Duration::from_secs(30),
        }
    }

    /// The password listener (TLS, broker verified with our CA) with a username
    /// and password.
    pub fn password_endpoint(
        &self,
        user: &str,
        password: &SecretString,
    ) -> io::Result<MqttEndpoint> {
        let port = self
            .password_port
            .ok_or_else(|| other("start the broker with password_listener: true"))?;
        Ok(MqttEndpoint {
            host: "127.0.0.1".into(),
            port,
            client_id: user.into(),
            ca_pem: Some(self.ca_pem.clone()),
            client_cert: None,
            credentials: Some((user.into(), password.clone())),
            keep_alive: Duration::from_secs(30),
        })
    }

    /// The service account's certificate and key files (PEM), for settings
    /// such as `broker.client_cert_file` and `broker.client_key_file`.
    pub fn service_cert_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir().join("service.crt"),
            self.dir().join("service.key"),
        )
    }

    /// The service account (`onboard-service`) on the mTLS listener.
    pub fn service_endpoint(&self) -> MqttEndpoint {
        self.device_endpoint(
            SERVICE_USER,
            &self.service_cert.0,
            self.service_cert.1.expose(),
        )
    }
}

/// Runs Mosquitto on the configuration in `dir`; what it says before its log
/// file is open goes to `dir/mosquitto.stderr`.
fn spawn(binary: &Path, env: &[(String, String)], dir: &Path) -> io::Result<Child> {
    let stderr = fs::File::create(dir.join(STDERR_FILE))
        .map_err(|e| other(format!("create {}: {e}", dir.join(STDERR_FILE).display())))?;
    Command::new(binary)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| other(format!("cannot run {}: {e}", binary.display())))
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use onboard_pki::CaSpec;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-mosquitto");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn only_a_taken_port_is_retried() {
        let now = onboard_domain::Clock::now(&onboard_domain::SystemClock);
        let ca = CertificateAuthority::generate(&CaSpec::new("Start Test CA"), now).unwrap();
        let spec = TestBrokerSpec {
            ca: &ca,
            now,
            auth: Auth::Files,
            password_listener: false,
            env: &[],
        };
        let dir = tempfile::tempdir().unwrap();

        // Any other failure: one attempt, and Mosquitto's words in the error.
        let broken = script(
            dir.path(),
            "echo 'Error: Unable to open config file' >&2\nexit 3",
        );
        let mut attempts = 0;
        let e = TestBroker::start_with(&spec, &broken, &mut attempts).unwrap_err();
        assert_eq!(attempts, 1);
        assert!(e.to_string().contains("Unable to open config file"), "{e}");

        // A port taken meanwhile: three attempts on new ports.
        let taken = script(
            dir.path(),
            "echo 'Error: Address already in use' >&2\nexit 1",
        );
        let mut attempts = 0;
        let e = TestBroker::start_with(&spec, &taken, &mut attempts).unwrap_err();
        assert_eq!(attempts, 3);
        assert!(e.to_string().contains(PORT_TAKEN), "{e}");
    }
}
