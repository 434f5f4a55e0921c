//! Grant validation and Mosquitto's ACL file.
//!
//! Every granted device gets its own `user <client id>` block with one `topic`
//! line per topic filter: `write` for publish, `read` for subscribe (Mosquitto
//! checks `read` both when subscribing and when delivering each message),
//! `readwrite` for both. No `pattern` lines: with `pattern readwrite devices/%u/#`
//! a revoked device whose connection is still open would keep its access, since
//! the pattern applies to any username. With per-user blocks, removing the block
//! and reloading takes effect on the next message of an open connection.
//!
//! `max_qos` and `retain_allowed` cannot be expressed per user in Mosquitto 2.0
//! (neither in the ACL file nor in the dynamic-security plugin); set `max_qos` and
//! `retain_available` on the listener for the whole fleet.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use onboard_domain::BrokerGrant;

use crate::error::BrokerError;

/// A client id usable as a Mosquitto username: 1 to 65,535 bytes, no control
/// characters, no whitespace at either end (Mosquitto trims file lines).
pub(crate) fn check_client_id(id: &str) -> Result<(), BrokerError> {
    if id.is_empty() || id.len() > 65_535 {
        return Err(BrokerError::InvalidGrant(
            "a client id must have 1 to 65,535 bytes".into(),
        ));
    }
    if id.chars().any(char::is_control) || id.trim() != id {
        return Err(BrokerError::InvalidGrant(format!(
            "client id {id:?} has control characters or surrounding whitespace"
        )));
    }
    Ok(())
}

/// An MQTT topic filter: 1 to 65,535 bytes, no control characters or surrounding
/// whitespace, `+` alone in its level, `#` alone in the last level.
pub(crate) fn check_topic_filter(topic: &str) -> Result<(), BrokerError> {
    let bad = |why: &str| BrokerError::InvalidGrant(format!("topic {topic:?} {why}"));
    if topic.is_empty() || topic.len() > 65_535 {
        return Err(bad("must have 1 to 65,535 bytes"));
    }
    if topic.chars().any(char::is_control) || topic.trim() != topic {
        return Err(bad("has control characters or surrounding whitespace"));
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('+') && *level != "+" {
            return Err(bad("uses + inside a level"));
        }
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(bad("uses # other than as the whole last level"));
        }
    }
    Ok(())
}

/// Checks everything of a grant that goes into a broker.
pub(crate) fn check_grant(grant: &BrokerGrant) -> Result<(), BrokerError> {
    check_client_id(&grant.client_id)?;
    for topic in grant.publish.iter().chain(&grant.subscribe) {
        check_topic_filter(topic)?;
    }
    Ok(())
}

/// Per topic filter: (read, write).
pub(crate) type Access = BTreeMap<String, (bool, bool)>;

/// The grants merged per client id (a client id listed twice gets the union),
/// sorted, each with its topic access.
pub(crate) fn merge(grants: &[BrokerGrant]) -> BTreeMap<&str, (Access, &BrokerGrant)> {
    let mut out: BTreeMap<&str, (Access, &BrokerGrant)> = BTreeMap::new();
    for g in grants {
        let entry = out
            .entry(g.client_id.as_str())
            .or_insert_with(|| (Access::new(), g));
        for t in &g.publish {
            entry.0.entry(t.clone()).or_default().1 = true;
        }
        for t in &g.subscribe {
            entry.0.entry(t.clone()).or_default().0 = true;
        }
    }
    out
}

/// The ACL file for `grants`, after `preamble` (copied verbatim; it should start
/// with a `user` line, since lines before any `user` apply to anonymous clients).
/// What the incremental writer's blocks must add up to (tests compare them).
#[cfg(test)]
pub(crate) fn render(preamble: &str, grants: &[BrokerGrant]) -> Result<String, BrokerError> {
    grants.iter().try_for_each(check_grant)?;
    let mut out = header(preamble);
    out.reserve(grants.len() * 96);
    for (client_id, (access, grant)) in merge(grants) {
        push_block(&mut out, client_id, grant, &access);
    }
    Ok(out)
}

