//! Credential rotation: the run-job cycle with time moved through the clock, the
//! renewal and acknowledgment that complete it, and concurrent cycles.

use std::sync::{Arc, Barrier};

use chrono::{Duration, TimeZone, Utc};
use onboard_core::domain::*;
use onboard_core::{Actor, CoreError, DeviceSession, Onboard, PresentedCertificate};
use onboard_registry::testing::TestBackend;

use super::register::{batch, openssl_csr, request};
use super::{fixture, openssl, write, Fixture};

/// The served CRL as `openssl crl -text` reads it.
fn crl_text(f: &Fixture) -> String {
    let crl = f.onboard.current_crl().unwrap();
    let file = write(f.dir.path(), "crl.pem", &crl.pem);
    let (ok, text) = openssl(&["crl", "-in", &file, "-noout", "-text"]);
    assert!(ok, "{text}");
    text
}

fn csr(f: &Fixture, name: &str) -> String {
    openssl_csr(
        f.dir.path(),
        name,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    )
}

fn presented(c: &Certificate) -> PresentedCertificate {
    PresentedCertificate {
        serial: c.serial.clone(),
        fingerprint: c.fingerprint.clone(),
    }
}

fn session(onboard: &Onboard, c: &Certificate) -> Result<DeviceSession, CoreError> {
    onboard.authenticate_certificate(&presented(c))
}

fn state(f: &Fixture, device: DeviceId) -> Option<RotationState> {
    f.onboard.device_rotation(device).unwrap().map(|r| r.state)
}

fn certificates(f: &Fixture, device: DeviceId) -> Vec<Certificate> {
    f.db.db
        .read(|tx| tx.certificates_of_device(device))
        .unwrap()
}

fn audit_actions(f: &Fixture, device: DeviceId) -> Vec<(String, AuditOutcome)> {
    let mut events = f
        .onboard
        .audit_events(
            &AuditFilter {
                device_id: Some(device),
                ..Default::default()
            },
            &PageRequest::first(500).unwrap(),
        )
        .unwrap()
        .items;
    events.reverse();
    events
        .into_iter()
        .filter(|e| e.action.starts_with("rotation."))
        .map(|e| (e.action, e.outcome))
        .collect()
}

fn settings(s: &mut onboard_core::Settings) {
    s.rotation.cron = "0 8 * * 6#1".into();
    s.rotation.timeout_seconds = 300;
    s.rotation.max_in_flight = 1;
}

