//! `onboardctl device simulate`: a reference device. It does what firmware on a
//! real device does, against a running server and broker, and reads no settings
//! and no database:
//!
//! 1. make a key pair and a CSR (kept in `--state-dir`, so a restart reuses them);
//! 2. `POST /public/v1/register` with the bootstrap key and the CSR, retrying on a
//!    lost answer (no answer, 429 or 5xx) with the same CSR: the server answers the
//!    same certificate again (proof of possession, `docs/registration.md`);
//! 3. store the answer, the certificate and the CA chain;
//! 4. connect to the broker from the answer's `mqtt` over mutual TLS, subscribe to
//!    its status topic and to its rotation notifications, and publish its status
//!    (the first status message activates it) every `--interval` seconds;
//! 5. a status message that does not come back means the broker stopped serving
//!    it: it reconnects, and when the broker refuses the certificate (revoked) it
//!    stops with one line saying so and exit code 5.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;
use onboard_core::domain::KeyAlgorithm;
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{json, Value};

use crate::output::Rendered;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Run a simulated device (or --count of them) until it is revoked: register
    /// with a bootstrap key, connect to the broker over mutual TLS, publish its
    /// status (which activates it), log rotation notifications. Exits 5 with one
    /// line when the broker refuses the device as revoked.
    Simulate {
        /// The server's base URL (http://), e.g. http://localhost:8080.
        #[arg(long, value_name = "URL")]
        server: String,
        /// A bootstrap key (or ONBOARD_SIMULATE_KEY, which keeps it out of `ps`).
        #[arg(long, env = "ONBOARD_SIMULATE_KEY", hide_env_values = true)]
        key: String,
        /// The device's serial; with --count N the devices are SERIAL-001 ... SERIAL-N.
        #[arg(long)]
        serial: String,
        /// Where each device keeps its key, CSR, certificate and registration
        /// answer (one directory per serial, files mode 0600).
        #[arg(long, value_name = "DIR", default_value = "simulated-devices")]
        state_dir: PathBuf,
        /// How many devices to run at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        /// The device model sent with the registration.
        #[arg(long)]
        model: Option<String>,
        /// Seconds between status messages.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        interval: u64,
        /// The status topic filter (the server's broker.status_topic); `+` is the
        /// device's client id.
        #[arg(long, default_value = "devices/+/status")]
        status_topic: String,
        /// The rotation notification prefix (the server's rotation.topic_prefix):
        /// the device subscribes to <prefix>/<client_id>/rotation.
        #[arg(long, default_value = "iotsupport")]
        rotation_prefix: String,
        /// How often a registration without an answer is sent again (with the
        /// same CSR), waiting 0.5 s, doubling up to 10 s.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=100))]
        retries: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The broker refused the device's certificate as revoked (or took its access
    /// away and refused it again).
    #[error("device {serial} ({client_id}) was revoked: {reason}")]
    Revoked {
        serial: String,
        client_id: String,
        reason: String,
    },
    /// The server refused the registration (a 4xx other than 429).
    #[error("device {serial}: registration refused ({status} {code}): {message}")]
    Refused {
        serial: String,
        status: u16,
        code: String,
        message: String,
    },
    /// No answer from the server after the retries, or a broker never reached.
    #[error("device {serial}: {message}")]
    Unavailable { serial: String, message: String },
    /// Bad arguments or an unusable state directory.
    #[error("{0}")]
    Setup(String),
}

impl SimulateError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SimulateError::Revoked { .. } => crate::EXIT_REVOKED,
            SimulateError::Refused { .. } => 1,
            SimulateError::Setup(_) => 2,
            SimulateError::Unavailable { .. } => 3,
        }
    }
}

/// One device's arguments.
#[derive(Debug, Clone)]
struct Spec {
    server: String,
    key: String,
    serial: String,
    dir: PathBuf,
    model: Option<String>,
    interval: Duration,
    status_topic: String,
    rotation_prefix: String,
    attempts: u32,
}

