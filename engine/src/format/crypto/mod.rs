//! Encryption and naming: the repository's master keys, the sealed-box envelope that every
//! encrypted object uses, and keyed blob ids.
//!
//! Envelope (see `format-spec/`): `salt[24] || AES-256-GCM ciphertext || tag[16]`, where the
//! AES key is a one-time subkey `BLAKE3-keyed(data_key, "cairn/v1/subkey" || salt)` and the nonce
//! is all zeros. Each subkey encrypts exactly one message, so a (key, nonce) pair repeats only if
//! two 192-bit random salts collide.

pub mod keys;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key};
use zeroize::Zeroize;

use crate::format::id::Id;

/// Blobs from this size on are hashed on all cores (BLAKE3 recommends splitting from 128 KiB).
const PARALLEL_HASH_FROM: usize = 128 * 1024;

/// Bytes of random salt in front of every sealed box.
pub const SALT_LEN: usize = 24;
/// Bytes of GCM tag after every sealed box.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed box adds to its plaintext.
pub const OVERHEAD: usize = SALT_LEN + TAG_LEN;

const SUBKEY_CONTEXT: &[u8] = b"cairn/v1/subkey";

/// What an encrypted object is; bound into the envelope as associated data so that one kind of
/// object can never be passed off as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// The repository config body.
    Config,
    /// A blob inside a pack.
    Blob,
    /// A pack header.
    PackHeader,
    /// An index segment.
    Index,
    /// A snapshot.
    Snapshot,
    /// A garbage-collection mark.
    Mark,
    /// A record of a `check` run.
    CheckRecord,
    /// A record of a restore drill.
    DrillRecord,
}

impl Domain {
    fn aad(self) -> &'static [u8] {
        match self {
            Domain::Config => b"cairn/v1/config",
            Domain::Blob => b"cairn/v1/blob",
            Domain::PackHeader => b"cairn/v1/pack-header",
            Domain::Index => b"cairn/v1/index",
            Domain::Snapshot => b"cairn/v1/snapshot",
            Domain::Mark => b"cairn/v1/gc-mark",
            Domain::CheckRecord => b"cairn/v1/check-record",
            Domain::DrillRecord => b"cairn/v1/drill-record",
        }
    }
}

/// The secret keys of a repository: one for encryption, one for naming blobs.
#[derive(Clone)]
pub struct MasterKeys {
    data_key: [u8; 32],
    id_key: [u8; 32],
}

impl Drop for MasterKeys {
    fn drop(&mut self) {
        self.data_key.zeroize();
        self.id_key.zeroize();
    }
}

/// Fills a fresh array with random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source failed");
    out
}

impl MasterKeys {
    /// Draws new random keys for a new repository.
    pub fn generate() -> Self {
        MasterKeys {
            data_key: random_bytes(),
            id_key: random_bytes(),
        }
    }

    /// Fresh keys for another repository that names blobs like this one (same blob-id key, new
    /// encryption key), so that snapshots copy between the two without re-chunking.
    pub fn sharing_blob_ids(&self) -> Self {
        MasterKeys {
            data_key: random_bytes(),
            id_key: self.id_key,
        }
    }

    /// Rebuilds keys from their stored bytes.
    pub fn from_bytes(data_key: [u8; 32], id_key: [u8; 32]) -> Self {
        MasterKeys { data_key, id_key }
    }

    /// The two keys, for wrapping into a key file.
    pub(crate) fn as_parts(&self) -> (&[u8; 32], &[u8; 32]) {
        (&self.data_key, &self.id_key)
    }