pub fn a_cycle_times_out_restores_the_old_certificate_retries_and_completes(backend: TestBackend) {
    let f = fixture(backend, settings);
    let key = batch(&f, 10);
    let a = f
        .onboard
        .register(request(&key, "SN-rot-a", Some(csr(&f, "a"))))
        .unwrap();
    let b = f
        .onboard
        .register(request(&key, "SN-rot-b", Some(csr(&f, "b"))))
        .unwrap();

    // The first cycle (Monday 2026-11-23) sets the baseline; nothing is due.
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!(
        (s.generation, s.started, s.timed_out, s.pending),
        (None, 0, 0, 0)
    );
    f.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 5, 7, 59, 0).unwrap());
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!((s.generation, s.started, s.pending), (None, 0, 0), "{s}");
    assert_eq!(s.scheduled_run, None);
    assert_eq!(state(&f, a.device.id), None, "a no-op cycle writes nothing");

    // First Saturday 08:00 passed: the fleet is queued, one rotation starts.
    f.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 30).unwrap());
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!((s.generation, s.started, s.pending), (Some(1), 1, 1), "{s}");
    assert_eq!(
        s.scheduled_run,
        Some(Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 0).unwrap())
    );
    assert_eq!(
        s.to_string(),
        "rotation cycle: 0 timed out, fleet queued (schedule due 2026-12-05T08:00:00Z, generation 1), 1 started, 1 pending (max 1)"
    );
    let (first, second) = if state(&f, a.device.id) == Some(RotationState::Pending) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(state(&f, first.device.id), Some(RotationState::Pending));
    assert_eq!(state(&f, second.device.id), Some(RotationState::Queued));
    let r = f.onboard.device_rotation(first.device.id).unwrap().unwrap();
    assert_eq!(r.deadline_at, Some(f.clock.now() + Duration::seconds(300)));
    assert_eq!(r.attempts, 1);

    // Within the deadline a second cycle starts nothing (max_in_flight = 1) and
    // the schedule is not due again.
    f.clock.advance(Duration::seconds(60));
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!(
        (s.generation, s.started, s.timed_out, s.pending),
        (None, 0, 0, 1)
    );

    // The device renews while PENDING: that is the rotation's new certificate.
    let old = session(&f.onboard, &first.certificate).unwrap();
    let renewed = f
        .onboard
        .renew_certificate(&old, &csr(&f, "first-new"))
        .unwrap();
    // Acknowledging with the old certificate is refused and changes nothing.
    let err = f.onboard.acknowledge_rotation(&old).unwrap_err();
    assert!(matches!(err, CoreError::Conflict(_)), "{err:?}");
    assert_eq!(state(&f, first.device.id), Some(RotationState::Pending));

    // The deadline passes without an acknowledgment: TIMEOUT, the new certificate
    // revoked, the old one works again; the next device starts.
    f.clock.advance(Duration::seconds(241));
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!((s.timed_out, s.started, s.pending), (1, 1, 1), "{s}");
    assert_eq!(state(&f, first.device.id), Some(RotationState::Timeout));
    assert_eq!(state(&f, second.device.id), Some(RotationState::Pending));
    let rows = certificates(&f, first.device.id);
    let new_row = rows
        .iter()
        .find(|c| c.id == renewed.certificate.id)
        .unwrap();
    assert_eq!(new_row.status, CertificateStatus::Revoked);
    assert_eq!(
        new_row.revocation_reason,
        Some(RevocationReason::Superseded)
    );
    let crl = crl_text(&f);
    assert!(crl.contains(renewed.certificate.serial.as_str()), "{crl}");
    assert!(!crl.contains(first.certificate.serial.as_str()), "{crl}");
    let err = session(&f.onboard, &renewed.certificate).unwrap_err();
    assert!(matches!(err, CoreError::Unauthorized(_)), "{err:?}");
    session(&f.onboard, &first.certificate).expect("the old certificate works again");

    // The second device never renews: it times out too, and the first is retried
    // (TIMEOUT -> PENDING); the one timed out in this cycle waits for the next.
    f.clock.advance(Duration::seconds(301));
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!((s.timed_out, s.started, s.pending), (1, 1, 1), "{s}");
    assert_eq!(state(&f, second.device.id), Some(RotationState::Timeout));
    assert_eq!(state(&f, first.device.id), Some(RotationState::Pending));
    let r = f.onboard.device_rotation(first.device.id).unwrap().unwrap();
    assert_eq!(r.attempts, 2);

    // This time it renews and acknowledges with the new certificate: OK, the old
    // certificate revoked as superseded and listed in the CRL.
    let old = session(&f.onboard, &first.certificate).unwrap();
    let renewed = f
        .onboard
        .renew_certificate(&old, &csr(&f, "first-newer"))
        .unwrap();
    let new = session(&f.onboard, &renewed.certificate).unwrap();
    let entry = f.onboard.acknowledge_rotation(&new).unwrap();
    assert_eq!(entry.state, RotationState::Ok);
    assert_eq!(entry.completed_at, Some(f.clock.now()));
    assert_eq!(state(&f, first.device.id), Some(RotationState::Ok));
    let rows = certificates(&f, first.device.id);
    let old_row = rows.iter().find(|c| c.id == first.certificate.id).unwrap();
    assert_eq!(old_row.status, CertificateStatus::Revoked);
    assert_eq!(
        old_row.revocation_reason,
        Some(RevocationReason::Superseded)
    );
    assert_eq!(
        rows.iter()
            .filter(|c| c.status == CertificateStatus::Active)
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![renewed.certificate.id]
    );
    let err = session(&f.onboard, &first.certificate).unwrap_err();
    assert!(matches!(err, CoreError::Unauthorized(_)), "{err:?}");
    let crl = crl_text(&f);
    assert!(crl.contains(first.certificate.serial.as_str()), "{crl}");
    assert!(!crl.contains(renewed.certificate.serial.as_str()), "{crl}");
    // An acknowledgment repeated answers the same.
    assert_eq!(
        f.onboard.acknowledge_rotation(&new).unwrap().state,
        RotationState::Ok
    );

    // The next cycle retries the second device.
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!((s.timed_out, s.started, s.pending), (0, 1, 1), "{s}");
    assert_eq!(state(&f, second.device.id), Some(RotationState::Pending));

    // The metrics count the ended rotations by outcome.
    let counts = f.onboard.fleet_counts().unwrap();
    assert_eq!(
        counts.rotations_by_outcome,
        vec![("completed", 1), ("timed_out", 2)]
    );

    // Every transition is in the audit log.
    use AuditOutcome::*;
    assert_eq!(
        audit_actions(&f, first.device.id),
        vec![
            ("rotation.start".into(), Success),
            ("rotation.timeout".into(), Failure),
            ("rotation.start".into(), Success),
            ("rotation.complete".into(), Success),
        ]
    );
}

