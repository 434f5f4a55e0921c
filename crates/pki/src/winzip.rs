//! WinZip AES-256 encryption of one ZIP entry (AE-2), written from the format's
//! public description: a fresh 16-byte salt per entry, a key derived from the
//! password and that salt with PBKDF2-HMAC-SHA1 (1,000 rounds, 66 bytes: the AES
//! key, the HMAC key and a 2-byte password check), the data encrypted with AES-256
//! in counter mode (a little-endian counter from 1, no nonce), and the first 10
//! bytes of HMAC-SHA1 over the ciphertext as its authentication code.
//!
//! The key derivation is nearly all of a bundle's CPU time, so PBKDF2 runs on the
//! SHA-1 compression function itself: the password's inner and outer HMAC states
//! are computed once, and each round is then exactly two compressions of one
//! padded 64-byte block. (A general HMAC over a hash's streaming interface spends
//! three compressions and several buffer copies a round.) The result is checked
//! against OpenSSL's PBKDF2 and HMAC and RFC 6070's vectors in the tests.
//!
//! Every entry gets its own salt, hence its own AES key: two entries under one key
//! would share a counter-mode keystream, and the XOR of their ciphertexts would be
//! the XOR of their plaintexts.

use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use sha1::block_api::compress;
use zeroize::{Zeroize, Zeroizing};

use crate::error::PkiError;

/// PBKDF2 rounds the format prescribes.
pub const ROUNDS: u32 = 1000;
/// Salt length for AES-256.
pub const SALT_LEN: usize = 16;
/// The password check after the salt.
pub const VERIFIER_LEN: usize = 2;
/// The truncated HMAC-SHA1 after the ciphertext.
pub const AUTH_LEN: usize = 10;
/// What an entry's data grows by when encrypted.
pub const OVERHEAD: usize = SALT_LEN + VERIFIER_LEN + AUTH_LEN;
const KEY_LEN: usize = 32;
const DERIVED_LEN: usize = 2 * KEY_LEN + VERIFIER_LEN;

type State = [u32; 5];
const SHA1_INIT: State = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];
const BLOCK: usize = 64;

/// A password's HMAC-SHA1 states after the inner and the outer key block, wiped on
/// drop.
struct HmacKey {
    inner: Zeroizing<State>,
    outer: Zeroizing<State>,
}

