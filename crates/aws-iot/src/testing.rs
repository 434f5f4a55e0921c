//! Test support: a real moto server (`moto_server`, PyPI `moto[server]`, installed
//! into `target/testenv` by `scripts/test-services.sh`) on a free loopback port,
//! stopped when dropped, and an interceptor that makes chosen AWS calls fail.
//!
//! What moto does differently from AWS (see `docs/aws.md`): `CreateCertificateFromCsr`
//! answers a certificate whose key is not the CSR's, and `DescribeEndpoint` answers
//! another random host on every call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_iot::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_iot::config::{ConfigBag, Intercept, RuntimeComponents, SharedInterceptor};
use aws_sdk_iot::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use onboard_domain::SecretString;

use crate::{AwsIot, AwsIotConfig};

/// A moto server for one test.
#[derive(Debug)]
pub struct MotoServer {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl MotoServer {
    /// Starts `moto_server` on a free port and waits (bounded) until it answers.
    pub fn start() -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start moto_server (run the tests through scripts/test-services.sh): {e}"),
                )
            })?;
        let mut server = Self {
            child: Some(child),
            port,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "moto_server exited ({status}): {}",
                        self.log()
                    )));
                }
            }
            if let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let req = "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut buf = [0u8; 12];
                    if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/") {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "moto_server did not answer within 30 s: {}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("moto.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The emulator's process id (a fault test pauses it with SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A registrar configuration for this server: test credentials, short
    /// timeouts, two attempts per call.
    pub fn config(&self) -> AwsIotConfig {
        let mut c = AwsIotConfig::new("us-east-1");
        c.endpoint_url = Some(self.url());
        c.static_credentials = Some(("testing".into(), SecretString::new("testing")));
        c.operation_timeout = Duration::from_secs(5);
        c.max_attempts = 2;
        c
    }

    /// A registrar on this server.
    pub fn registrar(&self, change: impl FnOnce(&mut AwsIotConfig)) -> AwsIot {
        let mut c = self.config();
        change(&mut c);
        AwsIot::connect(c).unwrap()
    }

    /// Stops the server now (a fault test: AWS going away).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every Thing's name and every certificate's id that `aws` sees (a test's check
/// that nothing was left behind).
pub fn inventory(aws: &AwsIot) -> (Vec<String>, Vec<String>) {
    aws.block_on(async {
        let things = aws.client().list_things().send().await;
        let certs = aws.client().list_certificates().send().await;
        let (Ok(things), Ok(certs)) = (things, certs) else {
            panic!("moto did not answer ListThings/ListCertificates");
        };
        (
            things
                .things()
                .iter()
                .filter_map(|t| t.thing_name().map(str::to_owned))
                .collect(),
            certs
                .certificates()
                .iter()
                .filter_map(|c| c.certificate_id().map(str::to_owned))
                .collect(),
        )
    })
}

/// Makes AWS calls fail before they are sent: the named call (every time), and,
/// once [`Faults::cut_from`] saw its call, every call after it (the network or the
/// process gone mid-registration). Records the calls made.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    fail: Mutex<Option<String>>,
    cut_from: Mutex<Option<String>>,
    cut: AtomicBool,
    calls: Mutex<Vec<String>>,
}

impl Faults {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails every `call` (e.g. `AttachPolicy`).
    pub fn fail(&self, call: &str) {
        *self.inner.fail.lock().unwrap() = Some(call.to_owned());
    }

    /// From `call` on, fails every call.
    pub fn cut_from(&self, call: &str) {
        *self.inner.cut_from.lock().unwrap() = Some(call.to_owned());
    }

    /// Back to normal.
    pub fn clear(&self) {
        *self.inner.fail.lock().unwrap() = None;
        *self.inner.cut_from.lock().unwrap() = None;
        self.inner.cut.store(false, Ordering::SeqCst);
    }

    /// The calls attempted so far, in order (failed ones too).
    pub fn calls(&self) -> Vec<String> {
        self.inner.calls.lock().unwrap().clone()
    }

    pub fn interceptor(&self) -> SharedInterceptor {
        SharedInterceptor::new(self.clone())
    }
}

impl Intercept for Faults {
    fn name(&self) -> &'static str {
        "onboard-test-faults"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_default();
        self.inner.calls.lock().unwrap().push(name.clone());
        if self.inner.cut_from.lock().unwrap().as_deref() == Some(name.as_str()) {
            self.inner.cut.store(true, Ordering::SeqCst);
        }
        if self.inner.cut.load(Ordering::SeqCst)
            || self.inner.fail.lock().unwrap().as_deref() == Some(name.as_str())
        {
            return Err(format!("injected failure before {name}").into());
        }
        Ok(())
    }
}
