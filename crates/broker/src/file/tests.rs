//! Unit tests of the file backend over fake loaders.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::acl::tests::grant;
use crate::{acl, passwd};
use std::sync::mpsc::{channel, Receiver, Sender};

/// A generous bound for waiting on another thread (not a speed check).
const WAIT: Duration = Duration::from_secs(10);

fn config(dir: &std::path::Path) -> FileConfig {
    let mut config = FileConfig::new(dir.join("acl"), dir.join("pid"));
    config.reload = Reload::None;
    config.password_file = Some(dir.join("passwd"));
    config
}

fn setup(dir: &std::path::Path, grants: Arc<Mutex<Vec<BrokerGrant>>>) -> MosquittoFile {
    let loader: GrantLoader = Arc::new(move || Ok(grants.lock().unwrap().clone()));
    MosquittoFile::new(config(dir), loader)
}

/// Like `setup`, but the loader's first call says so on `entered` and then
/// waits until the test sends on `release`: the test holds the first rewrite.
fn setup_gated(
    dir: &std::path::Path,
    grants: Arc<Mutex<Vec<BrokerGrant>>>,
) -> (MosquittoFile, Receiver<()>, Sender<()>) {
    let (entered_tx, entered) = channel();
    let (release, release_rx) = channel();
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    let loader: GrantLoader = Arc::new(move || {
        let first = gate.lock().unwrap().take();
        if let Some((entered, release)) = first {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        Ok(grants.lock().unwrap().clone())
    });
    (MosquittoFile::new(config(dir), loader), entered, release)
}

#[test]
fn concurrent_grants_share_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Mutex::new(Vec::new()));
    let (file, entered, release) = setup_gated(dir.path(), registry.clone());
    let file = Arc::new(file);
    let spawn = |i: u32| {
        let (file, registry) = (file.clone(), registry.clone());
        std::thread::spawn(move || {
            let g = grant(i);
            registry.lock().unwrap().push(g.clone());
            file.grant(&g).unwrap();
        })
    };
    // The first grant's rewrite starts and is held in the loader...
    let mut threads = vec![spawn(0)];
    entered.recv_timeout(WAIT).unwrap();
    // ...while the other 19 arrive and queue behind it.
    threads.extend((1..20).map(spawn));
    assert!(
        file.wait_for_waiting_calls(19, WAIT),
        "{} calls waiting",
        file.waiting_calls()
    );
    release.send(()).unwrap();
    for t in threads {
        t.join().unwrap();
    }
    // The held rewrite, then one for all 19 that waited.
    assert_eq!(file.rewrites(), 2);
    assert_eq!(file.waiting_calls(), 0);
    let text = std::fs::read_to_string(dir.path().join("acl")).unwrap();
    for i in 0..20 {
        assert!(text.contains(&format!("user {}\n", grant(i).client_id)));
    }
}

/// The ids each incremental rewrite asked the device loader for.
type Asked = Arc<Mutex<Vec<Vec<DeviceId>>>>;

/// A registry of grants with a device loader over it that records the ids
/// each rewrite asked for, and counts the full loads.
fn setup_incremental(
    dir: &std::path::Path,
    grants: Arc<Mutex<Vec<BrokerGrant>>>,
) -> (MosquittoFile, Asked, Arc<AtomicU64>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let full = Arc::new(AtomicU64::new(0));
    let (g1, g2, a, f) = (grants.clone(), grants, asked.clone(), full.clone());
    let loader: GrantLoader = Arc::new(move || {
        f.fetch_add(1, Ordering::Relaxed);
        Ok(g1.lock().unwrap().clone())
    });
    let devices: DeviceGrantLoader = Arc::new(move |ids: &[DeviceId]| {
        a.lock().unwrap().push(ids.to_vec());
        let all = g2.lock().unwrap();
        Ok(ids
            .iter()
            .map(|id| (*id, all.iter().find(|g| g.device_id == *id).cloned()))
            .collect())
    });
    let file = MosquittoFile::new(config(dir), loader).with_device_loader(devices);
    (file, asked, full)
}