impl HmacKey {
    fn new(key: &[u8]) -> Self {
        let mut block = Zeroizing::new([0u8; BLOCK]);
        if key.len() > BLOCK {
            let digest = Zeroizing::new(to_bytes(&sha1_of(SHA1_INIT, 0, key)));
            block[..digest.len()].copy_from_slice(&digest[..]);
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        block.iter_mut().for_each(|b| *b ^= 0x36);
        let mut inner = Zeroizing::new(SHA1_INIT);
        compress(&mut inner, std::slice::from_ref(&*block));
        // 0x36 ^ 0x5c: from the inner pad to the outer pad.
        block.iter_mut().for_each(|b| *b ^= 0x36 ^ 0x5c);
        let mut outer = Zeroizing::new(SHA1_INIT);
        compress(&mut outer, std::slice::from_ref(&*block));
        Self { inner, outer }
    }

    /// HMAC-SHA1 of a message of any length.
    fn mac(&self, message: &[u8]) -> [u8; 20] {
        let inner = Zeroizing::new(to_bytes(&sha1_of(*self.inner, BLOCK as u64, message)));
        to_bytes(&sha1_of(*self.outer, BLOCK as u64, &inner[..]))
    }
}

/// Finishes a SHA-1 whose state has absorbed `done` bytes (a multiple of 64) with
/// `message`, padding included.
fn sha1_of(mut state: State, done: u64, message: &[u8]) -> State {
    let whole = message.len() - message.len() % BLOCK;
    let (blocks, rest) = message.split_at(whole);
    let mut block = Zeroizing::new([0u8; BLOCK]);
    for chunk in blocks.chunks_exact(BLOCK) {
        block.copy_from_slice(chunk);
        compress(&mut state, std::slice::from_ref(&*block));
    }
    let bits = (done + message.len() as u64) * 8;
    let mut tail = Zeroizing::new([[0u8; BLOCK]; 2]);
    let flat = tail.as_flattened_mut();
    flat[..rest.len()].copy_from_slice(rest);
    flat[rest.len()] = 0x80;
    // The length takes the last 8 bytes of one block, or of a second one when the
    // rest and its 0x80 leave no room.
    let used = if rest.len() + 1 + 8 <= BLOCK { 1 } else { 2 };
    flat[used * BLOCK - 8..used * BLOCK].copy_from_slice(&bits.to_be_bytes());
    compress(&mut state, &tail[..used]);
    state
}

fn to_bytes(state: &State) -> [u8; 20] {
    let mut out = [0u8; 20];
    put_bytes(state, &mut out);
    out
}

/// The state as the digest's 20 bytes, big-endian, into `out`.
fn put_bytes(state: &State, out: &mut [u8]) {
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
}

fn from_bytes(bytes: &[u8]) -> State {
    let mut state = [0u32; 5];
    for (word, chunk) in state.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    state
}

/// PBKDF2-HMAC-SHA1 (RFC 8018) into `out`.
pub fn pbkdf2_hmac_sha1(password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
    let key = HmacKey::new(password);
    // A round's message is the previous round's 20-byte output: one block whose
    // padding (0x80, zeros, the length of key block + 20 bytes) never changes.
    let mut block = Zeroizing::new([0u8; BLOCK]);
    block[20] = 0x80;
    block[BLOCK - 8..].copy_from_slice(&((BLOCK as u64 + 20) * 8).to_be_bytes());
    let mut first = Zeroizing::new(Vec::with_capacity(salt.len() + 4));
    for (i, chunk) in out.chunks_mut(20).enumerate() {
        first.clear();
        first.extend_from_slice(salt);
        // RFC 8018 numbers the blocks from 1 (a 32-bit counter; 20 * 2^32 bytes of
        // output are far beyond any caller).
        first.extend_from_slice(&(i as u32 + 1).to_be_bytes());
        // U_1, then each round's U in the first 20 bytes of `block`, and the XOR of
        // them all in `acc`, as words.
        block[..20].copy_from_slice(&key.mac(&first));
        let mut acc = Zeroizing::new(from_bytes(&block[..20]));
        let mut state = Zeroizing::new(SHA1_INIT);
        for _ in 1..rounds {
            *state = *key.inner;
            compress(&mut state, std::slice::from_ref(&*block));
            put_bytes(&state, &mut block[..20]);
            *state = *key.outer;
            compress(&mut state, std::slice::from_ref(&*block));
            put_bytes(&state, &mut block[..20]);
            acc.iter_mut().zip(state.iter()).for_each(|(a, s)| *a ^= s);
        }
        let acc = Zeroizing::new(to_bytes(&acc));
        chunk.copy_from_slice(&acc[..chunk.len()]);
    }
}

/// AES-256 in WinZip's counter mode, in place: the keystream block `n` (from 1)
/// is AES of `n` as a 128-bit little-endian number.
fn ctr_in_place(key: &[u8], data: &mut [u8]) -> Result<(), PkiError> {
    const BATCH: usize = 8;
    let cipher = aes::Aes256::new_from_slice(key)
        .map_err(|_| PkiError::Bundle("an AES-256 key must be 32 bytes".into()))?;
    let mut counter: u128 = 1;
    let mut keystream: [Array<u8, aes::cipher::consts::U16>; BATCH] = Default::default();
    for chunk in data.chunks_mut(16 * BATCH) {
        let blocks = chunk.len().div_ceil(16);
        for block in keystream[..blocks].iter_mut() {
            *block = Array::from(counter.to_le_bytes());
            counter += 1;
        }
        cipher.encrypt_blocks(&mut keystream[..blocks]);
        for (byte, k) in chunk
            .iter_mut()
            .zip(keystream[..blocks].iter().flat_map(|b| b.iter()))
        {
            *byte ^= k;
        }
    }
    for block in &mut keystream {
        block.as_mut_slice().zeroize();
    }
    Ok(())
}

/// An entry's data as the format stores it: salt, password check, ciphertext and
/// authentication code (`plaintext.len() + OVERHEAD` bytes). The plaintext is
/// copied once, into the buffer returned, and encrypted there in place, so no
/// other copy of it is left behind.
pub fn encrypt(password: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, PkiError> {
    let mut salt = [0u8; SALT_LEN];
    openssl::rand::rand_bytes(&mut salt)?;
    encrypt_with_salt(password, &salt, plaintext)
}

fn encrypt_with_salt(
    password: &[u8],
    salt: &[u8; SALT_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, PkiError> {
    let mut derived = Zeroizing::new([0u8; DERIVED_LEN]);
    pbkdf2_hmac_sha1(password, salt, ROUNDS, &mut derived[..]);
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.extend_from_slice(salt);
    out.extend_from_slice(&derived[2 * KEY_LEN..]);
    let start = out.len();
    out.extend_from_slice(plaintext);
    ctr_in_place(&derived[..KEY_LEN], &mut out[start..])?;
    let auth = HmacKey::new(&derived[KEY_LEN..2 * KEY_LEN]).mac(&out[start..]);
    out.extend_from_slice(&auth[..AUTH_LEN]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn rfc_6070_vectors() {
        let mut out = [0u8; 20];
        for (rounds, want) in [
            (1, "0c60c80f961f0e71f3a9b524af6012062fe037a6"),
            (2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"),
            (4096, "4b007901b765489abead49d926f721d065a429c1"),
        ] {
            pbkdf2_hmac_sha1(b"password", b"salt", rounds, &mut out);
            assert_eq!(hex(&out), want, "{rounds} rounds");
        }
        let mut out = [0u8; 25];
        pbkdf2_hmac_sha1(
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            &mut out,
        );
        assert_eq!(
            hex(&out),
            "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"
        );
    }

    #[test]
    fn pbkdf2_agrees_with_openssl() {
        // Passwords and salts across the block boundaries (55, 56, 64, 65 bytes).
        for len in [0usize, 1, 20, 24, 55, 56, 63, 64, 65, 100, 200] {
            let password: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let salt: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let mut ours = [0u8; DERIVED_LEN];
            let mut theirs = [0u8; DERIVED_LEN];
            pbkdf2_hmac_sha1(&password, &salt, ROUNDS, &mut ours);
            openssl::pkcs5::pbkdf2_hmac(
                &password,
                &salt,
                ROUNDS as usize,
                MessageDigest::sha1(),
                &mut theirs,
            )
            .unwrap();
            assert_eq!(ours, theirs, "length {len}");
        }
    }

    #[test]
    fn hmac_agrees_with_openssl() {
        for (klen, mlen) in [(20, 0), (32, 1), (24, 55), (64, 56), (65, 64), (3, 300)] {
            let key: Vec<u8> = (0..klen).map(|i| (i * 5) as u8).collect();
            let message: Vec<u8> = (0..mlen).map(|i| (i * 11 + 2) as u8).collect();
            let pkey = openssl::pkey::PKey::hmac(&key).unwrap();
            let mut signer = openssl::sign::Signer::new(MessageDigest::sha1(), &pkey).unwrap();
            signer.update(&message).unwrap();
            assert_eq!(
                HmacKey::new(&key).mac(&message).to_vec(),
                signer.sign_to_vec().unwrap(),
                "key {klen}, message {mlen}"
            );
        }
    }

    #[test]
    fn counter_mode_is_little_endian_from_one() {
        let key = [7u8; 32];
        let mut data = vec![0u8; 16 * 9 + 5];
        ctr_in_place(&key, &mut data).unwrap();
        let cipher = aes::Aes256::new_from_slice(&key).unwrap();
        for (n, chunk) in data.chunks(16).enumerate() {
            let mut block = Array::from((n as u128 + 1).to_le_bytes());
            cipher.encrypt_block(&mut block);
            assert_eq!(chunk, &block[..chunk.len()], "block {n}");
        }
    }

    #[test]
    fn layout_and_fresh_salt() {
        let a = encrypt(b"pw", b"secret data").unwrap();
        let b = encrypt(b"pw", b"secret data").unwrap();
        assert_eq!(a.len(), 11 + OVERHEAD);
        assert_ne!(a[..SALT_LEN], b[..SALT_LEN]);
        assert_ne!(a[SALT_LEN + 2..], b[SALT_LEN + 2..]);
        let salt: [u8; SALT_LEN] = a[..SALT_LEN].try_into().unwrap();
        assert_eq!(encrypt_with_salt(b"pw", &salt, b"secret data").unwrap(), a);
    }
}
