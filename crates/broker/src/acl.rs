//! Grant validation and Mosquitto's ACL file.
//!
//! Every granted device gets its own `user <client id>` block with one `topic`
//! line per topic filter: `write` for publish, `read` for subscribe (Mosquitto
//! checks `read` both when subscribing and when delivering each message),
//! `readwrite` for both. With per-user blocks, removing the block and reloading
//! takes effect on the next message of an open connection.
//!
//! In pattern mode ([`AclPatterns`]) the topics every device holds are `pattern`
//! lines instead, and only a device with other topics gets a block. A pattern
//! applies to any username, so a device that loses its access (revoked,
//! decommissioned) gets a block that denies everything ([`shut_out_block`]):
//! Mosquitto checks a user's own lines before the patterns, denials first.
//!
//! `max_qos` and `retain_allowed` cannot be expressed per user in Mosquitto 2.0
//! (neither in the ACL file nor in the dynamic-security plugin); set `max_qos` and
//! `retain_available` on the listener for the whole fleet.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use onboard_domain::BrokerGrant;

use crate::error::BrokerError;

/// Any control character (Unicode `Cc`: U+0000 to U+001F, U+007F to U+009F).
fn has_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        s.chars().any(char::is_control)
    }
}

/// A client id usable as a Mosquitto username: 1 to 65,535 bytes, no control
/// characters, no whitespace at either end (Mosquitto trims file lines).
pub(crate) fn check_client_id(id: &str) -> Result<(), BrokerError> {
    if id.is_empty() || id.len() > 65_535 {
        return Err(BrokerError::InvalidGrant(
            "a client id must have 1 to 65,535 bytes".into(),
        ));
    }
    if has_control(id) || id.trim() != id {
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
    // One pass over the bytes (every grant of a fleet-wide rewrite is checked):
    // ASCII control characters, and wildcards, each of which is a whole level
    // when the bytes beside it are `/` or the ends.
    let bytes = topic.as_bytes();
    let level_starts_at = |i: usize| i == 0 || bytes[i - 1] == b'/';
    let mut ascii = true;
    let mut control = false;
    let mut wildcard = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0..=0x1f | 0x7f => control = true,
            0x80.. => ascii = false,
            b'+' if !(level_starts_at(i) && (i + 1 == bytes.len() || bytes[i + 1] == b'/')) => {
                wildcard = wildcard.or(Some("uses + inside a level"));
            }
            b'#' if !(level_starts_at(i) && i + 1 == bytes.len()) => {
                wildcard = wildcard.or(Some("uses # other than as the whole last level"));
            }
            _ => {}
        }
    }
    if control || (!ascii && has_control(topic)) || topic.trim() != topic {
        return Err(bad("has control characters or surrounding whitespace"));
    }
    if let Some(why) = wildcard {
        return Err(bad(why));
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
    let mut by_client: BTreeMap<&str, Vec<&BrokerGrant>> = BTreeMap::new();
    for g in grants {
        by_client.entry(g.client_id.as_str()).or_default().push(g);
    }
    let mut out = header(preamble);
    for grants in by_client.values() {
        out.push_str(&block(grants));
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

/// The topic filters of grants already checked (of one client id), sorted, each
/// with the union of its access: (filter, read, write).
pub(crate) fn topics<G: Borrow<BrokerGrant>>(grants: &[G]) -> Vec<(&str, bool, bool)> {
    let mut topics: Vec<(&str, bool, bool)> = Vec::with_capacity(
        grants
            .iter()
            .map(|g| g.borrow().publish.len() + g.borrow().subscribe.len())
            .sum(),
    );
    for g in grants {
        let g = g.borrow();
        topics.extend(g.publish.iter().map(|t| (t.as_str(), false, true)));
        topics.extend(g.subscribe.iter().map(|t| (t.as_str(), true, false)));
    }
    merge_sorted(&mut topics);
    topics
}

fn merge_sorted<T: AsRef<str>>(topics: &mut Vec<(T, bool, bool)>) {
    topics.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    topics.dedup_by(|later, kept| {
        let same = later.0.as_ref() == kept.0.as_ref();
        if same {
            kept.1 |= later.1;
            kept.2 |= later.2;
        }
        same
    });
}

fn mode(read: bool, write: bool) -> &'static str {
    match (read, write) {
        (true, true) => "readwrite",
        (true, false) => "read",
        _ => "write",
    }
}

/// One client id's block for grants already checked, all with that client id:
/// `# device <id of the first>`, `user <client id>`, then one `topic` line per
/// topic filter of any of them, sorted, with the union of their access. Built
/// in a string of exactly its length (a fleet-wide rewrite renders one per
/// device).
pub(crate) fn block<G: Borrow<BrokerGrant>>(grants: &[G]) -> String {
    let Some(first) = grants.first().map(Borrow::borrow) else {
        return String::new();
    };
    let topics = topics(grants);
    let mut id = [0u8; 36];
    let id = first.device_id.0.hyphenated().encode_lower(&mut id);
    let len = "\n# device \nuser \n".len()
        + id.len()
        + first.client_id.len()
        + topics
            .iter()
            .map(|&(t, r, w)| "topic  \n".len() + mode(r, w).len() + t.len())
            .sum::<usize>();
    let mut out = String::with_capacity(len);
    for part in ["\n# device ", id, "\nuser ", &first.client_id, "\n"] {
        out.push_str(part);
    }
    for (topic, read, write) in topics {
        for part in ["topic ", mode(read, write), " ", topic, "\n"] {
            out.push_str(part);
        }
    }
    debug_assert_eq!(out.len(), len);
    out
}

/// The block that shuts a client id out of every topic: a device that lost its
/// access while the patterns ([`AclPatterns`]) would still give it its own topics.
/// Mosquitto checks a user's own lines, denials first, before any pattern.
pub(crate) fn shut_out_block(client_id: &str) -> String {
    format!("\n# shut out\nuser {client_id}\ntopic deny #\n")
}

/// The topics every device holds without a block of its own, written as
/// Mosquitto `pattern` lines in which `%u` stands for the username (a device's
/// client id). See `docs/mosquitto.md`, "Pattern mode".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclPatterns {
    /// (template, read, write), sorted by template, access merged.
    templates: Vec<(String, bool, bool)>,
}

