//! Model firmware through the use cases: stored by content hash under assets.dir,
//! recorded on the model with an audit event; a rejected upload leaves nothing.

use onboard_core::domain::{AuditFilter, PageRequest};
use onboard_core::{Actor, CoreError, ModelRequest};
use onboard_firmware::testing::ImageBuilder;

use super::{fixture, TestBackend};

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn an_upload_is_stored_by_hash_and_shown_on_the_model(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let ops = Actor::admin("ops", None);
    f.onboard
        .create_model(&ops, "tempsensor", &ModelRequest::default())
        .unwrap();
    assert_eq!(f.onboard.firmware_info("tempsensor").unwrap(), None);
    let err = f.onboard.model_firmware("tempsensor").unwrap_err();
    assert!(matches!(err, CoreError::NotFound { .. }), "{err:?}");

    let image = ImageBuilder::app("1.4.2", "tempsensor", "v5.3.1").build();
    let path = f.dir.path().join("upload.bin");
    std::fs::write(&path, &image).unwrap();
    let now = onboard_core::domain::Clock::now(f.clock.as_ref());
    let fw = f
        .onboard
        .upload_firmware_file(&ops, "tempsensor", &path)
        .unwrap();
    assert_eq!(fw.version, "1.4.2");
    assert_eq!(fw.project, "tempsensor");
    assert_eq!(fw.idf_version, "v5.3.1");
    assert_eq!(fw.size, image.len() as u64);
    assert_eq!(fw.uploaded_at, now);
    let digest = onboard_firmware::hex(&onboard_firmware::sha256(&image));
    assert_eq!(fw.sha256.as_str(), digest);
    let dir = f.onboard.firmware_dir();
    assert_eq!(dir, f.dir.path().join("assets/firmware"));
    assert_eq!(files(&dir), [format!("{digest}.bin")]);
    assert_eq!(
        std::fs::read(dir.join(format!("{digest}.bin"))).unwrap(),
        image
    );
    assert_eq!(
        f.onboard.firmware_info("tempsensor").unwrap(),
        Some(fw.clone())
    );

    let mut served = Vec::new();
    let mut opened = f.onboard.model_firmware("tempsensor").unwrap();
    std::io::Read::read_to_end(&mut opened.file, &mut served).unwrap();
    assert_eq!(served, image);
    assert_eq!(opened.firmware, fw);

    // A new version replaces it on the model; the audit says what it replaced.
    let v2 = ImageBuilder::app("1.5.0", "tempsensor", "v5.3.1").build();
    std::fs::write(&path, &v2).unwrap();
    let fw2 = f
        .onboard
        .upload_firmware_file(&ops, "tempsensor", &path)
        .unwrap();
    assert_eq!(fw2.version, "1.5.0");
    assert_eq!(
        files(&dir).len(),
        2,
        "the image the model no longer points at stays on disk"
    );
    assert_eq!(f.onboard.firmware_of_models().unwrap(), vec![fw2.clone()]);
    let audit = f
        .onboard
        .audit_events(
            &AuditFilter {
                action: Some("model.firmware.upload".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .unwrap()
        .items;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].actor, "admin:ops");
    assert_eq!(audit[0].details["version"], "1.5.0");
    assert_eq!(audit[0].details["previous_version"], "1.4.2");
    assert_eq!(audit[0].details["previous_sha256"], digest);
    assert_eq!(audit[0].details["sha256"], fw2.sha256.as_str());
}

pub fn rejected_uploads_name_the_problem_and_leave_nothing(backend: TestBackend) {
    let f = fixture(backend, |s| s.assets.max_firmware_bytes = 64 * 1024);
    let ops = Actor::admin("ops", None);
    f.onboard
        .create_model(&ops, "tempsensor", &ModelRequest::default())
        .unwrap();
    let good = ImageBuilder::app("1.0.0", "tempsensor", "v5.3.1").build();
    let path = f.dir.path().join("upload.bin");
    std::fs::write(&path, &good).unwrap();
    let fw = f
        .onboard
        .upload_firmware_file(&ops, "tempsensor", &path)
        .unwrap();
    let dir = f.onboard.firmware_dir();
    let before = files(&dir);

    let mut bad_magic = good.clone();
    bad_magic[0] = 0;
    let mut bad_digest = good.clone();
    let last = bad_digest.len() - 1;
    bad_digest[last] ^= 1;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bad_magic, "wrong magic"),
        (good[..good.len() - 40].to_vec(), "truncated"),
        (
            ImageBuilder::app("2.0.0", "t", "v5")
                .corrupt_checksum()
                .build(),
            "checksum mismatch",
        ),
        (bad_digest, "SHA-256 mismatch"),
        (
            ImageBuilder::bootloader("v5.3.1").build(),
            "bootloader image",
        ),
        (ImageBuilder::app("2.0 beta", "t", "v5").build(), "version"),
        (Vec::new(), "empty"),
    ];
    for (bytes, expected) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = f
            .onboard
            .upload_firmware_file(&ops, "tempsensor", &path)
            .unwrap_err();
        assert!(
            matches!(err, CoreError::InvalidFirmware(_) | CoreError::Invalid(_)),
            "{expected}: {err:?}"
        );
        assert!(err.to_string().contains(expected), "{expected}: {err}");
        assert_eq!(files(&dir), before, "{expected}: no file left");
        assert_eq!(
            f.onboard.firmware_info("tempsensor").unwrap(),
            Some(fw.clone()),
            "{expected}: the model keeps its firmware"
        );
    }

    // Larger than assets.max_firmware_bytes: cut while reading.
    let big = ImageBuilder::app("3.0.0", "t", "v5")
        .code_size(128 * 1024)
        .build();
    std::fs::write(&path, &big).unwrap();
    let err = f
        .onboard
        .upload_firmware_file(&ops, "tempsensor", &path)
        .unwrap_err();
    assert!(
        matches!(err, CoreError::TooLarge { limit: 65536, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("assets.max_firmware_bytes"),
        "{err}"
    );
    assert_eq!(files(&dir), before);

    // An unknown model: not found, whatever the image.
    std::fs::write(&path, &good).unwrap();
    for code in ["nope", "../etc"] {
        let err = f
            .onboard
            .upload_firmware_file(&ops, code, &path)
            .unwrap_err();
        assert!(matches!(err, CoreError::NotFound { .. }), "{err:?}");
    }
    assert_eq!(files(&dir), before);
    let audit = f
        .onboard
        .audit_events(
            &AuditFilter {
                action: Some("model.firmware.upload".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .unwrap()
        .items;
    assert_eq!(audit.len(), 1, "only the accepted upload is recorded");
}
