//! A small ZIP writer for credential bundles (PKWARE APPNOTE 6.3: local headers,
//! central directory, end record; no ZIP64, no data descriptors), with entries
//! stored, deflated, or stored and encrypted with WinZip AES-256 (AE-2, see
//! `winzip`). Sizes and CRCs are known before each header is written, since every
//! entry is in memory.

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::error::PkiError;
use crate::winzip;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL: u32 = 0x0605_4b50;
const STORED: u16 = 0;
const DEFLATED: u16 = 8;
/// The method an AES entry declares; its real one is in the AES extra field.
const AES: u16 = 99;
const AES_EXTRA_ID: u16 = 0x9901;
/// AE-2: the CRC is left 0 (the authentication code checks the data instead, and
/// a CRC of the plaintext would tell something about it).
const AE_2: u16 = 2;
const AES_256: u8 = 3;
/// "Made by" Unix (3), so the high half of the external attributes is the mode.
const MADE_BY_UNIX: u16 = 3 << 8;
const S_IFREG: u32 = 0o100_000;

/// An entry's data, compressed (or not) and encrypted (or not), as it goes into
/// the archive. A public entry that many archives share (the CA chain) is
/// prepared once and reused.
#[derive(Debug, Clone)]
pub struct EntryData {
    method: u16,
    crc: u32,
    size: u32,
    data: Vec<u8>,
    /// The AES extra field's real method, when encrypted.
    aes_method: Option<u16>,
}

fn too_big() -> PkiError {
    PkiError::Bundle("a bundle entry must be under 4 GiB".into())
}

impl EntryData {
    /// Deflated, in clear.
    pub fn deflated(plain: &[u8]) -> Result<Self, PkiError> {
        Ok(Self {
            method: DEFLATED,
            crc: crc32fast::hash(plain),
            size: u32::try_from(plain.len()).map_err(|_| too_big())?,
            data: deflate(plain)?,
            aes_method: None,
        })
    }

    /// Stored (not compressed) and encrypted with AES-256 under `password`, with a
    /// salt of its own.
    pub fn encrypted(plain: &[u8], password: &[u8]) -> Result<Self, PkiError> {
        Ok(Self {
            method: AES,
            crc: 0,
            size: u32::try_from(plain.len()).map_err(|_| too_big())?,
            data: winzip::encrypt(password, plain)?,
            aes_method: Some(STORED),
        })
    }

    fn version_needed(&self) -> u16 {
        // 5.1 for AES (as WinZip writes it), 2.0 for deflate, 1.0 for stored.
        match (self.aes_method, self.method) {
            (Some(_), _) => 51,
            (None, DEFLATED) => 20,
            _ => 10,
        }
    }

    fn flags(&self) -> u16 {
        u16::from(self.aes_method.is_some())
    }

    fn extra(&self) -> Vec<u8> {
        match self.aes_method {
            Some(method) => {
                let mut e = Vec::with_capacity(11);
                put16(&mut e, AES_EXTRA_ID);
                put16(&mut e, 7);
                put16(&mut e, AE_2);
                e.extend_from_slice(b"AE");
                e.push(AES_256);
                put16(&mut e, method);
                e
            }
            None => Vec::new(),
        }
    }
}

thread_local! {
    /// One deflate state per thread, reset for each entry: setting one up costs
    /// more than compressing a certificate.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
}

/// Raw deflate (no zlib header), as ZIP wants it.
fn deflate(plain: &[u8]) -> Result<Vec<u8>, PkiError> {
    let fail = |e: String| PkiError::Bundle(format!("deflate: {e}"));
    DEFLATE.with(|cell| {
        let mut c = cell.borrow_mut();
        c.reset();
        // Incompressible input grows by 5 bytes per 16 KiB block; a little more
        // room avoids reallocating.
        let mut out = Vec::with_capacity(plain.len() + plain.len() / 1000 + 64);
        loop {
            let consumed = usize::try_from(c.total_in()).map_err(|e| fail(e.to_string()))?;
            let input = plain.get(consumed..).unwrap_or_default();
            if out.len() == out.capacity() {
                out.reserve(64);
            }
            match c
                .compress_vec(input, &mut out, FlushCompress::Finish)
                .map_err(|e| fail(e.to_string()))?
            {
                Status::StreamEnd => return Ok(out),
                Status::Ok | Status::BufError => {}
            }
        }
    })
}