pub fn run(command: &DeviceCommand) -> Result<Rendered, crate::CliError> {
    let DeviceCommand::Simulate {
        server,
        key,
        serial,
        state_dir,
        count,
        model,
        interval,
        status_topic,
        rotation_prefix,
        retries,
    } = command;
    let server = server.trim_end_matches('/').to_owned();
    if !server.starts_with("http://") {
        return Err(SimulateError::Setup(format!(
            "--server must be an http:// URL (got {server}); for HTTPS put the device's TLS in front of it"
        ))
        .into());
    }
    if status_topic.matches('+').count() != 1 || status_topic.contains('#') {
        return Err(
            SimulateError::Setup("--status-topic must hold exactly one + and no #".into()).into(),
        );
    }
    let serials: Vec<String> = if *count == 1 {
        vec![serial.clone()]
    } else {
        (1..=*count).map(|i| format!("{serial}-{i:03}")).collect()
    };
    let specs: Vec<Spec> = serials
        .into_iter()
        .map(|s| Spec {
            server: server.clone(),
            key: key.clone(),
            dir: state_dir.join(&s),
            serial: s,
            model: model.clone(),
            interval: Duration::from_secs(*interval),
            status_topic: status_topic.clone(),
            rotation_prefix: rotation_prefix.clone(),
            attempts: retries + 1,
        })
        .collect();
    // One thread per device; the command ends when every device has ended, with
    // the first error (a revocation is reported by each revoked device).
    let several = *count > 1;
    let handles: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            std::thread::spawn(move || {
                let ended = device(&spec);
                // With several devices each one says how it ended at once; the
                // process ends when all have.
                if let (true, Err(e)) = (several, &ended) {
                    say(&format!("{e}"));
                }
                ended
            })
        })
        .collect();
    let mut first = None;
    for h in handles {
        let result = h
            .join()
            .unwrap_or_else(|_| Err(SimulateError::Setup("a device thread panicked".into())));
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    match first {
        Some(e) => Err(e.into()),
        None => Ok(Rendered::table(json!({}), vec![], vec![])),
    }
}

/// One line on stdout, flushed (several device threads write).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn setup(path: &Path, e: std::io::Error) -> SimulateError {
    SimulateError::Setup(format!("cannot write {}: {}", path.display(), e.kind()))
}

/// Writes a file with mode 0600 (replacing it atomically).
fn write_private(path: &Path, text: &str) -> Result<(), SimulateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| setup(&tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| setup(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| setup(path, e))
}

fn read(path: &Path) -> Result<Option<String>, SimulateError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SimulateError::Setup(format!(
            "cannot read {}: {}",
            path.display(),
            e.kind()
        ))),
    }
}

/// The key and CSR of the device: made once, then read back from the state dir.
fn key_and_csr(spec: &Spec) -> Result<(String, String), SimulateError> {
    std::fs::create_dir_all(&spec.dir).map_err(|e| setup(&spec.dir, e))?;
    let (key_path, csr_path) = (spec.dir.join("device.key"), spec.dir.join("device.csr"));
    if let (Some(key), Some(csr)) = (read(&key_path)?, read(&csr_path)?) {
        return Ok((key, csr));
    }
    let (key, csr) = onboard_pki::device_key_and_csr(KeyAlgorithm::EcdsaP256, &spec.serial)
        .map_err(|e| SimulateError::Setup(format!("cannot make a key and CSR: {e}")))?;
    write_private(&key_path, key.expose_secret())?;
    write_private(&csr_path, &csr)?;
    Ok((key.expose_secret().to_owned(), csr))
}

