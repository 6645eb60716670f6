//! One time type for the control plane's records: [`Timestamp`], Unix
//! milliseconds, UTC. Stored and serialized as that integer; shown as
//! RFC 3339.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// A point in time, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

    /// An RFC 3339 time (`2026-12-02T10:00:00Z`, or with an offset), if it
    /// is one.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        humantime::parse_rfc3339_weak(text).ok().map(Timestamp::from)
    }

    /// RFC 3339, to the second.
    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_seconds(self.system()).to_string()
    }

    /// RFC 3339, to the millisecond.
    pub fn rfc3339_millis(self) -> String {
        humantime::format_rfc3339_millis(self.system()).to_string()
    }

    /// As a [`SystemTime`] (times before 1970 are taken as 1970).
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
    fn seconds_and_milliseconds_meet_in_one_type() {
        let t = Timestamp::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
        assert_eq!(Timestamp::from_unix_secs(t.unix_secs()), t);
        assert_eq!(t.rfc3339(), "2026-12-02T10:00:00Z");
        assert!(t.reached(Timestamp::from_unix_ms(t.unix_ms() + 1)));
        assert!(!t.reached(Timestamp::from_unix_ms(t.unix_ms() - 1)));
        assert_eq!(Timestamp::from(t.system()), t);
    }
}