pub fn the_first_use_of_the_new_certificate_completes_the_rotation(backend: TestBackend) {
    let f = fixture(backend, settings);
    let key = batch(&f, 10);
    let a = f
        .onboard
        .register(request(&key, "SN-rot-use", Some(csr(&f, "use"))))
        .unwrap();
    assert_eq!(
        f.onboard
            .trigger_rotation(&Actor::cli(), Some(a.device.id))
            .unwrap(),
        1
    );
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!((s.started, s.pending), (1, 1));
    let old = session(&f.onboard, &a.certificate).unwrap();
    let renewed = f
        .onboard
        .renew_certificate(&old, &csr(&f, "use-new"))
        .unwrap();
    // Still PENDING until the new certificate is used.
    assert_eq!(state(&f, a.device.id), Some(RotationState::Pending));
    session(&f.onboard, &renewed.certificate).unwrap();
    assert_eq!(state(&f, a.device.id), Some(RotationState::Ok));
    let old_row = certificates(&f, a.device.id)
        .into_iter()
        .find(|c| c.id == a.certificate.id)
        .unwrap();
    assert_eq!(
        old_row.revocation_reason,
        Some(RevocationReason::Superseded)
    );
    // The deadline passing later changes nothing.
    f.clock.advance(Duration::seconds(3600));
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!((s.timed_out, s.started, s.pending), (0, 0, 0), "{s}");
    session(&f.onboard, &renewed.certificate).unwrap();
}

