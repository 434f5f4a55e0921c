//! ESP32 application images as ESP-IDF builds them (`idf.py build` writes
//! `build/<project>.bin`), checked the way the second-stage bootloader and
//! Espressif's `esptool image-info` read them:
//!
//! ```text
//! offset  size  field
//! 0       1     magic 0xE9
//! 1       1     segment count (1 to 16)
//! 2       1     SPI flash mode
//! 3       1     flash size (high nibble) and frequency (low nibble)
//! 4       4     entry point (little endian, as every field)
//! 8       1     WP pin
//! 9       3     SPI pin drive strengths
//! 12      2     chip id (0: ESP32, 2: ESP32-S2, 5: ESP32-C3, 9: ESP32-S3, ...)
//! 14      1     legacy minimum chip revision
//! 15      2     minimum chip revision (major * 100 + minor)
//! 17      2     maximum chip revision
//! 19      4     reserved
//! 23      1     hash_appended (0 or 1)
//! 24      ...   segments: load address (4), length (4), data (length bytes)
//!               padding so that the checksum byte is the last of a 16-byte block
//!         1     checksum: 0xEF XOR every byte of every segment's data
//!         32    SHA-256 of everything before it, when hash_appended is 1
//! ```
//!
//! An application (not a bootloader) starts its first segment (DROM, the
//! flash-mapped read-only data) with the 256-byte `esp_app_desc_t`: magic
//! 0xABCD5432, secure version, version, project name, compile time and date,
//! ESP-IDF version, the ELF file's SHA-256. [`AppImage::parse`] accepts only an
//! image whose every part checks out and says in its error which part does not.

use sha2::{Digest, Sha256};

#[cfg(feature = "test-support")]
pub mod testing;

/// The first byte of every ESP image.
pub const IMAGE_MAGIC: u8 = 0xE9;
/// The first word of `esp_app_desc_t`.
pub const APP_DESC_MAGIC: u32 = 0xABCD_5432;
/// The first byte of `esp_bootloader_desc_t`, which a bootloader image carries
/// instead of an application descriptor.
pub const BOOTLOADER_DESC_MAGIC: u8 = 0x50;
/// The most segments an image may have (the ROM loader's and esptool's limit).
pub const MAX_SEGMENTS: usize = 16;
/// The checksum's starting value.
pub const CHECKSUM_SEED: u8 = 0xEF;
/// The image header: 8 common bytes and the 16-byte extended header.
pub const HEADER_LEN: usize = 24;
/// Load address and length in front of each segment's data.
pub const SEGMENT_HEADER_LEN: usize = 8;
/// `sizeof(esp_app_desc_t)`.
pub const APP_DESC_LEN: usize = 256;
const DIGEST_LEN: usize = 32;

/// Why an image was refused. Every message names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the image is empty")]
    Empty,
    #[error("the image is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "wrong magic: the image starts with {found:#04x}, an ESP32 application image with 0xe9"
    )]
    WrongMagic { found: u8 },
    #[error("truncated image header: {len} bytes, the header takes {HEADER_LEN}")]
    TruncatedHeader { len: usize },
    #[error("bad segment count {count}: an image has 1 to {MAX_SEGMENTS} segments")]
    SegmentCount { count: u8 },
    #[error("bad hash_appended flag {value:#04x} in the image header: it must be 0 or 1")]
    HashFlag { value: u8 },
    #[error(
        "truncated segment {index}: its header at offset {offset} needs {SEGMENT_HEADER_LEN} bytes, {available} remain"
    )]
    TruncatedSegmentHeader {
        index: usize,
        offset: usize,
        available: usize,
    },
    #[error(
        "truncated segment {index}: it declares {declared} bytes at offset {offset}, {available} remain"
    )]
    TruncatedSegment {
        index: usize,
        offset: usize,
        declared: u32,
        available: usize,
    },
    #[error("segment {index} is {len} bytes long, not a multiple of 4")]
    UnalignedSegment { index: usize, len: u32 },
    #[error("truncated image: the checksum byte at offset {offset} is missing")]
    MissingChecksum { offset: usize },
    #[error(
        "checksum mismatch: the image stores {stored:#04x}, its segments give {computed:#04x}"
    )]
    ChecksumMismatch { stored: u8, computed: u8 },
    #[error(
        "truncated image: the appended SHA-256 at offset {offset} needs {DIGEST_LEN} bytes, {available} remain"
    )]
    MissingDigest { offset: usize, available: usize },
    #[error("SHA-256 mismatch: the appended digest is {stored}, the image's digest is {computed}")]
    DigestMismatch { stored: String, computed: String },
    #[error("{extra} unexpected bytes after the end of the image at offset {end}")]
    TrailingData { end: usize, extra: usize },
    #[error(
        "no application descriptor (esp_app_desc_t, magic 0xabcd5432) at the start of the first segment: this is a bootloader image, not an application"
    )]
    Bootloader,
    #[error(
        "no application descriptor (esp_app_desc_t, magic 0xabcd5432) at the start of the first segment: not an ESP-IDF application image"
    )]
    NoAppDescriptor,
    #[error("the application descriptor's {field} is not NUL-terminated printable UTF-8")]
    DescriptorText { field: &'static str },
}

