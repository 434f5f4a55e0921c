//! Pattern mode of the file backend, against fake loaders over an in-memory
//! registry (the real Mosquitto runs in `crates/broker/tests` and in the core
//! tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use onboard_domain::{BrokerAccess, BrokerGrant, DeviceId, Serial};

use crate::acl::AclPatterns;
use crate::file::{DeviceGrantLoader, FileConfig, GrantLoader, MosquittoFile, ShutOutLoader};
use crate::reload::Reload;

fn id(n: u32) -> DeviceId {
    format!("3f0c2a8e-0000-7000-8000-{n:012}").parse().unwrap()
}

/// A device with the default topics: exactly what the patterns give it.
fn plain(n: u32) -> BrokerGrant {
    let id = id(n);
    BrokerGrant {
        device_id: id,
        serial: Serial::parse(&format!("SN-{n}")).unwrap(),
        client_id: id.to_string(),
        publish: vec![format!("devices/{id}/#")],
        subscribe: vec![
            format!("devices/{id}/#"),
            format!("iotsupport/{id}/rotation"),
        ],
        max_qos: 1,
        retain_allowed: false,
        password_hash: None,
    }
}

/// A device whose model adds a topic.
fn modelled(n: u32) -> BrokerGrant {
    let mut g = plain(n);
    g.publish.push(format!("sensors/{}/temp", g.device_id));
    g
}

fn patterns() -> AclPatterns {
    AclPatterns::new(
        &["devices/%u/#".into()],
        &["devices/%u/#".into(), "iotsupport/%u/rotation".into()],
    )
    .unwrap()
}

#[derive(Default)]
struct Registry {
    grants: Vec<BrokerGrant>,
    revoked: Vec<String>,
}

type Shared = Arc<Mutex<Registry>>;

fn backend(dir: &std::path::Path, registry: &Shared) -> MosquittoFile {
    let mut config = FileConfig::new(dir.join("acl"), dir.join("pid"));
    config.reload = Reload::None;
    config.acl_preamble = "user onboard-service\ntopic read devices/+/status\n".into();
    let (r1, r2, r3) = (registry.clone(), registry.clone(), registry.clone());
    let all: GrantLoader = Arc::new(move || Ok(r1.lock().unwrap().grants.clone()));
    let some: DeviceGrantLoader = Arc::new(move |ids: &[DeviceId]| {
        let r = r2.lock().unwrap();
        Ok(ids
            .iter()
            .map(|id| (*id, r.grants.iter().find(|g| g.device_id == *id).cloned()))
            .collect())
    });
    let shut_out: ShutOutLoader = Arc::new(move || Ok(r3.lock().unwrap().revoked.clone()));
    MosquittoFile::new(config, all)
        .with_device_loader(some)
        .with_patterns(patterns(), shut_out)
}

fn acl(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("acl")).unwrap()
}

fn revoke(registry: &Shared, n: u32) {
    let mut r = registry.lock().unwrap();
    r.grants.retain(|g| g.device_id != id(n));
    r.revoked.push(id(n).to_string());
}