#[test]
fn incremental_rewrites_read_only_the_changed_devices_and_match_a_full_render() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Mutex::new((0..50).map(grant).collect::<Vec<_>>()));
    let (file, asked, full) = setup_incremental(dir.path(), registry.clone());
    // The first rewrite reads the whole fleet.
    file.grant(&grant(0)).unwrap();
    assert_eq!(full.load(Ordering::Relaxed), 1);
    assert!(asked.lock().unwrap().is_empty());

    // A new device, a changed one and a revoked one: only they are read.
    let mut changed = grant(7);
    changed.publish = vec!["extra/topic".into()];
    with_password(&mut changed);
    {
        let mut r = registry.lock().unwrap();
        r.push(grant(60));
        r.retain(|g| g.device_id != grant(3).device_id && g.device_id != grant(7).device_id);
        r.push(changed.clone());
    }
    file.grant(&grant(60)).unwrap();
    file.grant_many(&[changed.clone()]).unwrap();
    file.revoke(grant(3).device_id).unwrap();
    assert_eq!(full.load(Ordering::Relaxed), 1, "no second full read");
    assert_eq!(
        *asked.lock().unwrap(),
        vec![
            vec![grant(60).device_id],
            vec![grant(7).device_id],
            vec![grant(3).device_id]
        ]
    );
    // The files are what a full rewrite from the registry writes.
    let acl = std::fs::read_to_string(dir.path().join("acl")).unwrap();
    assert_eq!(acl, acl::render("", &registry.lock().unwrap()).unwrap());
    assert!(!acl.contains(&format!("user {}\n", grant(3).client_id)));
    assert!(acl.contains("topic write extra/topic\n"));
    let pw = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
    assert_eq!(pw, passwd::render("", &registry.lock().unwrap()).unwrap());
    assert!(pw.starts_with(&format!("{}:$7$", changed.client_id)));
}

/// The exact bytes of the ACL file (its format is Mosquitto's input): a
/// full rewrite, then an incremental one that re-renders a shared block.
#[test]
fn the_acl_file_is_byte_for_byte_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut shared = grant(5);
    shared.client_id = grant(4).client_id;
    shared.publish = vec!["z/last".into(), "a/first".into(), "Z/upper".into()];
    shared.subscribe = vec!["a/first".into(), "m/mid".into()];
    let registry = Arc::new(Mutex::new(vec![grant(2), shared, grant(1), grant(4)]));
    let (file, _, _) = setup_incremental(dir.path(), registry.clone());
    file.sync(&registry.lock().unwrap()).unwrap();
    let acl = || std::fs::read_to_string(dir.path().join("acl")).unwrap();
    assert_eq!(
        acl(),
        "# Mosquitto ACL file written by Onboard. Do not edit: every change of a\n\
# device's broker access rewrites it from the registry.\n\
\n\
# device 3f0c2a8e-0000-7000-8000-000000000001\n\
user 3f0c2a8e-0000-7000-8000-000000000001\n\
topic read config/3f0c2a8e-0000-7000-8000-000000000001\n\
topic readwrite devices/3f0c2a8e-0000-7000-8000-000000000001/#\n\
\n\
# device 3f0c2a8e-0000-7000-8000-000000000002\n\
user 3f0c2a8e-0000-7000-8000-000000000002\n\
topic read config/3f0c2a8e-0000-7000-8000-000000000002\n\
topic readwrite devices/3f0c2a8e-0000-7000-8000-000000000002/#\n\
\n\
# device 3f0c2a8e-0000-7000-8000-000000000004\n\
user 3f0c2a8e-0000-7000-8000-000000000004\n\
topic write Z/upper\n\
topic readwrite a/first\n\
topic read config/3f0c2a8e-0000-7000-8000-000000000004\n\
topic readwrite devices/3f0c2a8e-0000-7000-8000-000000000004/#\n\
topic read m/mid\n\
topic write z/last\n"
    );
    registry
        .lock()
        .unwrap()
        .retain(|g| g.device_id != grant(4).device_id);
    file.grant(&grant(1)).unwrap();
    file.revoke(grant(4).device_id).unwrap();
    assert_eq!(
        acl(),
        "# Mosquitto ACL file written by Onboard. Do not edit: every change of a\n\
# device's broker access rewrites it from the registry.\n\
\n\
# device 3f0c2a8e-0000-7000-8000-000000000001\n\
user 3f0c2a8e-0000-7000-8000-000000000001\n\
topic read config/3f0c2a8e-0000-7000-8000-000000000001\n\
topic readwrite devices/3f0c2a8e-0000-7000-8000-000000000001/#\n\
\n\
# device 3f0c2a8e-0000-7000-8000-000000000002\n\
user 3f0c2a8e-0000-7000-8000-000000000002\n\
topic read config/3f0c2a8e-0000-7000-8000-000000000002\n\
topic readwrite devices/3f0c2a8e-0000-7000-8000-000000000002/#\n\
\n\
# device 3f0c2a8e-0000-7000-8000-000000000005\n\
user 3f0c2a8e-0000-7000-8000-000000000004\n\
topic write Z/upper\n\
topic readwrite a/first\n\
topic read m/mid\n\
topic write z/last\n"
    );
}