pub fn triggers_queue_only_what_may_be_queued_and_status_lists_states(backend: TestBackend) {
    let f = fixture(backend, settings);
    let key = batch(&f, 10);
    let a = f
        .onboard
        .register(request(&key, "SN-trig-a", Some(csr(&f, "ta"))))
        .unwrap();
    let b = f
        .onboard
        .register(request(&key, "SN-trig-b", Some(csr(&f, "tb"))))
        .unwrap();
    let c = f
        .onboard
        .register(request(&key, "SN-trig-c", Some(csr(&f, "tc"))))
        .unwrap();
    f.onboard
        .revoke_device(&Actor::cli(), c.device.id, RevocationReason::KeyCompromise)
        .unwrap();

    assert_eq!(
        f.onboard
            .trigger_rotation(&Actor::cli(), Some(a.device.id))
            .unwrap(),
        1
    );
    // Queued already: refused, nothing changes.
    let err = f
        .onboard
        .trigger_rotation(&Actor::cli(), Some(a.device.id))
        .unwrap_err();
    assert!(matches!(err, CoreError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("already QUEUED"), "{err}");
    // A revoked device is not rotated.
    let err = f
        .onboard
        .trigger_rotation(&Actor::cli(), Some(c.device.id))
        .unwrap_err();
    assert!(matches!(err, CoreError::Conflict(_)), "{err:?}");
    assert_eq!(state(&f, c.device.id), None);
    // An unknown device.
    let err = f
        .onboard
        .trigger_rotation(&Actor::cli(), Some(DeviceId(uuid::Uuid::new_v4())))
        .unwrap_err();
    assert!(matches!(err, CoreError::NotFound { .. }), "{err:?}");

    // The whole fleet: only b is OK and in service.
    assert_eq!(f.onboard.trigger_rotation(&Actor::cli(), None).unwrap(), 1);
    assert_eq!(f.onboard.trigger_rotation(&Actor::cli(), None).unwrap(), 0);
    let status = f.onboard.rotation_status().unwrap();
    let queued = status
        .states
        .iter()
        .find(|s| s.state == RotationState::Queued)
        .unwrap();
    assert_eq!(queued.count, 2);
    let mut ids: Vec<_> = queued.devices.iter().map(|d| d.device_id).collect();
    ids.sort();
    let mut want = vec![a.device.id, b.device.id];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(
        status.states.iter().map(|s| s.state).collect::<Vec<_>>(),
        RotationState::ALL.to_vec()
    );
    // The fleet counts of the metrics see the same.
    let counts = f.onboard.fleet_counts().unwrap();
    assert!(counts.rotations_by_state.contains(&("QUEUED", 2)));

    // A PENDING device cannot be queued again; a timed-out one can.
    f.onboard.run_rotation_cycle().unwrap();
    let pending = if state(&f, a.device.id) == Some(RotationState::Pending) {
        a.device.id
    } else {
        b.device.id
    };
    let err = f
        .onboard
        .trigger_rotation(&Actor::cli(), Some(pending))
        .unwrap_err();
    assert!(err.to_string().contains("already PENDING"), "{err}");
    f.clock.advance(Duration::seconds(301));
    f.onboard.run_rotation_cycle().unwrap();
    assert_eq!(state(&f, pending), Some(RotationState::Timeout));
    assert_eq!(
        f.onboard
            .trigger_rotation(&Actor::cli(), Some(pending))
            .unwrap(),
        1
    );
    assert_eq!(state(&f, pending), Some(RotationState::Queued));
}

pub fn concurrent_cycles_never_exceed_max_in_flight(backend: TestBackend) {
    let f = fixture(backend, settings);
    let key = batch(&f, 20);
    for i in 0..6 {
        f.onboard
            .register(request(
                &key,
                &format!("SN-conc-{i}"),
                Some(csr(&f, &format!("c{i}"))),
            ))
            .unwrap();
    }
    assert_eq!(f.onboard.trigger_rotation(&Actor::cli(), None).unwrap(), 6);
    // A second Onboard on the same database: another CronJob pod.
    let other =
        Arc::new(Onboard::with_clock(f.onboard.settings().clone(), f.clock.clone()).unwrap());
    let mut started = 0;
    for round in 0..6 {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let barrier = barrier.clone();
                let onboard = if i == 0 {
                    Arc::new(
                        Onboard::with_clock(f.onboard.settings().clone(), f.clock.clone()).unwrap(),
                    )
                } else {
                    other.clone()
                };
                std::thread::spawn(move || {
                    barrier.wait();
                    onboard.run_rotation_cycle().unwrap()
                })
            })
            .collect();
        let summaries: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let round_started: u64 = summaries.iter().map(|s| s.started).sum();
        assert_eq!(round_started, 1, "round {round}: {summaries:?}");
        started += round_started;
        let pending =
            f.db.db
                .read(|tx| tx.count_rotations_in_state(RotationState::Pending))
                .unwrap();
        assert_eq!(pending, 1, "round {round}");
        f.clock.advance(Duration::seconds(301));
    }
    assert_eq!(started, 6);
    // Every device was started exactly once (6 rounds, 6 devices, no retries yet).
    let starts = f
        .onboard
        .audit_events(
            &AuditFilter {
                action: Some("rotation.start".into()),
                ..Default::default()
            },
            &PageRequest::first(100).unwrap(),
        )
        .unwrap()
        .items;
    let mut devices: Vec<_> = starts.iter().filter_map(|e| e.device_id).collect();
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), 6);
}

