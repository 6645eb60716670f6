//! salve's integration tests: one binary, one module per area.
//!
//! Every playbook crate under playbooks/ must have a test named after it
//! (see `tests_by_playbook`); a playbook without one does not compile.

mod artifacts;
mod audit_chain;
mod authoring;
mod capabilities;
mod cli;
mod common;
mod concurrency;
mod control;
mod evidence;
mod faults;
mod hostile;
mod moment_of_action;
mod nginx;
mod pool;
mod recovery;
mod rotate_logs;
mod serve;
mod servers;
mod terminal;

include!(concat!(env!("OUT_DIR"), "/playbooks.rs"));

/// The test named after each playbook.
mod tests_by_playbook {
    pub(crate) use crate::capabilities::{credential_probe, exec_daemon, exec_escape, http_escape};
    pub(crate) use crate::cli::change_then_spin;
    pub(crate) use crate::hostile::{
        audit_flood, bench_calls, deep_recursion, escape_fs, infinite_loop, memory_bomb, no_rollback, noisy_output,
        noop, partial_then_trap, plan_writes, rollback_fails, rollback_overreach, verify_fails, wasi_fs,
        wrong_signature,
    };
    pub(crate) use crate::nginx::nginx_upstream_repair;
    pub(crate) use crate::rotate_logs::rotate_logs;
}

macro_rules! has_a_test {
    ($name:ident) => {
        #[allow(unused_imports)]
        use crate::tests_by_playbook::$name;
    };
}

mod every_playbook_has_a_test {
    foreach_playbook!(has_a_test);
}
