//! Host-side bindings of the `salve:playbook` world, generated from `wit/`.
//!
//! Every import is `async` (host calls may wait on I/O and the audit log)
//! and `trappable`: a host function returns `wasmtime::Result<Result<T,
//! error>>`, where the outer error traps the guest (a host bug, a limit, an
//! audit failure) and the inner one is what the guest sees.

wasmtime::component::bindgen!({
    path: "wit",
    world: "remediation",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::salve::playbook::types::{Change, Context, Error};
