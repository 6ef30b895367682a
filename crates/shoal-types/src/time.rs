//! Time as data. The brain never reads a clock: `now` is always an argument, and every stored
//! instant is a [`Timestamp`] (nanoseconds since the Unix epoch).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant, in nanoseconds since the Unix epoch. Serialized as RFC 3339 (`2026-11-25T19:21:56.5Z`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_nanos(n: u64) -> Self {
        Timestamp(n)
    }
    pub fn from_secs(s: u64) -> Self {
        Timestamp(s.saturating_mul(1_000_000_000))
    }
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    /// Converts a wall-clock reading (taken by the caller, never by the brain).
    pub fn from_system_time(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
    /// `self - earlier`, or zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_nanos(self.to_system_time()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let t = humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)?;
            Ok(Timestamp::from_system_time(t))
        } else {
            Ok(Timestamp(u64::deserialize(d)?))
        }
    }
}

/// Serde for `std::time::Duration` as a human string ("10s", "1m 30s", "500ms").
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&humantime::format_duration(*d))
        } else {
            s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            parse(&s).map_err(serde::de::Error::custom)
        } else {
            Ok(Duration::from_nanos(u64::deserialize(d)?))
        }
    }

    /// Parses "10s", "1m30s", "250ms" or "0".
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(t).map_err(|e| format!("invalid duration {s:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_roundtrips_as_rfc3339() {
        let t = Timestamp(1_764_098_516_123_456_789);
        let j = serde_json::to_string(&t).expect("serialize");
        assert_eq!(j, "\"2025-11-25T19:21:56.123456789Z\"");
        let back: Timestamp = serde_json::from_str(&j).expect("deserialize");
        assert_eq!(back, t);
    }

    #[test]
    fn duration_parse() {
        assert_eq!(duration::parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration::parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration::parse("0"), Ok(Duration::ZERO));
        assert!(duration::parse("ten").is_err());
    }
}
