//! `MqttPublisher`: Onboard's notices to devices (the rotation notifications),
//! published at QoS 1 by the service account.
//!
//! One call opens one connection, publishes every notice, waits for each PUBACK
//! and disconnects. The whole call is bounded by [`PublisherConfig::timeout`]
//! (the connection, the TLS handshake and the acknowledgments together), so a
//! broker that is down, refuses the account, or accepts the connection and then
//! says nothing never holds the caller longer than that. Notices without a PUBACK
//! are reported as such; the caller decides when to try again.
//!
//! A PUBACK means the broker took the message, not that a subscriber got it (and
//! Mosquitto acknowledges a publish its ACLs drop too): the service account must
//! be allowed to publish to the notices' topics (`docs/mosquitto.md`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use onboard_domain::{Delivery, Notice, Notifier, PortError};
use rumqttc::{Client, Connection, Event, Outgoing, Packet, QoS, RecvTimeoutError};

use crate::acl::check_topic_filter;
use crate::error::BrokerError;
use crate::mqtt::MqttEndpoint;

/// Large enough for any notice Onboard sends.
const MAX_PACKET: usize = 1 << 20;

/// The service account's connection and the bound of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    pub endpoint: MqttEndpoint,
    /// The longest a call may take, from the connection to the last PUBACK.
    pub timeout: Duration,
}

impl PublisherConfig {
    /// A 10 s bound.
    pub fn new(endpoint: MqttEndpoint) -> Self {
        Self {
            endpoint,
            timeout: Duration::from_secs(10),
        }
    }
}

/// [`Notifier`] over MQTT.
#[derive(Debug)]
pub struct MqttPublisher {
    config: PublisherConfig,
}

/// A topic a message may be published to: a valid filter without wildcards.
fn check_topic_name(topic: &str) -> Result<(), BrokerError> {
    match check_topic_filter(topic) {
        Err(BrokerError::InvalidGrant(m)) => return Err(BrokerError::InvalidNotice(m)),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    if topic.contains(['+', '#']) {
        return Err(BrokerError::InvalidNotice(format!(
            "topic {topic:?} has a wildcard; a message needs a topic name"
        )));
    }
    Ok(())
}

impl MqttPublisher {
    pub fn new(config: PublisherConfig) -> Self {
        Self { config }
    }

    fn broker(&self) -> String {
        format!(
            "{}:{}",
            self.config.endpoint.host, self.config.endpoint.port
        )
    }

    /// Publishes `notices`, marking each acknowledged one in `acked`.
    fn publish(&self, notices: &[Notice], acked: &mut [bool]) -> Result<(), BrokerError> {
        notices
            .iter()
            .try_for_each(|n| check_topic_name(&n.topic))?;
        let mut options = self.config.endpoint.options(MAX_PACKET)?;
        // Every notice may be in flight at once: the order of the outgoing
        // publishes is then the order of `notices`.
        options.set_inflight(u16::try_from(notices.len()).unwrap_or(u16::MAX).max(1));
        let (client, mut connection) = Client::new(options, notices.len() + 2);
        let deadline = Instant::now() + self.config.timeout;
        for n in notices {
            client
                .publish(
                    n.topic.as_str(),
                    QoS::AtLeastOnce,
                    false,
                    n.payload.as_bytes().to_vec(),
                )
                .map_err(|e| BrokerError::Mqtt(format!("publish: {e}")))?;
        }
        let mut by_pkid: HashMap<u16, usize> = HashMap::with_capacity(notices.len());
        let mut sent = 0;
        let mut missing = notices.len();
        while missing > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match connection.recv_timeout(left) {
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    by_pkid.insert(pkid, sent);
                    sent += 1;
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(i) = by_pkid.remove(&ack.pkid) {
                        if let Some(slot) = acked.get_mut(i) {
                            *slot = true;
                            missing -= 1;
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(BrokerError::Mqtt(format!(
                        "the broker at {} failed: {e}",
                        self.broker()
                    )))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BrokerError::Mqtt(format!(
                        "the broker at {} did not acknowledge within {:?}",
                        self.broker(),
                        self.config.timeout
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(BrokerError::Mqtt(format!(
                        "the connection to {} closed",
                        self.broker()
                    )))
                }
            }
        }
        close(&client, &mut connection);
        Ok(())
    }
}

/// Disconnects politely, waiting briefly for the DISCONNECT to leave.
fn close(client: &Client, connection: &mut Connection) {
    if client.try_disconnect().is_err() {
        return;
    }
    let until = Instant::now() + Duration::from_millis(500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}

impl Notifier for MqttPublisher {
    fn notify(&self, notices: &[Notice]) -> Delivery {
        let mut acknowledged = vec![false; notices.len()];
        if notices.is_empty() {
            return Delivery {
                acknowledged,
                error: None,
            };
        }
        let error = self
            .publish(notices, &mut acknowledged)
            .err()
            .map(PortError::from);
        if let Some(e) = &error {
            tracing::warn!(broker = %self.broker(), error = %e, "notices not delivered");
        }
        Delivery {
            acknowledged,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::TcpListener;

    fn notice(topic: &str) -> Notice {
        Notice {
            topic: topic.into(),
            payload: "{}".into(),
        }
    }

    #[test]
    fn wildcards_are_no_topic_names() {
        let p = MqttPublisher::new(PublisherConfig::new(
            MqttEndpoint::from_url("mqtt://127.0.0.1:1", "x").unwrap(),
        ));
        for bad in ["a/+/rotation", "a/#", "", "a\nb"] {
            let d = p.notify(&[notice(bad)]);
            assert_eq!(d.acknowledged, vec![false], "{bad:?}");
            assert!(
                matches!(d.error, Some(PortError::Rejected(_))),
                "{bad:?}: {d:?}"
            );
        }
        assert_eq!(p.notify(&[]), Delivery::default());
    }

    #[test]
    fn a_broker_that_never_answers_costs_the_timeout_only() {
        // Accepts the TCP connection (the kernel does, from the backlog) and
        // never speaks MQTT.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let mut config = PublisherConfig::new(
            MqttEndpoint::from_url(&format!("mqtt://127.0.0.1:{port}"), "x").unwrap(),
        );
        config.timeout = Duration::from_millis(300);
        let d = MqttPublisher::new(config).notify(&[notice("iotsupport/a/rotation")]);
        assert_eq!(d.acknowledged, vec![false]);
        match d.error {
            Some(PortError::Unavailable(m)) => {
                assert!(m.contains("did not acknowledge within"), "{m}")
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn a_closed_port_fails_naming_the_address() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = MqttPublisher::new(PublisherConfig::new(
            MqttEndpoint::from_url(&format!("mqtt://127.0.0.1:{port}"), "x").unwrap(),
        ))
        .notify(&[
            notice("iotsupport/a/rotation"),
            notice("iotsupport/b/rotation"),
        ]);
        assert_eq!(d.acknowledged, vec![false, false]);
        match d.error {
            Some(PortError::Unavailable(m)) => {
                assert!(
                    m.contains(&format!("the broker at 127.0.0.1:{port} failed")),
                    "{m}"
                )
            }
            other => panic!("expected a connection failure, got {other:?}"),
        }
    }
}