/// One segment: where it loads and where its data lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub load_address: u32,
    /// Offset of the segment's data (after its 8-byte header) in the file.
    pub data_offset: usize,
    pub len: u32,
}

/// The application descriptor (`esp_app_desc_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDescriptor {
    pub secure_version: u32,
    /// `PROJECT_VER`: what the device reports as its firmware version.
    pub version: String,
    pub project_name: String,
    pub compile_time: String,
    pub compile_date: String,
    pub idf_version: String,
    /// SHA-256 of the ELF file the image was made from.
    pub elf_sha256: [u8; 32],
}

/// A valid ESP32 application image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppImage {
    /// The image's size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file: its identity in storage and its `ETag`.
    pub sha256: [u8; 32],
    pub chip_id: u16,
    pub entry_point: u32,
    pub segments: Vec<Segment>,
    pub checksum: u8,
    pub hash_appended: bool,
    pub app: AppDescriptor,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Lower-case hex, for digests in messages and storage names.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    s
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A NUL-terminated string field of the descriptor: the bytes before the first
/// NUL, which must be there, be UTF-8 and hold no control characters.
fn text(field: &'static str, raw: &[u8]) -> Result<String, ImageError> {
    let end = raw
        .iter()
        .position(|&b| b == 0)
        .ok_or(ImageError::DescriptorText { field })?;
    let s = std::str::from_utf8(&raw[..end]).map_err(|_| ImageError::DescriptorText { field })?;
    if s.chars().any(char::is_control) {
        return Err(ImageError::DescriptorText { field });
    }
    Ok(s.to_owned())
}

fn app_descriptor(first_segment: &[u8]) -> Result<AppDescriptor, ImageError> {
    if first_segment.len() < APP_DESC_LEN || le_u32(first_segment, 0) != APP_DESC_MAGIC {
        return Err(
            if first_segment.len() >= 80 && first_segment[0] == BOOTLOADER_DESC_MAGIC {
                ImageError::Bootloader
            } else {
                ImageError::NoAppDescriptor
            },
        );
    }
    let d = &first_segment[..APP_DESC_LEN];
    let mut elf_sha256 = [0u8; 32];
    elf_sha256.copy_from_slice(&d[144..176]);
    Ok(AppDescriptor {
        secure_version: le_u32(d, 4),
        version: text("version", &d[16..48])?,
        project_name: text("project name", &d[48..80])?,
        compile_time: text("compile time", &d[80..96])?,
        compile_date: text("compile date", &d[96..112])?,
        idf_version: text("ESP-IDF version", &d[112..144])?,
        elf_sha256,
    })
}

