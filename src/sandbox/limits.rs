//! The limits a playbook runs under, and the typed traps they raise, so the
//! runner can tell a timeout from a memory cap from a playbook bug.

use std::time::Duration;
use wasmtime::ResourceLimiter;

/// Most table elements a playbook may grow a table to. Rust playbooks use a
/// few hundred; this only stops a guest from making the host allocate.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The phase ran past its deadline.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ran past its deadline of {}", humantime::format_duration(*.limit))]
pub struct PhaseTimeout {
    pub limit: Duration,
}

/// The playbook tried to grow its linear memory past the grant's cap.
#[derive(Debug, Clone, thiserror::Error)]
#[error("tried to grow its memory to {desired} bytes, past the cap of {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub limit: u64,
    pub desired: u64,
}

/// The playbook tried to grow a table past [`MAX_TABLE_ELEMENTS`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("tried to grow a table to {desired} elements, past the cap of {MAX_TABLE_ELEMENTS}")]
pub struct TableLimitExceeded {
    pub desired: usize,
}

/// Caps one store's linear memory. Unlike `StoreLimits`, going past the cap
/// traps with a typed error ([`MemoryLimitExceeded`]) instead of failing
/// `memory.grow`, so the outcome names the cause.
#[derive(Debug)]
pub struct MemoryCap {
    limit: u64,
}

impl MemoryCap {
    pub fn new(limit: u64) -> MemoryCap {
        MemoryCap { limit }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            return Err(MemoryLimitExceeded { limit: self.limit, desired: desired as u64 }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(TableLimitExceeded { desired }.into());
        }
        Ok(true)
    }
}
