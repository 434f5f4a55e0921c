//! Multi-row writes of a bulk import: more rows than one statement takes, read
//! back one by one; a taken serial fails the batch as a whole.

use super::*;

pub fn batches_insert_in_order_and_fail_as_a_whole(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    // Over two statements' worth (250 rows each).
    let n = 600;
    let at = |i: usize| t0() + Duration::milliseconds(i as i64);
    let list: Vec<NewDevice> = (0..n)
        .map(|i| new_device(&format!("SN-B{i:04}"), at(i)))
        .collect();
    let stored = tx(&t.db, |c| c.insert_devices(&list));
    assert_eq!(stored.len(), n);
    for (d, nd) in stored.iter().zip(&list) {
        assert_eq!(d.id, nd.id);
    }
    assert_eq!(tx(&t.db, |c| c.device(list[599].id)), stored[599]);
    let certs: Vec<NewCertificate> = stored
        .iter()
        .enumerate()
        .map(|(i, d)| new_cert(d.id, &format!("{:04x}", i + 1), at(i)))
        .collect();
    let certs_stored = tx(&t.db, |c| c.insert_certificates(&certs));
    assert_eq!(certs_stored.len(), n);
    assert_eq!(
        tx(&t.db, |c| c.certificate_by_serial(&certs[300].serial)),
        Some(certs_stored[300].clone())
    );
    let events: Vec<AuditEvent> = stored
        .iter()
        .enumerate()
        .map(|(i, d)| audit("device.create", AuditOutcome::Success, Some(d.id), at(i)))
        .collect();
    tx(&t.db, |c| c.append_audits(&events));
    let page = tx(&t.db, |c| {
        c.list_audit(
            &AuditFilter {
                device_id: Some(stored[42].id),
                ..Default::default()
            },
            &PageRequest::first(10).unwrap(),
        )
    });
    assert_eq!(page.items, vec![events[42].clone()]);
    let effects: Vec<(Uuid, Effect)> = stored
        .iter()
        .enumerate()
        .map(|(i, d)| (id_at(at(i)), Effect::BrokerDevice(d.id)))
        .collect();
    tx(&t.db, |c| c.enqueue_effects(&effects, t0(), t0()));
    assert_eq!(
        tx(&t.db, |c| c.pending_effects_summary()),
        (n as i64, Some(t0()))
    );

    // Which serials exist: some of both kinds, across statements.
    let asked: Vec<Serial> = [5, 260, 599, 600, 700]
        .iter()
        .map(|i| Serial::parse(&format!("SN-B{i:04}")).unwrap())
        .collect();
    let mut found = tx(&t.db, |c| c.existing_serials(&asked));
    found.sort();
    assert_eq!(found, asked[..3].to_vec());
    assert_eq!(tx(&t.db, |c| c.existing_serials(&[])), vec![]);

    // One taken serial among new ones: nothing of the batch is stored.
    let mut again: Vec<NewDevice> = (600..610)
        .map(|i| new_device(&format!("SN-B{i:04}"), at(i)))
        .collect();
    again.push(new_device("SN-B0003", at(999)));
    let err = t.db.transaction(|c| c.insert_devices(&again)).unwrap_err();
    assert!(matches!(err, RepoError::Conflict { .. }), "{err:?}");
    assert_eq!(tx(&t.db, |c| c.device_by_serial(&again[0].serial)), None);
}