/// The waits between registration attempts and between broker connections.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Registers (or reads the stored answer of an earlier registration).
fn register(spec: &Spec, csr: &str) -> Result<Value, SimulateError> {
    let answer_path = spec.dir.join("registration.json");
    if let Some(text) = read(&answer_path)? {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            say(&format!(
                "{}: registered earlier as {} (answer in {})",
                spec.serial,
                v["device_id"].as_str().unwrap_or("?"),
                answer_path.display()
            ));
            return Ok(v);
        }
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("{}/public/v1/register", spec.server);
    let mut body = json!({"serial": spec.serial, "csr": csr, "firmware_version": "1.0.0-sim"});
    if let Some(m) = &spec.model {
        body["model"] = json!(m);
    }
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=spec.attempts {
        if attempt > 1 {
            say(&format!(
                "{}: no answer ({last}); sending the same CSR again in {:.1} s",
                spec.serial,
                backoff.as_secs_f64()
            ));
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let sent = agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", spec.key))
            .content_type("application/json")
            .send(body.to_string());
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let status = response.status().as_u16();
        let text = match response.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => {
                last = format!("the answer was cut off: {e}");
                continue;
            }
        };
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            201 => {
                write_private(&answer_path, &text)?;
                if let (Some(cert), Some(chain)) = (
                    value["certificate_pem"].as_str(),
                    value["ca_chain_pem"].as_str(),
                ) {
                    write_private(&spec.dir.join("device.crt"), cert)?;
                    write_private(&spec.dir.join("ca-chain.pem"), chain)?;
                }
                say(&format!(
                    "{}: registered as {} (certificate {})",
                    spec.serial,
                    value["device_id"].as_str().unwrap_or("?"),
                    value["certificate_serial"].as_str().unwrap_or("?")
                ));
                return Ok(value);
            }
            429 | 500..=599 => last = format!("HTTP {status}"),
            _ => {
                return Err(SimulateError::Refused {
                    serial: spec.serial.clone(),
                    status,
                    code: value["error"].as_str().unwrap_or("?").to_owned(),
                    message: value["message"].as_str().unwrap_or(&text).to_owned(),
                })
            }
        }
    }
    Err(SimulateError::Unavailable {
        serial: spec.serial.clone(),
        message: format!(
            "no registration answer after {} attempt(s) ({last})",
            spec.attempts
        ),
    })
}

/// What a broker session ended with.
enum Ended {
    /// The connection failed or was closed by the broker.
    Cut(String),
    /// The status message did not come back: the broker no longer serves us.
    NoEcho,
}

/// Where and as whom the device connects.
struct Broker {
    host: String,
    port: u16,
    client_id: String,
    ca: String,
    cert: String,
    key: String,
}

fn field<'a>(answer: &'a Value, path: &[&str], serial: &str) -> Result<&'a Value, SimulateError> {
    let mut v = answer;
    for p in path {
        v = &v[*p];
    }
    if v.is_null() {
        return Err(SimulateError::Setup(format!(
            "{serial}: the registration answer has no {}",
            path.join(".")
        )));
    }
    Ok(v)
}

fn device(spec: &Spec) -> Result<(), SimulateError> {
    let (key, csr) = key_and_csr(spec)?;
    let answer = register(spec, &csr)?;
    let text = |path: &[&str]| -> Result<String, SimulateError> {
        Ok(field(&answer, path, &spec.serial)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    let broker = Broker {
        host: text(&["mqtt", "host"])?,
        port: field(&answer, &["mqtt", "port"], &spec.serial)?
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| SimulateError::Setup("the answer's mqtt.port is no port".into()))?,
        client_id: text(&["mqtt", "client_id"])?,
        ca: text(&["ca_chain_pem"])?,
        cert: text(&["certificate_pem"])?,
        key,
    };
    let status_topic = spec.status_topic.replace('+', &broker.client_id);
    let rotation_topic = format!("{}/{}/rotation", spec.rotation_prefix, broker.client_id);
    let mut backoff = FIRST_BACKOFF;
    // A session that connected but whose status never came back, twice in a row
    // on fresh connections, means the broker took the device's access away.
    let mut silent_sessions = 0;
    let mut seq = 0u64;
    loop {
        let (client, mut connection) = connect(&broker);
        match wait_connack(&mut connection) {
            Ok(()) => {
                backoff = FIRST_BACKOFF;
                say(&format!(
                    "{}: connected to {}:{} as {}",
                    spec.serial, broker.host, broker.port, broker.client_id
                ));
            }
            Err(e) if certificate_refused(&e) => {
                return Err(SimulateError::Revoked {
                    serial: spec.serial.clone(),
                    client_id: broker.client_id.clone(),
                    reason: format!("the broker refused its certificate ({e})"),
                })
            }
            Err(e) => {
                say(&format!(
                    "{}: cannot connect to {}:{} ({e}); again in {:.1} s",
                    spec.serial,
                    broker.host,
                    broker.port,
                    backoff.as_secs_f64()
                ));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        let ended = session(
            spec,
            &client,
            &mut connection,
            &status_topic,
            &rotation_topic,
            &mut seq,
        );
        let _ = client.disconnect();
        match ended {
            (Ended::NoEcho, delivered) => {
                silent_sessions = if delivered { 1 } else { silent_sessions + 1 };
                if silent_sessions >= 2 {
                    return Err(SimulateError::Revoked {
                        serial: spec.serial.clone(),
                        client_id: broker.client_id.clone(),
                        reason:
                            "the broker accepts its certificate but no longer serves its topics"
                                .into(),
                    });
                }
                say(&format!(
                    "{}: the broker stopped serving {status_topic}; reconnecting",
                    spec.serial
                ));
            }
            (Ended::Cut(e), _) => {
                silent_sessions = 0;
                say(&format!(
                    "{}: connection closed ({e}); reconnecting",
                    spec.serial
                ));
            }
        }
    }
}

fn connect(broker: &Broker) -> (Client, Connection) {
    let mut options = MqttOptions::new(&broker.client_id, &broker.host, broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca: broker.ca.as_bytes().to_vec(),
            alpn: None,
            client_auth: Some((
                broker.cert.as_bytes().to_vec(),
                broker.key.as_bytes().to_vec(),
            )),
        },
    ));
    Client::new(options, 64)
}

/// How long a connection attempt may take.
const CONNECT_WAIT: Duration = Duration::from_secs(15);

fn wait_connack(connection: &mut Connection) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no CONNACK".into());
        }
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNACK".into()),
        }
    }
}

