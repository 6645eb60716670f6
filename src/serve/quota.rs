//! Per-key limits on what a request holds for long: open event streams
//! and evidence exports in progress. One trusted key cannot take every
//! connection or every thread of the blocking pool; past its share it is
//! answered 429 with `Retry-After`, and other keys are served as before.

use super::error::ApiError;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Held {
    /// An open `GET /v1/jobs/{id}/events`.
    Stream,
    /// An evidence bundle being built.
    Export,
}

impl Held {
    /// How many one key may hold at once.
    pub const fn limit(self) -> usize {
        match self {
            Held::Stream => 8,
            Held::Export => 2,
        }
    }

    fn check(self) -> &'static str {
        match self {
            Held::Stream => "streams-per-key",
            Held::Export => "exports-per-key",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Held::Stream => "event streams open",
            Held::Export => "evidence exports in progress",
        }
    }
}

#[derive(Default)]
pub struct Quotas {
    held: Mutex<HashMap<(String, Held), usize>>,
}

/// One unit of a key's quota, given back when dropped.
pub struct Slot {
    quotas: Arc<Quotas>,
    key: (String, Held),
}

impl Quotas {
    /// Takes one `held` for key `id`, or refuses when it holds its limit.
    pub fn take(self: &Arc<Self>, id: &str, held: Held) -> Result<Slot, ApiError> {
        let mut map = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let key = (id.to_string(), held);
        let count = map.entry(key.clone()).or_default();
        if *count >= held.limit() {
            return Err(ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    held.check(),
                    format!(
                        "key {id} already has {} {}, the most one key may: wait for one to end",
                        held.limit(),
                        held.what()
                    ),
                )
            });
        }
        *count += 1;
        Ok(Slot { quotas: Arc::clone(self), key })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.quotas.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_past_its_share_is_refused_and_its_slots_come_back() {
        let quotas = Arc::new(Quotas::default());
        let held: Vec<Slot> = (0..Held::Export.limit()).map(|_| quotas.take("a", Held::Export).unwrap()).collect();
        let refused = quotas.take("a", Held::Export).err().unwrap();
        assert_eq!(
            (refused.status, refused.check, refused.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, "exports-per-key", Some(5))
        );
        // Another key, and another kind, are not affected.
        let _other = quotas.take("b", Held::Export).unwrap();
        let _stream = quotas.take("a", Held::Stream).unwrap();
        drop(held);
        let _again = quotas.take("a", Held::Export).unwrap();
        assert_eq!(quotas.held.lock().unwrap().len(), 3);
    }
}
