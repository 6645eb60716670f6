//! One time type for the control plane's records: [`Timestamp`], Unix
//! milliseconds, UTC. Stored and serialized as that integer; shown as
//! RFC 3339.
//!
//! # Errors
//! [`TimeError`]: text that is not an RFC 3339 time with a zone. A time
//! without `Z` or an offset is refused, never read as UTC: the writer's
//! zone is unknown.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not an RFC 3339 time with a zone ({reason}); write it like \"2026-12-02T10:00:00Z\" or \"2026-12-02T11:00:00+01:00\""
)]
pub struct TimeError {
    pub text: String,
    pub reason: String,
}

/// A point in time, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    pub fn from_unix_ms(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Whole seconds, as an expiry is stored.
    pub fn from_unix_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }

    pub fn unix_ms(self) -> i64 {
        self.0
    }

    /// Whole seconds (rounded down).
    pub fn unix_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// An RFC 3339 time with `Z` or an offset (`2026-12-02T10:00:00Z`,
    /// `2026-12-02T10:00:00+00:00` as Python's `isoformat` writes it).
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimeError> {
        let error = |reason: String| TimeError { text: text.to_string(), reason };
        // jiff's Timestamp parser requires an offset; a bare civil time, a
        // lowercase `t`/`z` or a space for `T` are held to RFC 3339 here.
        if !text.is_ascii() || text.len() > 64 || text.as_bytes().get(10) != Some(&b'T') {
            return Err(error("expected YYYY-MM-DDTHH:MM:SS followed by Z or an offset".into()));
        }
        let parsed: jiff::Timestamp = text.parse().map_err(|e: jiff::Error| error(e.to_string()))?;
        Ok(Timestamp(parsed.as_millisecond()))
    }

    /// As a `SystemTime`, the form the signature checks take.
    pub fn parse_rfc3339_system(text: &str) -> Result<SystemTime, TimeError> {
        Timestamp::parse_rfc3339(text).map(Timestamp::system)
    }

    /// In `zone`: for change windows.
    pub fn zoned(self, zone: &jiff::tz::TimeZone) -> jiff::Zoned {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH).to_zoned(zone.clone())
    }

    /// RFC 3339, to the second.
    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_seconds(self.system()).to_string()
    }

    /// RFC 3339, to the millisecond.
    pub fn rfc3339_millis(self) -> String {
        humantime::format_rfc3339_millis(self.system()).to_string()
    }

    /// As a `SystemTime` (times before 1970 are taken as 1970).
    pub fn system(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64)
    }

    /// Whether this time has come at `now`.
    pub fn reached(self, now: Timestamp) -> bool {
        now >= self
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Timestamp {
        Timestamp(time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn offsets_are_read_and_a_time_without_a_zone_is_refused() {
        let z = Timestamp::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
        assert_eq!(Timestamp::parse_rfc3339("2026-12-02T10:00:00+00:00").unwrap(), z, "Python's isoformat");
        assert_eq!(Timestamp::parse_rfc3339("2026-12-02T11:00:00+01:00").unwrap(), z);
        assert_eq!(Timestamp::parse_rfc3339("2026-12-02T10:00:00.250Z").unwrap().unix_ms(), z.unix_ms() + 250);
        for bad in ["2026-12-02T10:00:00", "2026-12-02 10:00:00Z", "2026-12-02", "tomorrow", "2026-13-02T10:00:00Z", ""]
        {
            let refused = Timestamp::parse_rfc3339(bad).unwrap_err();
            assert!(refused.to_string().contains("is not an RFC 3339 time with a zone"), "{bad}: {refused}");
        }
    }

    #[test]
    fn seconds_and_milliseconds_meet_in_one_type() {
        let t = Timestamp::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
        assert_eq!(Timestamp::from_unix_secs(t.unix_secs()), t);
        assert_eq!(t.rfc3339(), "2026-12-02T10:00:00Z");
        assert!(t.reached(Timestamp::from_unix_ms(t.unix_ms() + 1)));
        assert!(!t.reached(Timestamp::from_unix_ms(t.unix_ms() - 1)));
        assert_eq!(Timestamp::from(t.system()), t);
    }
}