impl AclPatterns {
    /// Topic templates a device may publish to and subscribe to. Each must hold
    /// `%u` as one whole level at least once and no other `%`, and be a valid
    /// topic filter around it.
    pub fn new(publish: &[String], subscribe: &[String]) -> Result<Self, BrokerError> {
        let mut templates: Vec<(String, bool, bool)> = Vec::new();
        for (list, read, write) in [(publish, false, true), (subscribe, true, false)] {
            for t in list {
                check_template(t)?;
                templates.push((t.clone(), read, write));
            }
        }
        if templates.is_empty() {
            return Err(BrokerError::InvalidGrant(
                "patterns need at least one topic".into(),
            ));
        }
        merge_sorted(&mut templates);
        Ok(Self { templates })
    }

    /// Whether `topics` (sorted and merged, as [`topics`] makes them) are exactly
    /// what the patterns give `client_id`: then the client needs no block. A
    /// client id that could not stand in a topic level never is.
    pub(crate) fn cover(&self, client_id: &str, topics: &[(&str, bool, bool)]) -> bool {
        if client_id.contains(['/', '+', '#']) || self.templates.len() != topics.len() {
            return false;
        }
        let mut rendered: Vec<(String, bool, bool)> = self
            .templates
            .iter()
            .map(|(t, r, w)| (t.replace("%u", client_id), *r, *w))
            .collect();
        merge_sorted(&mut rendered);
        rendered.len() == topics.len()
            && rendered
                .iter()
                .zip(topics)
                .all(|((a, r, w), (b, r2, w2))| a == b && r == r2 && w == w2)
    }

    /// Whether a grant (not yet checked) needs nothing but the patterns: valid,
    /// no password (the password file must name it), and exactly the patterns'
    /// topics for its client id.
    pub fn covers(&self, grant: &BrokerGrant) -> bool {
        grant.password_hash.is_none()
            && check_grant(grant).is_ok()
            && self.cover(&grant.client_id, &topics(&[grant]))
    }

    /// The `pattern` lines, after a comment.
    pub(crate) fn lines(&self) -> String {
        let mut out = String::from(
            "\n# Every device's own topics; a device with a block below has that block's \
             topics as well,\n# a device shut out below has none.\n",
        );
        for (t, r, w) in &self.templates {
            for part in ["pattern ", mode(*r, *w), " ", t, "\n"] {
                out.push_str(part);
            }
        }
        out
    }
}

fn check_template(template: &str) -> Result<(), BrokerError> {
    let bad = |why: &str| BrokerError::InvalidGrant(format!("pattern {template:?} {why}"));
    if !template.split('/').any(|level| level == "%u") {
        return Err(bad("needs %u as a whole level"));
    }
    if template
        .split('/')
        .any(|level| level.contains('%') && level != "%u")
    {
        return Err(bad("may hold % only as the level %u"));
    }
    check_topic_filter(&template.replace("%u", "x")).map_err(|_| bad("is not a topic filter"))
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
        for id in [
            "",
            "a\nuser root",
            " padded",
            "nul\0",
            "del\u{7f}",
            "nel\u{85}x",
        ] {
            let mut g = grant(1);
            g.client_id = id.into();
            assert!(
                matches!(render("", &[g]), Err(BrokerError::InvalidGrant(_))),
                "{id:?}"
            );
        }
        for topic in [
            "",
            "a/b#",
            "a/#/b",
            "a+/b",
            "x\ntopic readwrite #",
            "a/++",
            "+a",
            "a/+b/c",
            "##",
            "#/",
            "a/#/",
            "é/\u{9f}",
        ] {
            let mut g = grant(1);
            g.publish = vec![topic.into()];
            assert!(render("", &[g]).is_err(), "{topic:?}");
        }
        for ok in [
            "#", "+", "a/+/b", "a/b/#", "$SYS/x", "+/+", "/+/", "a//b", "/#", "+/#", "é/+",
        ] {
            check_topic_filter(ok).unwrap();
        }
    }
}