    /// The id of a blob: BLAKE3 keyed with the id key over its plaintext. Large blobs are
    /// hashed on all cores (BLAKE3 is a tree: the result is the same).
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        let mut hasher = blake3::Hasher::new_keyed(&self.id_key);
        if plaintext.len() >= PARALLEL_HASH_FROM {
            hasher.update_rayon(plaintext);
        } else {
            hasher.update(plaintext);
        }
        Id(*hasher.finalize().as_bytes())
    }

    /// Encrypts `plaintext` into a new sealed box.
    pub fn seal(&self, domain: Domain, plaintext: &[u8]) -> Vec<u8> {
        self.seal_parts(domain, &[plaintext])
    }

    /// Seals the concatenation of `parts` as [`MasterKeys::seal`] seals one plaintext, written
    /// once into the box and encrypted there (no copy of the whole plaintext is made first).
    pub fn seal_parts(&self, domain: Domain, parts: &[&[u8]]) -> Vec<u8> {
        let salt: [u8; SALT_LEN] = random_bytes();
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = Vec::with_capacity(OVERHEAD + len);
        out.extend_from_slice(&salt);
        for part in parts {
            out.extend_from_slice(part);
        }
        let tag = self
            .cipher(&salt)
            .encrypt_inout_detached(
                &Default::default(),
                domain.aad(),
                (&mut out[SALT_LEN..]).into(),
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        out.extend_from_slice(&tag);
        out
    }

    /// Decrypts and authenticates a sealed box; `None` if it was altered, truncated, sealed
    /// for another domain or with other keys.
    pub fn open(&self, domain: Domain, sealed: &[u8]) -> Option<Vec<u8>> {
        let mut plain = Vec::new();
        self.open_into(domain, sealed, &mut plain).then_some(plain)
    }

    /// Opens a sealed box as [`MasterKeys::open`] does, into `plain` (its contents replaced,
    /// its memory reused); `false`, with `plain` holding nothing of use, if it does not open.
    pub fn open_into(&self, domain: Domain, sealed: &[u8], plain: &mut Vec<u8>) -> bool {
        plain.clear();
        let Some(ct_len) = sealed.len().checked_sub(OVERHEAD) else {
            return false;
        };
        let (salt, rest) = sealed.split_at(SALT_LEN);
        let (ct, tag) = rest.split_at(ct_len);
        let (Ok(salt), Ok(tag)) = (salt.try_into(), tag.try_into()) else {
            return false;
        };
        plain.extend_from_slice(ct);
        let opened = self
            .cipher(salt)
            .decrypt_inout_detached(
                &Default::default(),
                domain.aad(),
                plain.as_mut_slice().into(),
                tag,
            )
            .is_ok();
        if !opened {
            plain.clear();
        }
        opened
    }

    fn cipher(&self, salt: &[u8; SALT_LEN]) -> Aes256Gcm {
        let mut subkey = blake3::Hasher::new_keyed(&self.data_key)
            .update(SUBKEY_CONTEXT)
            .update(salt)
            .finalize()
            .as_bytes()
            .to_owned();
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(subkey));
        subkey.zeroize();
        cipher
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, Payload};

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = MasterKeys::generate();
        let sealed = k.seal(Domain::Blob, b"hello");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(k.open(Domain::Blob, &sealed).unwrap(), b"hello");
        // another domain, other keys, a flipped bit or a truncation all fail
        assert!(k.open(Domain::Snapshot, &sealed).is_none());
        assert!(MasterKeys::generate().open(Domain::Blob, &sealed).is_none());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.open(Domain::Blob, &bad).is_none(), "flip at {i} passed");
        }
        assert!(k.open(Domain::Blob, &sealed[..sealed.len() - 1]).is_none());
    }

    #[test]
    fn sealing_in_parts_seals_their_concatenation() {
        let k = MasterKeys::generate();
        let sealed = k.seal_parts(Domain::Index, &[b"he", b"", b"llo"]);
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(k.open(Domain::Index, &sealed).unwrap(), b"hello");
        assert!(k.open(Domain::Blob, &sealed).is_none());
        // byte for byte the box that encrypting the whole plaintext at once gives
        let (salt, boxed) = sealed.split_at(SALT_LEN);
        let whole = k
            .cipher(salt.try_into().unwrap())
            .encrypt(
                &Default::default(),
                Payload {
                    msg: b"hello",
                    aad: Domain::Index.aad(),
                },
            )
            .unwrap();
        assert_eq!(boxed, whole);
    }

    #[test]
    fn opening_into_a_used_buffer_gives_exactly_the_plaintext() {
        let k = MasterKeys::generate();
        let long = k.seal(Domain::Blob, &[7; 300]);
        let short = k.seal(Domain::Blob, b"hi");
        let mut plain = Vec::new();
        assert!(k.open_into(Domain::Blob, &long, &mut plain));
        assert_eq!(plain, [7; 300]);
        assert!(k.open_into(Domain::Blob, &short, &mut plain));
        assert_eq!(plain, b"hi");
        // a box that does not open leaves nothing behind, whatever the buffer held
        let mut bad = long.clone();
        bad[SALT_LEN] ^= 1;
        assert!(!k.open_into(Domain::Blob, &bad, &mut plain));
        assert!(plain.is_empty());
        assert!(!k.open_into(Domain::Blob, &long[..OVERHEAD - 1], &mut plain));
        assert!(k.open_into(Domain::Blob, &k.seal(Domain::Blob, b""), &mut plain));
        assert!(plain.is_empty());
    }

    #[test]
    fn same_plaintext_seals_differently_but_keeps_its_id() {
        let k = MasterKeys::generate();
        assert_ne!(k.seal(Domain::Blob, b"x"), k.seal(Domain::Blob, b"x"));
        assert_eq!(k.blob_id(b"x"), k.blob_id(b"x"));
        assert_ne!(k.blob_id(b"x"), MasterKeys::generate().blob_id(b"x"));
        assert_ne!(k.blob_id(b"x"), Id::of_stored(b"x"));
    }
}
