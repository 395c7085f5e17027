//! 256-bit object and blob identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte identifier, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Length of an id in bytes.
    pub const LEN: usize = 32;

    /// The unkeyed BLAKE3 hash of `data`: names stored objects by their bytes.
    pub fn of_stored(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown to people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Reads an id from exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Id> {
        Some(Id(b.try_into().ok()?))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Id(out))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut hex = [0u8; 2 * Id::LEN];
        hex::encode_to_slice(self.0, &mut hex).expect("twice the length");
        s.serialize_str(std::str::from_utf8(&hex).expect("hex digits"))
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Parses the hex string in place (trees hold many ids: no copy of each).
        struct HexId;
        impl serde::de::Visitor<'_> for HexId {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id of 64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Id, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(HexId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::of_stored(b"abc");
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!("zz".parse::<Id>().is_err());
    }

    #[test]
    fn serde_round_trip_as_hex_strings() {
        let id = Id::of_stored(b"abc");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        // an escaped digit is the same string
        let escaped = format!(
            "\"\\u00{:x}{}\"",
            id.to_hex().as_bytes()[0],
            &id.to_hex()[1..]
        );
        assert_eq!(serde_json::from_str::<Id>(&escaped).unwrap(), id);
        assert!(serde_json::from_str::<Id>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Id>("7").is_err());
    }
}