/// The start of the ACL file: our comment and the preamble.
pub(crate) fn header(preamble: &str) -> String {
    let mut out = String::with_capacity(64 + preamble.len());
    out.push_str(
        "# Mosquitto ACL file written by Onboard. Do not edit: every change of a\n\
         # device's broker access rewrites it from the registry.\n",
    );
    if !preamble.trim().is_empty() {
        out.push('\n');
        out.push_str(preamble.trim_end());
        out.push('\n');
    }
    out
}

/// One client id's block, as [`render`] writes it, for grants already checked
/// (all with that client id; the first names the device in the comment).
pub(crate) fn block(grants: &[&BrokerGrant]) -> String {
    let mut access = Access::new();
    for g in grants {
        for t in &g.publish {
            access.entry(t.clone()).or_default().1 = true;
        }
        for t in &g.subscribe {
            access.entry(t.clone()).or_default().0 = true;
        }
    }
    let mut out = String::with_capacity(96);
    if let Some(first) = grants.first() {
        push_block(&mut out, &first.client_id, first, &access);
    }
    out
}

fn push_block(out: &mut String, client_id: &str, grant: &BrokerGrant, access: &Access) {
    let _ = write!(out, "\n# device {}\nuser {client_id}\n", grant.device_id);
    for (topic, (read, write)) in access {
        let mode = match (read, write) {
            (true, true) => "readwrite",
            (true, false) => "read",
            _ => "write",
        };
        let _ = writeln!(out, "topic {mode} {topic}");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use onboard_domain::{DeviceId, Serial};

    pub(crate) fn grant(n: u32) -> BrokerGrant {
        let id: DeviceId = format!("3f0c2a8e-0000-7000-8000-{n:012}").parse().unwrap();
        BrokerGrant {
            device_id: id,
            serial: Serial::parse(&format!("SN-{n}")).unwrap(),
            client_id: id.to_string(),
            publish: vec![format!("devices/{id}/#")],
            subscribe: vec![format!("devices/{id}/#"), format!("config/{id}")],
            max_qos: 1,
            retain_allowed: false,
            password_hash: None,
        }
    }

    #[test]
    fn one_block_per_device_no_patterns() {
        let text = render(
            "user onboard-service\ntopic read devices/+/status\n",
            &[grant(2), grant(1)],
        )
        .unwrap();
        let a = grant(1).client_id;
        let b = grant(2).client_id;
        let expected_a =
            format!("user {a}\ntopic read config/{a}\ntopic readwrite devices/{a}/#\n");
        assert!(text.contains(&expected_a), "{text}");
        assert!(text.find(&format!("user {a}")) < text.find(&format!("user {b}")));
        assert!(text.contains("\nuser onboard-service\ntopic read devices/+/status\n"));
        assert!(!text.contains("pattern"));
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            assert!(
                line.starts_with("user ") || line.starts_with("topic "),
                "{line}"
            );
        }
    }

    #[test]
    fn duplicate_client_ids_are_merged() {
        let mut second = grant(1);
        second.publish = vec!["extra/topic".into()];
        second.subscribe = vec![];
        let text = render("", &[grant(1), second]).unwrap();
        assert_eq!(text.matches("\nuser ").count(), 1);
        assert!(text.contains("topic write extra/topic\n"));
    }

    #[test]
    fn bad_input_is_rejected() {
        for id in ["", "a\nuser root", " padded", "nul\0"] {
            let mut g = grant(1);
            g.client_id = id.into();
            assert!(
                matches!(render("", &[g]), Err(BrokerError::InvalidGrant(_))),
                "{id:?}"
            );
        }
        for topic in ["", "a/b#", "a/#/b", "a+/b", "x\ntopic readwrite #"] {
            let mut g = grant(1);
            g.publish = vec![topic.into()];
            assert!(render("", &[g]).is_err(), "{topic:?}");
        }
        for ok in ["#", "+", "a/+/b", "a/b/#", "$SYS/x"] {
            check_topic_filter(ok).unwrap();
        }
    }
}