#[test]
fn covered_devices_change_no_file_and_lost_access_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let registry: Shared = Arc::default();
    {
        let mut r = registry.lock().unwrap();
        r.grants = (0..5).map(plain).collect();
        r.grants.push(modelled(5));
        r.revoked.push(id(9).to_string());
    }
    let file = backend(dir.path(), &registry);
    file.grant(&plain(0)).unwrap();
    let first = acl(dir.path());
    assert!(
        first.contains("\npattern readwrite devices/%u/#\npattern read iotsupport/%u/rotation\n"),
        "{first}"
    );
    assert!(first.contains("\nuser onboard-service\ntopic read devices/+/status\n"));
    for n in 0..5 {
        assert!(!first.contains(&id(n).to_string()), "{first}");
    }
    let five = id(5);
    assert!(first.contains(&format!(
        "\nuser {five}\ntopic readwrite devices/{five}/#\ntopic read iotsupport/{five}/rotation\ntopic write sensors/{five}/temp\n"
    )));
    assert!(first.contains(&format!("\nuser {}\ntopic deny #\n", id(9))));
    assert_eq!(file.rewrites(), 1);

    // A new device with the default topics: nothing to write, nothing to reload.
    let modified = std::fs::metadata(dir.path().join("acl"))
        .unwrap()
        .modified()
        .unwrap();
    registry.lock().unwrap().grants.push(plain(6));
    file.grant(&plain(6)).unwrap();
    file.grant_many(&[plain(1), plain(2)]).unwrap();
    assert_eq!(file.rewrites(), 1);
    assert_eq!(acl(dir.path()), first);
    let after = std::fs::metadata(dir.path().join("acl"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(after, modified);

    // Revoked: shut out, and so is a device with a block of its own.
    revoke(&registry, 3);
    file.revoke(id(3)).unwrap();
    revoke(&registry, 5);
    file.revoke(id(5)).unwrap();
    let text = acl(dir.path());
    for n in [3, 5] {
        assert!(
            text.contains(&format!("\nuser {}\ntopic deny #\n", id(n))),
            "{text}"
        );
    }
    assert!(!text.contains("sensors/"), "{text}");
    assert_eq!(file.rewrites(), 3);

    // A device whose model gains a topic gets a block; one that loses it, none.
    let mut r = registry.lock().unwrap();
    r.grants.retain(|g| g.device_id != id(6));
    r.grants.push(modelled(6));
    drop(r);
    file.grant(&modelled(6)).unwrap();
    assert!(acl(dir.path()).contains(&format!("\nuser {}\n", id(6))));
    let mut r = registry.lock().unwrap();
    r.grants.retain(|g| g.device_id != id(6));
    r.grants.push(plain(6));
    drop(r);
    file.grant(&plain(6)).unwrap();
    assert!(!acl(dir.path()).contains(&format!("\nuser {}\n", id(6))));

    // What the increments built is what a process reading everything writes.
    let incremental = acl(dir.path());
    let other = tempfile::tempdir().unwrap();
    let fresh = backend(other.path(), &registry);
    fresh.grant(&plain(0)).unwrap();
    assert_eq!(acl(other.path()), incremental);
}

/// The in-memory bookkeeping of a shared client id, with a loader that lists
/// covered grants. Onboard's own loader leaves them out and relies on client ids
/// being device ids, which no two devices share (see `MosquittoFile::with_patterns`).
#[test]
fn a_client_id_held_by_another_grant_is_not_shut_out() {
    let dir = tempfile::tempdir().unwrap();
    let registry: Shared = Arc::default();
    // Device 2 shares device 1's client id.
    let mut twin = plain(1);
    twin.device_id = id(2);
    registry.lock().unwrap().grants = vec![plain(1), twin];
    let file = backend(dir.path(), &registry);
    file.grant(&plain(1)).unwrap();
    let mut r = registry.lock().unwrap();
    r.grants.retain(|g| g.device_id != id(2));
    r.revoked.push(id(1).to_string());
    drop(r);
    file.revoke(id(2)).unwrap();
    assert!(!acl(dir.path()).contains("deny"), "{}", acl(dir.path()));
    // A full read agrees: the revoked list names a client id that is still granted.
    let other = tempfile::tempdir().unwrap();
    backend(other.path(), &registry).sync(&[plain(1)]).unwrap();
    assert_eq!(acl(other.path()), acl(dir.path()));
}

#[test]
fn a_file_another_process_wrote_is_replaced_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry: Shared = Arc::default();
    registry.lock().unwrap().grants = (0..3).map(plain).collect();
    let file = backend(dir.path(), &registry);
    file.grant(&plain(0)).unwrap();
    // Another process revoked device 1 and wrote its own file.
    revoke(&registry, 1);
    let other = backend(dir.path(), &registry);
    other.revoke(id(1)).unwrap();
    let theirs = acl(dir.path());
    assert!(theirs.contains("deny"));
    // This process's next change (one the patterns cover) reads everything again,
    // and its file keeps the shut-out block.
    registry.lock().unwrap().grants.push(plain(4));
    file.grant(&plain(4)).unwrap();
    assert_eq!(acl(dir.path()), theirs);
}

#[test]
fn pattern_templates_are_checked() {
    for bad in [
        "devices/x%u/#",
        "devices/#",
        "a/%c/%u",
        "devices/%u/#/x",
        "%u\n",
    ] {
        assert!(
            AclPatterns::new(&[bad.into()], &[]).is_err(),
            "{bad:?} was accepted"
        );
    }
    assert!(AclPatterns::new(&[], &[]).is_err());
    assert!(AclPatterns::new(&["%u".into()], &["a/+/%u/#".into()]).is_ok());
}

