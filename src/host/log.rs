//! The `log` capability: structured messages from the playbook, into the
//! audit log (for auditors) and `tracing` (for operators). Always granted.
//!
//! # Errors
//! None the guest sees: messages past [`MAX_MESSAGE_BYTES`] are cut (and the
//! cut recorded); past [`MAX_RECORDS_PER_PHASE`] messages in one phase, the
//! rest are counted, not written, and the count goes in the phase's end
//! record.

use super::Calls;
use crate::audit::Event;
use crate::bindings::salve::playbook::log::{Host, Level};
use wasmtime::component::HasData;

/// Longest message kept, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Most messages written per phase.
pub const MAX_RECORDS_PER_PHASE: u32 = 1000;

/// Messages written and suppressed in one phase.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogBudget {
    pub written: u32,
    pub suppressed: u32,
}

/// Marker for linking `log` with [`LogView`] as the host data.
pub struct LogHost;

impl HasData for LogHost {
    type Data<'a> = LogView<'a>;
}

pub struct LogView<'a> {
    pub budget: &'a mut LogBudget,
    pub calls: &'a Calls,
}

fn name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl Host for LogView<'_> {
    async fn emit(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if self.budget.written >= MAX_RECORDS_PER_PHASE {
            self.budget.suppressed += 1;
            return Ok(());
        }
        self.budget.written += 1;
        let (message, truncated) = super::bounded(&message, MAX_MESSAGE_BYTES);
        let job = &*self.calls.job;
        match level {
            Level::Trace => tracing::trace!(job, message, "playbook"),
            Level::Debug => tracing::debug!(job, message, "playbook"),
            Level::Info => tracing::info!(job, message, "playbook"),
            Level::Warn => tracing::warn!(job, message, "playbook"),
            Level::Error => tracing::error!(job, message, "playbook"),
        }
        let phase = self.calls.phase;
        self.calls.record(&Event::Log { phase, level: name(level), message, truncated }).map(drop)
    }
}
