//! The registration body (`POST /public/v1/register`) through the checks that
//! core runs on it before any lookup, in the same order: the serial (trimmed),
//! the model code, the firmware version, the metadata object and the CSR
//! (trimmed, at most 16 KiB, then `check_csr`). None may panic; what they
//! accept has the documented shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onboard_domain::{
    check_firmware_version, check_json_object, ModelCode, Serial, MAX_METADATA_BYTES,
};
use serde_json::{json, Value};

/// The largest CSR a registration takes (core's `MAX_CSR_BYTES`).
const MAX_CSR_BYTES: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let serial = text("serial").or_else(|| text("device_id")).unwrap_or("");
    if let Ok(s) = Serial::parse(serial.trim()) {
        let s = s.as_str();
        assert!((1..=64).contains(&s.len()), "{s:?}");
        assert!(s.starts_with(|c: char| c.is_ascii_alphanumeric()), "{s:?}");
        assert!(
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c)),
            "{s:?}"
        );
        assert_eq!(Serial::parse(s).as_ref().map(Serial::as_str), Ok(s));
    }
    if let Some(model) = text("model") {
        if let Ok(m) = ModelCode::parse(model) {
            assert!(m
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c)));
        }
    }
    let firmware = text("firmware_version").unwrap_or("");
    if check_firmware_version(firmware, true).is_ok() {
        assert!(firmware.len() <= 64 && !firmware.contains(' '), "{firmware:?}");
    }
    let metadata = body.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if check_json_object("metadata", &metadata, MAX_METADATA_BYTES).is_ok() {
        assert!(metadata.is_object());
        assert!(metadata.to_string().len() <= MAX_METADATA_BYTES);
    }
    if let Some(csr) = text("csr").map(str::trim) {
        if !csr.is_empty() && csr.len() <= MAX_CSR_BYTES {
            let first = onboard_pki::check_csr(csr.as_bytes());
            assert_eq!(first.ok(), onboard_pki::check_csr(csr.as_bytes()).ok());
        }
    }
});
