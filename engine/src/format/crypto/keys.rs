//! Key files (`keys/<id>`): the master keys wrapped under a key derived from a password with
//! Argon2id. Several key files may wrap the same master keys, one per password.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{MasterKeys, random_bytes};
use crate::error::{Error, Result};

/// Version of the key-file layout this build writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;
const WRAP_AAD: &[u8] = b"cairn/v1/key";

/// Argon2id cost parameters stored in each key file.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended setting: 64 MiB, 3 passes, 4 lanes (computed on all
    /// cores).
    fn default() -> Self {
        KdfParams {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 4,
        }
    }
}

/// The key-derivation record of a key file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kdf {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Argon2 version number (19 = 0x13).
    pub version: u32,
    /// Cost parameters.
    #[serde(flatten)]
    pub params: KdfParams,
    /// 16 random bytes, base64.
    pub salt: String,
}

/// A key file as stored (JSON, not encrypted; the wrapped keys are).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// Key-file layout version.
    pub version: u32,
    /// When the key was added.
    pub created: DateTime<Utc>,
    /// Host that added it.
    pub host: String,
    /// User that added it.
    pub user: String,
    /// How the wrapping key is derived from the password.
    pub kdf: Kdf,
    /// 12-byte AES-GCM nonce, base64.
    pub nonce: String,
    /// `data_key || id_key` (64 bytes) encrypted with AES-256-GCM, base64 (80 bytes decoded).
    pub wrapped: String,
}

impl KdfParams {
    /// Most memory a key file may ask for: 4 GiB.
    pub const MAX_M_COST: u32 = 4 * 1024 * 1024;
    /// Most passes a key file may ask for.
    pub const MAX_T_COST: u32 = 64;
    /// Most lanes a key file may ask for.
    pub const MAX_P_COST: u32 = 64;

    /// Whether the costs are within what Cairn will spend, so that a crafted key file cannot
    /// make opening a repository take all memory or forever.
    pub fn is_reasonable(&self) -> bool {
        self.m_cost <= Self::MAX_M_COST
            && self.t_cost <= Self::MAX_T_COST
            && self.p_cost <= Self::MAX_P_COST
    }
}

fn derive_kek(password: &[u8], salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    if !p.is_reasonable() {
        return Err(Error::damaged(
            "key",
            "file",
            "its Argon2 costs exceed the limits (4 GiB, 64 passes, 64 lanes)",
        ));
    }
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::damaged("key", "file", format!("bad Argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, salt, kek.as_mut())
        .map_err(|e| Error::damaged("key", "file", format!("Argon2 failed: {e}")))?;
    Ok(kek)
}

impl KeyFile {
    /// Wraps `keys` under `password`.
    pub fn wrap(keys: &MasterKeys, password: &[u8], params: KdfParams) -> Result<KeyFile> {
        let salt: [u8; 16] = random_bytes();
        let nonce: [u8; 12] = random_bytes();
        let kek = derive_kek(password, &salt, params)?;
        let (data_key, id_key) = keys.as_parts();
        let mut plain = Zeroizing::new([0u8; 64]);
        plain[..32].copy_from_slice(data_key);
        plain[32..].copy_from_slice(id_key);
        let wrapped = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*kek))
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plain.as_ref(),
                    aad: WRAP_AAD,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        Ok(KeyFile {
            version: KEY_FILE_VERSION,
            created: Utc::now(),
            host: crate::host_name(),
            user: crate::user_name(),
            kdf: Kdf {
                algorithm: "argon2id".into(),
                version: 0x13,
                params,
                salt: B64.encode(salt),
            },
            nonce: B64.encode(nonce),
            wrapped: B64.encode(wrapped),
        })
    }

    /// Unwraps the master keys; `Ok(None)` when the password does not fit this key file.
    pub fn unwrap_keys(&self, password: &[u8]) -> Result<Option<MasterKeys>> {
        if self.version != KEY_FILE_VERSION {
            return Err(Error::UnsupportedVersion {
                found: self.version,
                supported: KEY_FILE_VERSION,
            });
        }
        if self.kdf.algorithm != "argon2id" || self.kdf.version != 0x13 {
            return Err(Error::damaged(
                "key",
                "file",
                "unknown key-derivation function",
            ));
        }
        let bad = |what| Error::damaged("key", "file", format!("{what} is not valid base64"));
        let salt = B64.decode(&self.kdf.salt).map_err(|_| bad("salt"))?;
        let nonce: [u8; 12] = B64
            .decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| bad("nonce"))?;
        let wrapped = B64.decode(&self.wrapped).map_err(|_| bad("wrapped"))?;
        let kek = derive_kek(password, &salt, self.kdf.params)?;
        let Ok(plain) = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*kek)).decrypt(
            &nonce.into(),
            Payload {
                msg: &wrapped,
                aad: WRAP_AAD,
            },
        ) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        if plain.len() != 64 {
            return Err(Error::damaged(
                "key",
                "file",
                "wrapped keys have the wrong length",
            ));
        }
        let data_key = plain[..32].try_into().expect("length checked");
        let id_key = plain[32..].try_into().expect("length checked");
        Ok(Some(MasterKeys::from_bytes(data_key, id_key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let keys = MasterKeys::generate();
        let file = KeyFile::wrap(&keys, b"secret", FAST).unwrap();
        let back = file.unwrap_keys(b"secret").unwrap().unwrap();
        assert_eq!(back.blob_id(b"a"), keys.blob_id(b"a"));
        assert!(file.unwrap_keys(b"Secret").unwrap().is_none());
        let mut tampered = file.clone();
        tampered.kdf.params.t_cost = 2;
        assert!(tampered.unwrap_keys(b"secret").unwrap().is_none());
        let mut greedy = file.clone();
        greedy.kdf.params.m_cost = u32::MAX;
        assert!(matches!(
            greedy.unwrap_keys(b"secret"),
            Err(Error::Damaged { .. })
        ));
        let mut newer = file;
        newer.version = 2;
        assert!(matches!(
            newer.unwrap_keys(b"secret"),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }
}
