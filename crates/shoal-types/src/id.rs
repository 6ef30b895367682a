//! Typed identifiers. IDs are opaque strings; the brain draws new ones from its seeded RNG so a
//! plan is reproducible byte for byte.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[derive(schemars::JsonSchema)]
        pub struct $name(pub std::sync::Arc<str>);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into().into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// The first 12 characters, as `docker ps` shows IDs.
            pub fn short(&self) -> &str {
                self.0.get(..12).unwrap_or(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.into())
            }
        }
    };
}

id_type!(
    /// Identifies a node (manager or worker).
    NodeId
);
id_type!(
    /// Identifies a service.
    ServiceId
);
id_type!(
    /// Identifies a task (one scheduled instance of a service).
    TaskId
);
id_type!(
    /// Identifies a network.
    NetworkId
);
id_type!(
    /// Identifies a secret or a config.
    SecretId
);

/// Length of generated IDs (lowercase base-36, like SwarmKit's 25-character IDs).
pub const ID_LEN: usize = 25;

/// Builds an ID from 128 bits of (caller-supplied, seeded) randomness.
pub fn id_from_bits(hi: u64, lo: u64) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut v: u128 = (u128::from(hi) << 64) | u128::from(lo);
    let mut out = [b'0'; ID_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 36) as usize];
        v /= 36;
    }
    // 36^25 > 2^128, so every value is representable; the bytes are ASCII by construction.
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fixed_length_base36() {
        for (hi, lo) in [(0, 0), (u64::MAX, u64::MAX), (1, 2)] {
            let id = id_from_bits(hi, lo);
            assert_eq!(id.len(), ID_LEN);
            assert!(id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        }
        assert_ne!(id_from_bits(1, 2), id_from_bits(2, 1));
    }
}
