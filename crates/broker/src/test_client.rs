//! A plain MQTT test client on `rumqttc` (feature `test-support`): connects with
//! an [`MqttEndpoint`], and lets a test wait, with a deadline, for acknowledgements,
//! messages or the broker closing the connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Packet, QoS, SubscribeReasonCode};

use crate::MqttEndpoint;

#[derive(Debug)]
pub enum Msg {
    ConnAck,
    SubAck(Vec<SubscribeReasonCode>),
    PubAck,
    Publish(String, Vec<u8>),
    Error(String),
}

#[allow(missing_debug_implementations)]
/// An MQTT client whose connection runs on a thread until its first error (no
/// reconnects: a dropped connection stays dropped, which the tests observe).
pub struct Mqtt {
    pub client: Client,
    events: Receiver<Msg>,
    pub received: VecDeque<(String, Vec<u8>)>,
    pub closed: Option<String>,
}

pub const WAIT: Duration = Duration::from_secs(5);

impl Mqtt {
    /// Connects, or returns the connection error's text.
    pub fn connect(endpoint: &MqttEndpoint) -> Result<Self, String> {
        let mut options =
            rumqttc::MqttOptions::new(&endpoint.client_id, &endpoint.host, endpoint.port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = &endpoint.credentials {
            options.set_credentials(u, p.expose());
        }
        if let Some(ca) = &endpoint.ca_pem {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: ca.as_bytes().to_vec(),
                    alpn: None,
                    client_auth: endpoint
                        .client_cert
                        .as_ref()
                        .map(|(c, k)| (c.as_bytes().to_vec(), k.expose().as_bytes().to_vec())),
                },
            ));
        }
        let (client, mut connection) = Client::new(options, 64);
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                let msg = match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Msg::ConnAck,
                    Ok(Event::Incoming(Packet::SubAck(a))) => Msg::SubAck(a.return_codes),
                    Ok(Event::Incoming(Packet::PubAck(_))) => Msg::PubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Msg::Publish(p.topic.clone(), p.payload.to_vec())
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Msg::Error(format!("{e:?} / {e}")));
                        return;
                    }
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
        let mut me = Self {
            client,
            events,
            received: VecDeque::new(),
            closed: None,
        };
        match me.next_until(WAIT, |m| matches!(m, Msg::ConnAck)) {
            Ok(_) => Ok(me),
            Err(e) => Err(e),
        }
    }

    /// Reads events until one satisfies `want` (publishes are kept in
    /// `received`), the connection fails, or `wait` passes.
    fn next_until(&mut self, wait: Duration, want: impl Fn(&Msg) -> bool) -> Result<Msg, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = &self.closed {
                return Err(e.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(m) if want(&m) => return Ok(m),
                Ok(Msg::Publish(t, p)) => self.received.push_back((t, p)),
                Ok(Msg::Error(e)) => self.closed = Some(e),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err("timed out".into()),
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = Some("event thread ended".into())
                }
            }
        }
    }

    pub fn subscribe(&mut self, filter: &str) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        match self
            .next_until(WAIT, |m| matches!(m, Msg::SubAck(_)))
            .unwrap()
        {
            Msg::SubAck(codes) => codes,
            _ => unreachable!(),
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK (after which the broker has
    /// routed the message, or dropped it if the ACL denies it).
    pub fn publish(&mut self, topic: &str, payload: &str) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .map_err(|e| e.to_string())?;
        self.next_until(WAIT, |m| matches!(m, Msg::PubAck))
            .map(|_| ())
    }

    /// Publishes a retained message at QoS 1 and waits for the PUBACK.
    pub fn publish_retained(&mut self, topic: &str, payload: &str) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.as_bytes().to_vec())
            .map_err(|e| e.to_string())?;
        self.next_until(WAIT, |m| matches!(m, Msg::PubAck))
            .map(|_| ())
    }

    /// Waits up to `wait` for a message with this topic and payload; true when it
    /// came. Other messages stay in `received`.
    pub fn expect(&mut self, topic: &str, payload: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.has(topic, payload) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed.is_some() {
                return false;
            }
            let _ = self
                .next_until(
                    left.min(Duration::from_millis(50)),
                    |m| matches!(m, Msg::Publish(t, p) if t == topic && p == payload.as_bytes()),
                )
                .map(|m| {
                    if let Msg::Publish(t, p) = m {
                        self.received.push_back((t, p));
                    }
                });
        }
    }

    /// Waits up to `wait` for a message on `topic` and takes the first one out
    /// of `received`; `None` when none came.
    pub fn take(&mut self, topic: &str, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.received.iter().position(|(t, _)| t == topic) {
                return self.received.remove(i).map(|(_, p)| p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed.is_some() {
                return None;
            }
            if let Ok(Msg::Publish(t, p)) = self
                .next_until(left.min(Duration::from_millis(50)), |m| {
                    matches!(m, Msg::Publish(..))
                })
            {
                self.received.push_back((t, p));
            }
        }
    }

    pub fn has(&self, topic: &str, payload: &str) -> bool {
        self.received
            .iter()
            .any(|(t, p)| t == topic && p == payload.as_bytes())
    }

    /// Payloads received whose topic starts with `prefix`.
    pub fn payloads_under(&self, prefix: &str) -> Vec<String> {
        self.received
            .iter()
            .filter(|(t, _)| t.starts_with(prefix))
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// Waits up to `wait` for the connection to be closed by the broker.
    pub fn wait_closed(&mut self, wait: Duration) -> Option<String> {
        let _ = self.next_until(wait, |_| false);
        self.closed.clone()
    }
}