/// A TLS alert about our certificate: revoked (Mosquitto's CRL check) or any
/// other refusal of the client certificate.
fn certificate_refused(error: &str) -> bool {
    let e = error.to_lowercase();
    e.contains("revoked") || e.contains("badcertificate") || e.contains("certificateunknown")
}

/// Subscribes, then publishes the status every interval and checks that each one
/// comes back. Returns how the session ended and whether any status came back.
fn session(
    spec: &Spec,
    client: &Client,
    connection: &mut Connection,
    status_topic: &str,
    rotation_topic: &str,
    seq: &mut u64,
) -> (Ended, bool) {
    let mut delivered = false;
    let subscribed = client
        .subscribe(status_topic, QoS::AtLeastOnce)
        .and_then(|()| client.subscribe(rotation_topic, QoS::AtLeastOnce));
    if let Err(e) = subscribed {
        return (Ended::Cut(e.to_string()), delivered);
    }
    let mut subacks = 0;
    loop {
        *seq += 1;
        let payload = json!({"status": "online", "serial": spec.serial, "seq": *seq}).to_string();
        if let Err(e) = client.publish(status_topic, QoS::AtLeastOnce, false, payload.clone()) {
            return (Ended::Cut(e.to_string()), delivered);
        }
        let due = Instant::now() + spec.interval;
        let mut echoed = false;
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    if p.topic == status_topic && p.payload.as_ref() == payload.as_bytes() {
                        if !delivered {
                            say(&format!(
                                "{}: status published to {status_topic} (this activates the device)",
                                spec.serial
                            ));
                        }
                        echoed = true;
                        delivered = true;
                    } else if p.topic == rotation_topic {
                        say(&format!(
                            "{}: rotation notification: {}",
                            spec.serial,
                            String::from_utf8_lossy(&p.payload)
                        ));
                    }
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(a)))) => {
                    subacks += 1;
                    if a.return_codes.contains(&SubscribeReasonCode::Failure) {
                        let topic = if subacks == 1 {
                            status_topic
                        } else {
                            rotation_topic
                        };
                        say(&format!(
                            "{}: the broker refused the subscription to {topic}",
                            spec.serial
                        ));
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return (Ended::Cut(e.to_string()), delivered),
                Err(rumqttc::RecvTimeoutError::Timeout) => break,
                Err(rumqttc::RecvTimeoutError::Disconnected) => {
                    return (Ended::Cut("the client closed".into()), delivered)
                }
            }
        }
        if !echoed {
            return (Ended::NoEcho, delivered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificate_alerts_count_as_a_refused_certificate() {
        // What rumqttc says when Mosquitto's CRL check refuses the certificate.
        assert!(certificate_refused(
            "Mqtt state: Mqtt serialization/deserialization error: IO: received fatal alert: CertificateRevoked"
        ));
        assert!(certificate_refused("received fatal alert: BadCertificate"));
        assert!(!certificate_refused(
            "I/O: Connection refused (os error 111)"
        ));
        assert!(!certificate_refused("no CONNACK"));
    }
}