/// Writes an archive from `(name, unix mode, data)` entries, all with the DOS time
/// `(time, date)`.
pub fn write(entries: &[(&str, u32, &EntryData)], dos: (u16, u16)) -> Result<Vec<u8>, PkiError> {
    let count = u16::try_from(entries.len())
        .map_err(|_| PkiError::Bundle("too many bundle entries".into()))?;
    let size: usize = entries
        .iter()
        .map(|(name, _, e)| 30 + 46 + 2 * (name.len() + 11) + e.data.len())
        .sum::<usize>()
        + 22;
    let mut out = Vec::with_capacity(size);
    let mut offsets = Vec::with_capacity(entries.len());
    for (name, _, e) in entries {
        offsets.push(u32::try_from(out.len()).map_err(|_| too_big())?);
        let extra = e.extra();
        put32(&mut out, LOCAL_HEADER);
        put16(&mut out, e.version_needed());
        common(&mut out, name, e, &extra, dos)?;
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(&e.data);
    }
    let central = out.len();
    for ((name, mode, e), offset) in entries.iter().zip(offsets) {
        let extra = e.extra();
        put32(&mut out, CENTRAL_HEADER);
        put16(&mut out, MADE_BY_UNIX | e.version_needed());
        put16(&mut out, e.version_needed());
        common(&mut out, name, e, &extra, dos)?;
        put16(&mut out, 0); // comment length
        put16(&mut out, 0); // disk number
        put16(&mut out, 0); // internal attributes
        put32(&mut out, (S_IFREG | mode) << 16);
        put32(&mut out, offset);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&extra);
    }
    let central_len = u32::try_from(out.len() - central).map_err(|_| too_big())?;
    let central = u32::try_from(central).map_err(|_| too_big())?;
    put32(&mut out, END_OF_CENTRAL);
    put16(&mut out, 0); // this disk
    put16(&mut out, 0); // the central directory's disk
    put16(&mut out, count);
    put16(&mut out, count);
    put32(&mut out, central_len);
    put32(&mut out, central);
    put16(&mut out, 0); // comment length
    Ok(out)
}

/// The fields local and central headers share, from the flags to the extra
/// field's length.
fn common(
    out: &mut Vec<u8>,
    name: &str,
    e: &EntryData,
    extra: &[u8],
    (time, date): (u16, u16),
) -> Result<(), PkiError> {
    let name_len = u16::try_from(name.len())
        .map_err(|_| PkiError::Bundle("a bundle entry's name is too long".into()))?;
    put16(out, e.flags());
    put16(out, e.method);
    put16(out, time);
    put16(out, date);
    put32(out, e.crc);
    put32(out, u32::try_from(e.data.len()).map_err(|_| too_big())?);
    put32(out, e.size);
    put16(out, name_len);
    // At most 11 bytes (the AES field).
    put16(out, extra.len() as u16);
    Ok(())
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Read};

    #[test]
    fn the_zip_crate_reads_every_kind_of_entry() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let public = EntryData::deflated(b"public text, public text, public text").unwrap();
        let large = EntryData::deflated(&big).unwrap();
        let empty = EntryData::deflated(b"").unwrap();
        let secret = EntryData::encrypted(b"the secret", b"pw").unwrap();
        let zip = write(
            &[
                ("a.txt", 0o644, &public),
                ("big.bin", 0o644, &large),
                ("empty", 0o644, &empty),
                ("s.key", 0o600, &secret),
            ],
            (0, 33),
        )
        .unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
        assert_eq!(archive.len(), 4);
        let mut read = |name: &str, password: Option<&[u8]>| {
            let mut f = match password {
                Some(p) => archive.by_name_decrypt(name, p).unwrap(),
                None => archive.by_name(name).unwrap(),
            };
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            (v, f.unix_mode(), f.encrypted())
        };
        assert_eq!(
            read("a.txt", None),
            (
                b"public text, public text, public text".to_vec(),
                Some(0o100_644),
                false
            )
        );
        assert_eq!(read("big.bin", None).0, big);
        assert_eq!(read("empty", None).0, b"");
        assert_eq!(
            read("s.key", Some(b"pw")),
            (b"the secret".to_vec(), Some(0o100_600), true)
        );
        assert!(archive.by_name("s.key").is_err());
        assert!(archive.by_name_decrypt("s.key", b"wrong").is_err());
    }

    #[test]
    fn a_flipped_ciphertext_bit_is_refused() {
        let secret = EntryData::encrypted(&[b'x'; 40], b"pw").unwrap();
        let mut zip = write(&[("s", 0o600, &secret)], (0, 33)).unwrap();
        // The local header (30 bytes), the name, the AES field, salt and check.
        zip[30 + 1 + 11 + 18 + 5] ^= 1;
        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
        let mut f = archive.by_name_decrypt("s", b"pw").unwrap();
        let mut v = Vec::new();
        assert!(f.read_to_end(&mut v).is_err());
    }
}