fn with_password(g: &mut BrokerGrant) {
    g.password_hash = Some(passwd::hash_password("pw").unwrap());
}

#[test]
fn a_file_written_by_another_process_makes_the_next_rewrite_read_everything() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Mutex::new(vec![grant(1), grant(2)]));
    let (file, asked, full) = setup_incremental(dir.path(), registry.clone());
    file.grant(&grant(1)).unwrap();
    // Another process (onboardctl) revokes device 2 and rewrites the file
    // from the registry; this instance's memory still lists device 2.
    registry
        .lock()
        .unwrap()
        .retain(|g| g.device_id != grant(2).device_id);
    let other = setup(dir.path(), registry.clone());
    other.revoke(grant(2).device_id).unwrap();
    registry.lock().unwrap().push(grant(9));
    file.grant(&grant(9)).unwrap();
    assert_eq!(full.load(Ordering::Relaxed), 2, "read everything again");
    assert!(asked.lock().unwrap().is_empty());
    let acl = std::fs::read_to_string(dir.path().join("acl")).unwrap();
    assert!(!acl.contains(&grant(2).client_id), "{acl}");
    assert!(acl.contains(&grant(9).client_id));

    // A failed rewrite also makes the next one read everything.
    let mut bad = config(dir.path());
    bad.reload = Reload::Signal {
        pid_file: dir.path().join("pid"),
    };
    std::fs::write(dir.path().join("pid"), "garbage\n").unwrap();
    let devices_seen = Arc::new(AtomicU64::new(0));
    let seen = devices_seen.clone();
    let reg = registry.clone();
    let failing = MosquittoFile::new(bad, Arc::new(move || Ok(reg.lock().unwrap().clone())))
        .with_device_loader(Arc::new(move |ids: &[DeviceId]| {
            seen.fetch_add(1, Ordering::Relaxed);
            Ok(ids.iter().map(|id| (*id, None)).collect())
        }));
    assert!(failing.grant(&grant(1)).is_err());
    assert!(failing.grant(&grant(1)).is_err());
    assert_eq!(devices_seen.load(Ordering::Relaxed), 0);
}

#[test]
fn a_call_waits_for_a_rewrite_that_started_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Mutex::new(vec![grant(1)]));
    let file = setup(dir.path(), registry.clone());
    file.grant(&grant(1)).unwrap();
    registry.lock().unwrap().clear();
    file.revoke(grant(1).device_id).unwrap();
    let text = std::fs::read_to_string(dir.path().join("acl")).unwrap();
    assert!(!text.contains(&grant(1).client_id));
    assert_eq!(file.rewrites(), 2);
}

