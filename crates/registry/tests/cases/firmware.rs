//! A model's firmware record: set, replaced, listed, gone with its model.

use super::*;

fn firmware(code: &str, version: &str, digest: char, at: DateTime<Utc>) -> ModelFirmware {
    ModelFirmware {
        model: ModelCode::parse(code).unwrap(),
        version: version.into(),
        sha256: Sha256Digest::parse(&digest.to_string().repeat(64)).unwrap(),
        size: 5 << 30, // beyond 32 bits: the column is 64-bit on both backends
        project: "tempsensor".into(),
        idf_version: "v5.3.1".into(),
        uploaded_at: at,
    }
}

pub fn model_firmware_is_set_replaced_and_cascades(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let code = ModelCode::parse("tempsensor").unwrap();
    // No model: nothing to attach to.
    let err =
        t.db.transaction(|c| c.set_model_firmware(&firmware("tempsensor", "1.0", 'a', t0())))
            .unwrap_err();
    assert!(matches!(err, RepoError::NotFound { .. }), "{err:?}");

    tx(&t.db, |c| c.insert_model(&model("tempsensor", t0())));
    tx(&t.db, |c| c.insert_model(&model("aircon", t0())));
    assert_eq!(tx(&t.db, |c| c.model_firmware(&code)), None);

    let first = firmware("tempsensor", "1.0", 'a', t0());
    tx(&t.db, |c| c.set_model_firmware(&first));
    assert_eq!(tx(&t.db, |c| c.model_firmware(&code)), Some(first));
    let second = firmware("tempsensor", "1.1", 'b', t0() + Duration::hours(1));
    tx(&t.db, |c| c.set_model_firmware(&second));
    assert_eq!(tx(&t.db, |c| c.model_firmware(&code)), Some(second.clone()));

    let other = firmware("aircon", "3.0", 'c', t0());
    tx(&t.db, |c| c.set_model_firmware(&other));
    assert_eq!(tx(&t.db, |c| c.list_model_firmware()), vec![other, second]);

    tx(&t.db, |c| c.delete_model(&code));
    let left: Vec<_> = tx(&t.db, |c| c.list_model_firmware())
        .into_iter()
        .map(|f| f.model.to_string())
        .collect();
    assert_eq!(left, ["aircon"]);
}