pub fn password_devices_and_devices_out_of_service_are_not_rotated(backend: TestBackend) {
    let f = fixture(backend, settings);
    let key = batch(&f, 10);
    let a = f
        .onboard
        .register(request(&key, "SN-out", Some(csr(&f, "out"))))
        .unwrap();
    let pw = f
        .onboard
        .register_device(
            &Actor::cli(),
            &onboard_core::NewDeviceRequest {
                name: "pw".into(),
                credential: Some("password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(pw.device.credential, CredentialKind::Password);
    // The fleet: the certificate device only.
    assert_eq!(f.onboard.trigger_rotation(&Actor::cli(), None).unwrap(), 1);
    assert_eq!(state(&f, pw.device.id), None);
    let err = f
        .onboard
        .trigger_rotation(&Actor::cli(), Some(pw.device.id))
        .unwrap_err();
    assert!(err.to_string().contains("password"), "{err}");
    assert_eq!(state(&f, pw.device.id), None);

    // Revoked while QUEUED by the fleet generation: it is no longer queued (it
    // never had a QUEUED record), the cycle starts nothing.
    f.onboard
        .revoke_device(&Actor::cli(), a.device.id, RevocationReason::KeyCompromise)
        .unwrap();
    let s = f.onboard.run_rotation_cycle().unwrap();
    assert_eq!((s.started, s.pending), (0, 0), "{s}");
    assert_eq!(state(&f, a.device.id), None);
    assert_eq!(
        audit_actions(&f, a.device.id),
        // (The fleet's queueing is one audit event without a device.)
        Vec::<(String, AuditOutcome)>::new()
    );
}

/// The benchmark of `docs/benchmarks.md` (ignored by default; run with
/// `scripts/test-services.sh cargo nextest run -p onboard-core --run-ignored only
/// a_million_devices`): one million generated device rows on PostgreSQL, then the
/// cycles a CronJob runs. It asserts what each cycle did; the times are printed.
pub fn a_million_devices_one_cycle_each(backend: TestBackend) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let n: i64 = std::env::var("ONBOARD_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let f = fixture(backend, settings);
    let mut conn = diesel::PgConnection::establish(&f.db.url).unwrap();
    conn.batch_execute(&format!(
        "INSERT INTO devices (id, serial, name, status, created_at, updated_at, credential) \
         SELECT gen_random_uuid()::text, 'SN-BENCH-' || g, 'bench', 'active', \
                TIMESTAMP '2026-11-01', TIMESTAMP '2026-11-01', 'certificate' \
         FROM generate_series(1, {n}) g; ANALYZE devices;"
    ))
    .unwrap();
    let timed = |what: &str| {
        let t = std::time::Instant::now();
        let s = f.onboard.run_rotation_cycle().unwrap();
        eprintln!("{what}: {:?} ({s})", t.elapsed());
        s
    };
    let s = timed("first cycle (baseline)");
    assert_eq!((s.generation, s.started), (None, 0));
    let s = timed("nothing due");
    assert_eq!((s.generation, s.started), (None, 0));
    f.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 30).unwrap());
    let s = timed("schedule due: queue the fleet, start one");
    assert_eq!((s.generation, s.started, s.pending), (Some(1), 1, 1));
    conn.batch_execute("ANALYZE rotations;").unwrap();
    f.clock.advance(Duration::seconds(60));
    let s = timed("within the deadline (one PENDING)");
    assert_eq!((s.timed_out, s.started, s.pending), (0, 0, 1));
    f.clock.advance(Duration::seconds(300));
    let s = timed("a timeout and the next start");
    assert_eq!((s.timed_out, s.started, s.pending), (1, 1, 1));
    // `rotation status` counts the queued devices with a scan of the fleet.
    let t = std::time::Instant::now();
    let status = f.onboard.rotation_status().unwrap();
    eprintln!("rotation status: {:?}", t.elapsed());
    let count = |state| {
        status
            .states
            .iter()
            .find(|s| s.state == state)
            .map(|s| s.count)
    };
    assert_eq!(count(RotationState::Queued), Some(n - 2));
    assert_eq!(count(RotationState::Timeout), Some(1));
    assert_eq!(count(RotationState::Pending), Some(1));
}