#[test]
fn loader_errors_pass_through_and_bad_rows_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FileConfig::new(dir.path().join("acl"), dir.path().join("pid"));
    config.reload = Reload::None;
    let failing: GrantLoader = Arc::new(|| Err(PortError::Unavailable("db down".into())));
    let file = MosquittoFile::new(config.clone(), failing);
    assert_eq!(
        file.revoke(grant(1).device_id),
        Err(PortError::Unavailable("db down".into()))
    );
    let mut bad = grant(2);
    bad.publish = vec!["a/#/b".into()];
    assert!(matches!(file.grant(&bad), Err(PortError::Rejected(_))));
    let rows = vec![grant(1), bad];
    let file = MosquittoFile::new(config, Arc::new(move || Ok(rows.clone())));
    file.revoke(grant(3).device_id).unwrap();
    let text = std::fs::read_to_string(dir.path().join("acl")).unwrap();
    assert!(text.contains(&grant(1).client_id));
    assert!(!text.contains(&grant(2).client_id));
}

#[test]
fn sync_writes_exactly_the_given_grants() {
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path(), Arc::new(Mutex::new(vec![grant(1)])));
    let mut with_password = grant(2);
    with_password.password_hash = Some(passwd::hash_password("pw").unwrap());
    file.sync(&[with_password.clone()]).unwrap();
    let text = std::fs::read_to_string(dir.path().join("acl")).unwrap();
    assert!(!text.contains(&grant(1).client_id));
    assert!(text.contains(&grant(2).client_id));
    let pw = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
    assert!(pw.starts_with(&format!("{}:$7$101$", with_password.client_id)));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("passwd"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn crl_must_be_pem_and_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path(), Arc::new(Mutex::new(vec![])));
    file.publish_crl("not a crl").unwrap(); // no crl_file: nothing to do
    let mut config = FileConfig::new(dir.path().join("acl"), dir.path().join("pid"));
    config.reload = Reload::None;
    config.crl_file = Some(dir.path().join("crl.pem"));
    let file = MosquittoFile::new(config, Arc::new(|| Ok(vec![])));
    assert!(matches!(
        file.publish_crl("junk"),
        Err(PortError::Rejected(_))
    ));
    let pem = "-----BEGIN X509 CRL-----\nMA==\n-----END X509 CRL-----\n";
    file.publish_crl(pem).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("crl.pem")).unwrap(),
        pem
    );
}

#[test]
fn before_mosquitto_runs_the_files_are_written_and_the_reload_skipped() {
    // A fresh install: Mosquitto's pid file (and its directory) do not exist
    // yet, and Mosquitto will not start without the CRL file.
    let dir = tempfile::tempdir().unwrap();
    let mut config = FileConfig::new(
        dir.path().join("acl"),
        dir.path().join("run").join("mosquitto.pid"),
    );
    config.password_file = Some(dir.path().join("passwd"));
    config.crl_file = Some(dir.path().join("crl.pem"));
    let rows = vec![grant(1)];
    let file = MosquittoFile::new(config.clone(), Arc::new(move || Ok(rows.clone())));
    file.sync(&[grant(1)]).unwrap();
    file.grant(&grant(1)).unwrap();
    let pem = "-----BEGIN X509 CRL-----\nMA==\n-----END X509 CRL-----\n";
    file.publish_crl(pem).unwrap();
    let acl = std::fs::read_to_string(dir.path().join("acl")).unwrap();
    assert!(acl.contains(&format!("user {}\n", grant(1).client_id)));
    assert!(dir.path().join("passwd").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("crl.pem")).unwrap(),
        pem
    );

    // A pid file that exists but holds no pid is still an error (the files
    // are written all the same).
    std::fs::create_dir(dir.path().join("run")).unwrap();
    std::fs::write(dir.path().join("run").join("mosquitto.pid"), "garbage\n").unwrap();
    let file = MosquittoFile::new(config, Arc::new(|| Ok(vec![])));
    match file.revoke(grant(1).device_id) {
        Err(PortError::Unavailable(m)) => assert!(m.contains("holds no process id"), "{m}"),
        other => panic!("expected a reload error, got {other:?}"),
    }
    match file.publish_crl(pem) {
        Err(PortError::Unavailable(m)) => assert!(m.contains("holds no process id"), "{m}"),
        other => panic!("expected a reload error, got {other:?}"),
    }
    let acl = std::fs::read_to_string(dir.path().join("acl")).unwrap();
    assert!(!acl.contains(&grant(1).client_id));
}