impl AppImage {
    /// Validates `data` as an ESP32 application image of at most `max_bytes`.
    pub fn parse(data: &[u8], max_bytes: u64) -> Result<AppImage, ImageError> {
        let size = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if data.is_empty() {
            return Err(ImageError::Empty);
        }
        if size > max_bytes {
            return Err(ImageError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        if data[0] != IMAGE_MAGIC {
            return Err(ImageError::WrongMagic { found: data[0] });
        }
        if data.len() < HEADER_LEN {
            return Err(ImageError::TruncatedHeader { len: data.len() });
        }
        let count = data[1];
        if count == 0 || usize::from(count) > MAX_SEGMENTS {
            return Err(ImageError::SegmentCount { count });
        }
        let hash_appended = match data[23] {
            0 => false,
            1 => true,
            value => return Err(ImageError::HashFlag { value }),
        };

        let mut at = HEADER_LEN;
        let mut segments = Vec::with_capacity(usize::from(count));
        let mut computed = CHECKSUM_SEED;
        for index in 0..usize::from(count) {
            let available = data.len() - at;
            if available < SEGMENT_HEADER_LEN {
                return Err(ImageError::TruncatedSegmentHeader {
                    index,
                    offset: at,
                    available,
                });
            }
            let load_address = le_u32(data, at);
            let len = le_u32(data, at + 4);
            let data_offset = at + SEGMENT_HEADER_LEN;
            let available = data.len() - data_offset;
            let end = usize::try_from(len)
                .ok()
                .filter(|&n| n <= available)
                .map(|n| data_offset + n)
                .ok_or(ImageError::TruncatedSegment {
                    index,
                    offset: data_offset,
                    declared: len,
                    available,
                })?;
            if len % 4 != 0 {
                return Err(ImageError::UnalignedSegment { index, len });
            }
            computed = data[data_offset..end].iter().fold(computed, |c, b| c ^ b);
            segments.push(Segment {
                load_address,
                data_offset,
                len,
            });
            at = end;
        }

        // The checksum is the last byte of the 16-byte block the segments end in.
        let checksum_at = at + (15 - at % 16);
        let Some(&stored) = data.get(checksum_at) else {
            return Err(ImageError::MissingChecksum {
                offset: checksum_at,
            });
        };
        if stored != computed {
            return Err(ImageError::ChecksumMismatch { stored, computed });
        }
        let mut end = checksum_at + 1;
        if hash_appended {
            let available = data.len() - end;
            if available < DIGEST_LEN {
                return Err(ImageError::MissingDigest {
                    offset: end,
                    available,
                });
            }
            let expected = sha256(&data[..end]);
            let appended = &data[end..end + DIGEST_LEN];
            if appended != expected {
                return Err(ImageError::DigestMismatch {
                    stored: hex(appended),
                    computed: hex(&expected),
                });
            }
            end += DIGEST_LEN;
        }
        if end != data.len() {
            return Err(ImageError::TrailingData {
                end,
                extra: data.len() - end,
            });
        }

        let first = segments[0];
        let first_data = &data[first.data_offset..first.data_offset + first.len as usize];
        let app = app_descriptor(first_data)?;
        Ok(AppImage {
            size,
            sha256: sha256(data),
            chip_id: le_u16(data, 12),
            entry_point: le_u32(data, 4),
            segments,
            checksum: stored,
            hash_appended,
            app,
        })
    }

    /// The file's SHA-256 in lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ImageBuilder;

    const LIMIT: u64 = 16 << 20;

    fn valid() -> Vec<u8> {
        ImageBuilder::app("1.4.2", "tempsensor", "v5.3.1").build()
    }

    #[test]
    fn a_built_image_parses_with_its_descriptor() {
        for hashed in [true, false] {
            let bytes = ImageBuilder::app("1.4.2", "tempsensor", "v5.3.1")
                .hash_appended(hashed)
                .build();
            let image = AppImage::parse(&bytes, LIMIT).unwrap();
            assert_eq!(image.app.version, "1.4.2");
            assert_eq!(image.app.project_name, "tempsensor");
            assert_eq!(image.app.idf_version, "v5.3.1");
            assert_eq!(image.hash_appended, hashed);
            assert_eq!(image.segments.len(), 3);
            assert_eq!(image.size, bytes.len() as u64);
            assert_eq!(image.sha256, sha256(&bytes));
            assert_eq!(image.sha256_hex().len(), 64);
        }
    }

    #[test]
    fn the_size_limit_is_checked_first() {
        let bytes = valid();
        let n = bytes.len() as u64;
        assert!(AppImage::parse(&bytes, n).is_ok());
        assert_eq!(
            AppImage::parse(&bytes, n - 1),
            Err(ImageError::TooLarge {
                size: n,
                limit: n - 1
            })
        );
        assert_eq!(AppImage::parse(&[], LIMIT), Err(ImageError::Empty));
    }

    #[test]
    fn header_errors_name_the_field() {
        let mut b = valid();
        b[0] = 0xE8;
        let e = AppImage::parse(&b, LIMIT).unwrap_err();
        assert_eq!(e, ImageError::WrongMagic { found: 0xE8 });
        assert!(e.to_string().contains("wrong magic"), "{e}");

        let b = valid();
        assert_eq!(
            AppImage::parse(&b[..10], LIMIT),
            Err(ImageError::TruncatedHeader { len: 10 })
        );

        for count in [0u8, 17, 255] {
            let mut b = valid();
            b[1] = count;
            assert_eq!(
                AppImage::parse(&b, LIMIT),
                Err(ImageError::SegmentCount { count })
            );
        }

        let mut b = valid();
        b[23] = 2;
        assert_eq!(
            AppImage::parse(&b, LIMIT),
            Err(ImageError::HashFlag { value: 2 })
        );
    }

    #[test]
    fn every_cut_of_a_valid_image_is_refused() {
        let b = valid();
        for len in 1..b.len() {
            assert!(AppImage::parse(&b[..len], LIMIT).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn truncated_segments_name_their_index() {
        let b = valid();
        let image = AppImage::parse(&b, LIMIT).unwrap();
        let second = image.segments[1];
        // Cut inside the second segment's data.
        let cut = second.data_offset + 4;
        match AppImage::parse(&b[..cut], LIMIT) {
            Err(ImageError::TruncatedSegment {
                index, declared, ..
            }) => {
                assert_eq!(index, 1);
                assert_eq!(declared, second.len);
            }
            other => panic!("{other:?}"),
        }
        // A length field larger than the file.
        let mut b2 = b.clone();
        b2[second.data_offset - 4..second.data_offset].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = AppImage::parse(&b2, LIMIT).unwrap_err();
        assert!(e.to_string().starts_with("truncated segment 1:"), "{e}");
        // Cut inside the third segment's header.
        let third = image.segments[2];
        match AppImage::parse(&b[..third.data_offset - 3], LIMIT) {
            Err(ImageError::TruncatedSegmentHeader { index: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_flipped_data_byte_breaks_the_checksum() {
        for hashed in [false, true] {
            let good = ImageBuilder::app("1.0", "p", "v5")
                .hash_appended(hashed)
                .build();
            let image = AppImage::parse(&good, LIMIT).unwrap();
            let mut b = good.clone();
            b[image.segments[2].data_offset] ^= 0x01;
            match AppImage::parse(&b, LIMIT) {
                Err(ImageError::ChecksumMismatch { stored, computed }) => {
                    assert_eq!(stored ^ computed, 0x01)
                }
                other => panic!("{other:?}"),
            }
        }
        let b = ImageBuilder::app("1.0", "p", "v5")
            .corrupt_checksum()
            .build();
        let e = AppImage::parse(&b, LIMIT).unwrap_err();
        assert!(e.to_string().starts_with("checksum mismatch"), "{e}");
    }

    #[test]
    fn the_appended_digest_catches_what_the_checksum_cannot() {
        let good = valid();
        let image = AppImage::parse(&good, LIMIT).unwrap();
        // The same bit flipped in two bytes leaves the XOR checksum as it was.
        let mut b = good.clone();
        let at = image.segments[2].data_offset;
        b[at] ^= 0x10;
        b[at + 1] ^= 0x10;
        assert!(matches!(
            AppImage::parse(&b, LIMIT),
            Err(ImageError::DigestMismatch { .. })
        ));
        // A wrong digest over a correct image.
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 0xFF;
        let e = AppImage::parse(&b, LIMIT).unwrap_err();
        assert!(e.to_string().starts_with("SHA-256 mismatch"), "{e}");
    }

    #[test]
    fn segment_lengths_are_word_aligned() {
        let b = ImageBuilder::app("1.0", "p", "v5")
            .segment(0x3FFB_0000, vec![0u8; 6])
            .build();
        assert_eq!(
            AppImage::parse(&b, LIMIT),
            Err(ImageError::UnalignedSegment { index: 3, len: 6 })
        );
    }

    #[test]
    fn bytes_after_the_image_are_refused() {
        let mut b = valid();
        let end = b.len();
        b.extend_from_slice(&[0xFF; 5]);
        assert_eq!(
            AppImage::parse(&b, LIMIT),
            Err(ImageError::TrailingData { end, extra: 5 })
        );
    }

    #[test]
    fn a_bootloader_or_a_foreign_first_segment_has_no_descriptor() {
        let b = ImageBuilder::bootloader("v5.3.1").build();
        let e = AppImage::parse(&b, LIMIT).unwrap_err();
        assert_eq!(e, ImageError::Bootloader);
        assert!(e.to_string().contains("bootloader image"), "{e}");

        let b = ImageBuilder::app("1.0", "p", "v5")
            .without_descriptor()
            .build();
        assert_eq!(AppImage::parse(&b, LIMIT), Err(ImageError::NoAppDescriptor));
    }

    #[test]
    fn descriptor_strings_must_be_terminated_text() {
        // 32 characters leave no room for the NUL.
        let b = ImageBuilder::app(&"v".repeat(32), "p", "v5").build();
        assert_eq!(
            AppImage::parse(&b, LIMIT),
            Err(ImageError::DescriptorText { field: "version" })
        );
        let b = ImageBuilder::app("1.0", "bad\u{7}bell", "v5").build();
        assert_eq!(
            AppImage::parse(&b, LIMIT),
            Err(ImageError::DescriptorText {
                field: "project name"
            })
        );
    }
}
