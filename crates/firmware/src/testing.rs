//! Images built to the ESP-IDF format for tests: header, segments, application
//! (or bootloader) descriptor, checksum and the optional appended SHA-256, laid
//! out as `esptool elf2image` writes them for an ESP32. Espressif's
//! `esptool image-info` reads them as valid images.

use crate::{sha256, APP_DESC_MAGIC, BOOTLOADER_DESC_MAGIC, CHECKSUM_SEED, IMAGE_MAGIC};

/// ESP32 address ranges (esptool's `ESP32ROM.MEMORY_MAP`).
pub const DROM: u32 = 0x3F40_0020;
pub const DRAM: u32 = 0x3FFB_0000;
pub const IRAM: u32 = 0x4008_0000;

/// Deterministic filler bytes.
pub fn filler(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn put_str(out: &mut [u8], s: &str) {
    let n = s.len().min(out.len());
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// A 256-byte `esp_app_desc_t`.
pub fn app_descriptor(version: &str, project: &str, idf: &str) -> Vec<u8> {
    let mut d = vec![0u8; crate::APP_DESC_LEN];
    d[0..4].copy_from_slice(&APP_DESC_MAGIC.to_le_bytes());
    d[4..8].copy_from_slice(&1u32.to_le_bytes()); // secure_version
    put_str(&mut d[16..48], version);
    put_str(&mut d[48..80], project);
    put_str(&mut d[80..96], "08:00:00");
    put_str(&mut d[96..112], "Dec  2 2026");
    put_str(&mut d[112..144], idf);
    d[144..176].copy_from_slice(&sha256(project.as_bytes())); // "the ELF's" digest
    d[176..178].copy_from_slice(&0u16.to_le_bytes()); // min eFuse block revision
    d[178..180].copy_from_slice(&99u16.to_le_bytes()); // max eFuse block revision
    d[180] = 16; // MMU page size 2^16 = 64 KB
    d
}

/// An 80-byte `esp_bootloader_desc_t`.
pub fn bootloader_descriptor(idf: &str) -> Vec<u8> {
    let mut d = vec![0u8; 80];
    d[0] = BOOTLOADER_DESC_MAGIC;
    d[4..8].copy_from_slice(&1u32.to_le_bytes());
    put_str(&mut d[8..40], idf);
    put_str(&mut d[40..64], "Dec  2 2026 08:00:00");
    d
}

#[derive(Debug, Clone)]
pub struct ImageBuilder {
    chip_id: u16,
    entry: u32,
    segments: Vec<(u32, Vec<u8>)>,
    hash_appended: bool,
    corrupt_checksum: bool,
}

impl ImageBuilder {
    /// An ESP32 application: DROM (descriptor and read-only data), DRAM and IRAM
    /// segments, SHA-256 appended (as ESP-IDF builds do by default).
    pub fn app(version: &str, project: &str, idf: &str) -> Self {
        let mut drom = app_descriptor(version, project, idf);
        drom.extend(filler(96, 1));
        Self {
            chip_id: 0,
            entry: IRAM + 0x404,
            segments: vec![(DROM, drom), (DRAM, filler(32, 2)), (IRAM, filler(64, 3))],
            hash_appended: true,
            corrupt_checksum: false,
        }
    }

    /// A second-stage bootloader: its first segment (DRAM) starts with
    /// `esp_bootloader_desc_t`, and it has no application descriptor.
    pub fn bootloader(idf: &str) -> Self {
        let mut dram = bootloader_descriptor(idf);
        dram.extend(filler(48, 4));
        Self {
            chip_id: 0,
            entry: 0x4008_0400,
            segments: vec![(0x3FFF_0030, dram), (0x4007_8000, filler(128, 5))],
            hash_appended: true,
            corrupt_checksum: false,
        }
    }

    pub fn hash_appended(mut self, on: bool) -> Self {
        self.hash_appended = on;
        self
    }

    /// Appends a segment.
    pub fn segment(mut self, load_address: u32, data: Vec<u8>) -> Self {
        self.segments.push((load_address, data));
        self
    }

    /// Makes the IRAM segment `len` bytes (a multiple of 4), for large images.
    pub fn code_size(mut self, len: usize) -> Self {
        if let Some(seg) = self.segments.iter_mut().find(|(a, _)| *a == IRAM) {
            seg.1 = filler(len, 3);
        }
        self
    }

    /// Clears the descriptor's magic word.
    pub fn without_descriptor(mut self) -> Self {
        if let Some((_, data)) = self.segments.first_mut() {
            data[..4].fill(0);
        }
        self
    }

    /// Stores a wrong checksum (the appended digest still matches the bytes).
    pub fn corrupt_checksum(mut self) -> Self {
        self.corrupt_checksum = true;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        // Magic, segment count, DIO flash mode, 4 MB at 40 MHz.
        let mut out = vec![IMAGE_MAGIC, self.segments.len() as u8, 2, 0x20];
        out.extend_from_slice(&self.entry.to_le_bytes());
        out.push(0xEE); // WP pin disabled
        out.extend_from_slice(&[0, 0, 0]); // drive strengths
        out.extend_from_slice(&self.chip_id.to_le_bytes());
        out.push(0); // legacy min revision
        out.extend_from_slice(&0u16.to_le_bytes()); // min revision v0.0
        out.extend_from_slice(&399u16.to_le_bytes()); // max revision v3.99
        out.extend_from_slice(&[0; 4]);
        out.push(u8::from(self.hash_appended));
        let mut checksum = CHECKSUM_SEED;
        for (addr, data) in &self.segments {
            out.extend_from_slice(&addr.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
            checksum = data.iter().fold(checksum, |c, b| c ^ b);
        }
        while out.len() % 16 != 15 {
            out.push(0);
        }
        out.push(if self.corrupt_checksum {
            checksum ^ 0x5A
        } else {
            checksum
        });
        if self.hash_appended {
            let digest = sha256(&out);
            out.extend_from_slice(&digest);
        }
        out
    }
}