#[test]
fn client_ids_that_cannot_stand_in_a_level_always_get_a_block() {
    let p = patterns();
    let mut g = plain(1);
    g.client_id = "a/b".into();
    g.publish = vec!["devices/a/b/#".into()];
    g.subscribe = vec!["devices/a/b/#".into(), "iotsupport/a/b/rotation".into()];
    assert!(!p.cover(&g.client_id, &crate::acl::topics(&[&g])));
    let plain = plain(1);
    assert!(p.cover(&plain.client_id, &crate::acl::topics(&[&plain])));
}

#[test]
fn a_grant_that_cannot_be_written_leaves_the_pattern_topics_only() {
    let dir = tempfile::tempdir().unwrap();
    let registry: Shared = Arc::default();
    let mut bad = modelled(1);
    bad.publish.push("a/#/b".into());
    registry.lock().unwrap().grants = vec![plain(0), bad];
    let file = backend(dir.path(), &registry);
    file.grant(&plain(0)).unwrap();
    let text = acl(dir.path());
    assert!(!text.contains(&id(1).to_string()), "{text}");
    assert!(
        text.contains("\npattern readwrite devices/%u/#\n"),
        "{text}"
    );
}

#[test]
fn a_new_device_the_patterns_cover_needs_no_change_and_is_still_shut_out_later() {
    let dir = tempfile::tempdir().unwrap();
    let registry: Shared = Arc::default();
    registry.lock().unwrap().grants = vec![plain(0), modelled(1)];
    let file = backend(dir.path(), &registry);
    // Before this instance wrote (and Mosquitto read) the file: not known.
    assert!(!file.enforces_new_device(&plain(2)));
    file.grant(&plain(0)).unwrap();
    assert!(file.enforces_new_device(&plain(2)));
    // Other topics, a password, a client id with a block: a change is needed.
    assert!(!file.enforces_new_device(&modelled(2)));
    let mut with_password = plain(2);
    with_password.password_hash = Some("$7$101$c2FsdA==$aGFzaA==".into());
    assert!(!file.enforces_new_device(&with_password));
    let mut shares_a_block = plain(2);
    shares_a_block.client_id = id(1).to_string();
    assert!(!file.enforces_new_device(&shares_a_block));

    // Device 2 registers without a broker change: it is in the registry only.
    registry.lock().unwrap().grants.push(plain(2));
    let rewrites = file.rewrites();
    // Revoked later: its client id comes from the shut-out list.
    revoke(&registry, 2);
    file.revoke(id(2)).unwrap();
    let text = acl(dir.path());
    assert!(
        text.contains(&format!("\nuser {}\ntopic deny #\n", id(2))),
        "{text}"
    );
    assert_eq!(file.rewrites(), rewrites + 1);
    assert!(!file.enforces_new_device(&plain(2)), "shut out");

    // Another process's file: not this instance's to vouch for.
    let other = backend(dir.path(), &registry);
    other.revoke(id(0)).unwrap();
    assert!(!file.enforces_new_device(&plain(3)));
}

#[test]
fn a_grant_that_becomes_unwritable_is_dropped_as_a_full_read_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let registry: Shared = Arc::default();
    registry.lock().unwrap().grants = vec![plain(0), modelled(1)];
    let file = backend(dir.path(), &registry);
    file.grant(&plain(0)).unwrap();
    assert!(acl(dir.path()).contains(&format!("\nuser {}\n", id(1))));
    // Device 1's model gains a topic that is no filter; the device keeps its
    // access (the registry still grants it), only its block cannot be written.
    let mut bad = modelled(1);
    bad.publish.push("a/#/b".into());
    registry.lock().unwrap().grants[1] = bad;
    file.revoke(id(1)).unwrap();
    let text = acl(dir.path());
    assert!(
        !text.contains(&id(1).to_string()),
        "neither a block nor shut out: {text}"
    );
    let other = tempfile::tempdir().unwrap();
    backend(other.path(), &registry).grant(&plain(0)).unwrap();
    assert_eq!(acl(other.path()), text);
}
