//! The ESP32 image parser on arbitrary bytes: it must never panic, and whatever
//! it accepts must be consistent with the bytes it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onboard_firmware::{sha256, AppImage, APP_DESC_LEN, HEADER_LEN, IMAGE_MAGIC};

fuzz_target!(|data: &[u8]| {
    let Ok(image) = AppImage::parse(data, 16 << 20) else {
        return;
    };
    assert_eq!(data[0], IMAGE_MAGIC);
    assert_eq!(image.size, data.len() as u64);
    assert_eq!(image.sha256, sha256(data));
    assert!(!image.segments.is_empty() && image.segments.len() <= 16);
    let mut at = HEADER_LEN;
    for s in &image.segments {
        assert_eq!(s.data_offset, at + 8);
        at = s.data_offset + s.len as usize;
        assert!(at <= data.len());
    }
    assert!(image.segments[0].len as usize >= APP_DESC_LEN);
    // Parsing is a function of the bytes.
    assert_eq!(AppImage::parse(data, 16 << 20).as_ref(), Ok(&image));
});
