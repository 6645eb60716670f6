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

/// The phase was stopped from outside (the runner was asked to stop, by
/// SIGINT or SIGTERM).
#[derive(Debug, Clone, thiserror::Error)]
#[error("stopped: the runner was asked to stop")]
pub struct PhaseStopped;

/// The playbook tried to grow its linear memory past the grant's cap.
#[derive(Debug, Clone, thiserror::Error)]
#[error("tried to grow its memory to {desired} bytes in all, past the cap of {limit} bytes")]
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

/// Caps the linear memory of one store in total: a component may hold
/// several core instances, each with memories of its own, and the grant's
/// cap is for all of them together. Unlike `StoreLimits` (which caps each
/// memory alone), going past the cap traps with a typed error
/// ([`MemoryLimitExceeded`]) instead of failing `memory.grow`, so the
/// outcome names the cause.
#[derive(Debug)]
pub struct MemoryCap {
    limit: u64,
    /// Bytes of every memory of the store, as grown so far (wasmtime asks
    /// before it creates a memory, too: from 0 to its initial size).
    used: u64,
}

impl MemoryCap {
    pub fn new(limit: u64) -> MemoryCap {
        MemoryCap { limit, used: 0 }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current as u64).saturating_add(desired as u64);
        if total > self.limit {
            return Err(MemoryLimitExceeded { limit: self.limit, desired: total }.into());
        }
        // A growth that then fails is still counted: the cap errs on the
        // side of less memory, never more.
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(TableLimitExceeded { desired }.into());
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::{MemoryCap, MemoryLimitExceeded};
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Config, Engine, Store};

    /// Two core instances, each with its own memory of one page, and a
    /// function that grows each.
    const TWO_MEMORIES: &str = r#"
        (component
          (core module $m
            (memory 1)
            (func (export "grow") (param i32) (result i32) local.get 0 memory.grow))
          (core instance $a (instantiate $m))
          (core instance $b (instantiate $m))
          (func (export "grow-a") (param "pages" u32) (result s32) (canon lift (core func $a "grow")))
          (func (export "grow-b") (param "pages" u32) (result s32) (canon lift (core func $b "grow"))))
    "#;

    #[test]
    fn a_component_with_several_memories_stays_under_the_cap_in_total() {
        const PAGE: u64 = 64 * 1024;
        let engine = Engine::new(Config::new().wasm_component_model(true)).unwrap();
        let component = Component::new(&engine, wat::parse_str(TWO_MEMORIES).unwrap()).unwrap();
        let mut store = Store::new(&engine, MemoryCap::new(4 * PAGE));
        store.limiter(|cap| cap);
        let instance = Linker::new(&engine).instantiate(&mut store, &component).unwrap();
        let grow_a = instance.get_typed_func::<(u32,), (i32,)>(&mut store, "grow-a").unwrap();
        let grow_b = instance.get_typed_func::<(u32,), (i32,)>(&mut store, "grow-b").unwrap();
        let mut grow =
            |f: &wasmtime::component::TypedFunc<(u32,), (i32,)>, pages| f.call(&mut store, (pages,)).map(|(r,)| r);
        assert_eq!(grow(&grow_a, 1).unwrap(), 1, "3 pages in all");
        assert_eq!(grow(&grow_b, 1).unwrap(), 1, "4 pages in all: the cap");
        // Each memory alone (3 pages) would be under the cap; together not.
        let refused = grow(&grow_a, 1).unwrap_err();
        let exceeded = refused.downcast_ref::<MemoryLimitExceeded>().expect("a typed memory trap");
        assert_eq!((exceeded.limit, exceeded.desired), (4 * PAGE, 5 * PAGE));
    }
}
