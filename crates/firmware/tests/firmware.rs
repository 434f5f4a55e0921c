//! Our parser against Espressif's: every image the tests build is read by
//! `esptool image-info` (PyPI `esptool`, on PATH through scripts/test-services.sh)
//! too. Valid images must be valid for esptool with the same version, project and
//! ESP-IDF version; each kind of damage we refuse is one esptool reports as well.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use onboard_firmware::testing::ImageBuilder;
use onboard_firmware::{AppImage, ImageError};

const LIMIT: u64 = 16 << 20;

struct Esptool {
    ok: bool,
    out: String,
}

impl Esptool {
    /// The value of the first `Label: value` line.
    fn field(&self, label: &str) -> Option<&str> {
        let prefix = format!("{label}: ");
        self.out
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
    }
}

fn esptool_image_info(image: &[u8]) -> Esptool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.bin");
    std::fs::write(&path, image).unwrap();
    let out = Command::new("esptool")
        .arg("image-info")
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .expect("esptool on PATH: run the tests through scripts/test-services.sh");
    Esptool {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

#[test]
fn esptool_reads_our_valid_images_as_we_do() {
    let cases = [
        ImageBuilder::app("1.4.2", "tempsensor", "v5.3.1"),
        ImageBuilder::app(
            "v2.0.0-rc1-3-gabc1234",
            "gateway_fw",
            "v5.4-dev-123-g0a1b2c3",
        )
        .hash_appended(false),
        ImageBuilder::app("7", "big", "v4.4.8").code_size(1 << 20),
    ];
    for builder in cases {
        let bytes = builder.build();
        let ours = AppImage::parse(&bytes, LIMIT).unwrap();
        let theirs = esptool_image_info(&bytes);
        assert!(theirs.ok, "{}", theirs.out);
        assert_eq!(
            theirs.field("Project name"),
            Some(ours.app.project_name.as_str()),
            "{}",
            theirs.out
        );
        assert_eq!(
            theirs.field("App version"),
            Some(ours.app.version.as_str()),
            "{}",
            theirs.out
        );
        assert_eq!(
            theirs.field("ESP-IDF"),
            Some(ours.app.idf_version.as_str()),
            "{}",
            theirs.out
        );
        assert_eq!(
            theirs.field("Segments"),
            Some(ours.segments.len().to_string().as_str()),
            "{}",
            theirs.out
        );
        assert_eq!(
            theirs.field("Image size"),
            Some(format!("{} bytes", ours.size).as_str())
        );
        let checksum = theirs.field("Checksum").unwrap();
        assert_eq!(
            checksum,
            format!("{:#04x} (valid)", ours.checksum),
            "{}",
            theirs.out
        );
        if ours.hash_appended {
            let digest = theirs.field("Validation hash").unwrap();
            assert!(digest.ends_with("(valid)"), "{}", theirs.out);
        } else {
            assert!(theirs.field("Validation hash").is_none(), "{}", theirs.out);
        }
    }
}

#[test]
fn a_corrupted_checksum_is_refused_by_us_and_flagged_by_esptool() {
    let bytes = ImageBuilder::app("1.0.0", "p", "v5.3")
        .corrupt_checksum()
        .build();
    let e = AppImage::parse(&bytes, LIMIT).unwrap_err();
    let ImageError::ChecksumMismatch { stored, computed } = e else {
        panic!("{e:?}")
    };
    let theirs = esptool_image_info(&bytes);
    assert_eq!(
        theirs.field("Checksum"),
        Some(format!("{stored:#04x} (invalid - calculated {computed:#04x})").as_str()),
        "{}",
        theirs.out
    );
}

#[test]
fn a_bad_appended_sha256_is_refused_by_us_and_flagged_by_esptool() {
    let mut bytes = ImageBuilder::app("1.0.0", "p", "v5.3").build();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let e = AppImage::parse(&bytes, LIMIT).unwrap_err();
    let ImageError::DigestMismatch { computed, .. } = &e else {
        panic!("{e:?}")
    };
    let theirs = esptool_image_info(&bytes);
    assert_eq!(
        theirs.field("Validation hash"),
        Some(format!("{computed} (invalid)").as_str()),
        "{}",
        theirs.out
    );
}

#[test]
fn a_wrong_magic_is_refused_by_both() {
    let mut bytes = ImageBuilder::app("1.0.0", "p", "v5.3").build();
    bytes[0] = 0x7F;
    let e = AppImage::parse(&bytes, LIMIT).unwrap_err();
    assert_eq!(e, ImageError::WrongMagic { found: 0x7F });
    let theirs = esptool_image_info(&bytes);
    assert!(!theirs.ok, "{}", theirs.out);
    assert!(
        theirs.out.contains("invalid magic number: 0x7f"),
        "{}",
        theirs.out
    );
}

#[test]
fn truncated_segments_are_refused_by_both() {
    let bytes = ImageBuilder::app("1.0.0", "p", "v5.3").build();
    let image = AppImage::parse(&bytes, LIMIT).unwrap();
    let cut = &bytes[..image.segments[2].data_offset + 8];
    let e = AppImage::parse(cut, LIMIT).unwrap_err();
    assert!(
        matches!(e, ImageError::TruncatedSegment { index: 2, .. }),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("truncated segment 2"), "{e}");
    let theirs = esptool_image_info(cut);
    assert!(!theirs.ok, "{}", theirs.out);
    assert!(
        theirs.out.contains("End of file reading segment"),
        "{}",
        theirs.out
    );
}

#[test]
fn a_bootloader_image_is_valid_for_esptool_but_not_an_application() {
    let bytes = ImageBuilder::bootloader("v5.3.1").build();
    let theirs = esptool_image_info(&bytes);
    assert!(theirs.ok, "{}", theirs.out);
    assert!(
        theirs.out.contains("Bootloader Information"),
        "{}",
        theirs.out
    );
    assert!(
        !theirs.out.contains("Application Information"),
        "{}",
        theirs.out
    );
    assert_eq!(AppImage::parse(&bytes, LIMIT), Err(ImageError::Bootloader));
}

#[test]
fn an_oversized_image_is_refused_before_parsing() {
    let bytes = ImageBuilder::app("1.0.0", "p", "v5.3")
        .code_size(64 << 10)
        .build();
    let limit = 32 << 10;
    let e = AppImage::parse(&bytes, limit).unwrap_err();
    assert_eq!(
        e,
        ImageError::TooLarge {
            size: bytes.len() as u64,
            limit
        }
    );
    assert!(
        esptool_image_info(&bytes).ok,
        "valid, only too large for the limit"
    );
}

#[test]
fn the_fuzz_seeds_are_the_images_the_builder_makes() {
    let seeds =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/firmware_image");
    let read = |name: &str| std::fs::read(seeds.join(name)).unwrap();
    assert_eq!(
        read("app.bin"),
        ImageBuilder::app("1.4.2", "tempsensor", "v5.3.1").build()
    );
    assert_eq!(
        read("app-unhashed.bin"),
        ImageBuilder::app("2.0", "gw", "v5.4")
            .hash_appended(false)
            .build()
    );
    assert_eq!(
        read("bootloader.bin"),
        ImageBuilder::bootloader("v5.3.1").build()
    );
    assert!(AppImage::parse(&read("app.bin"), LIMIT).is_ok());
}
