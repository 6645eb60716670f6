//! salve runs remediation playbooks that a security team can trust.
//!
//! A playbook is a WebAssembly component that exports `plan`, `apply`,
//! `verify` and `rollback` (see `wit/`). The pipeline, in order:
//!
//! 1. [`grant`]: a [`grant::GrantSpec`] (what the task asks for) is opened
//!    into a [`grant::Grant`]: the only place ambient authority is opened.
//! 2. [`sandbox`]: the component is compiled and checked once
//!    ([`sandbox::Sandbox::load`]): all four exports present with the right
//!    types, and no import beyond salve's capabilities and minimal WASI.
//! 3. [`run`]: the [`run::Runner`] runs each phase in a fresh instance that
//!    links only the capabilities the grant allows ([`host`]), under a
//!    deadline and a memory cap; any failure calls `rollback` with the
//!    journal `apply` recorded.
//! 4. [`audit`]: every host call, phase and outcome goes to one hash-chained
//!    log; [`audit::verify`] checks it offline.
//!
//! # What salve does not do
//! It does not let a playbook reach anything its grant does not name: no
//! ambient filesystem, network, environment or process. It never runs a
//! shell. Logs never hold secrets: the audit log records sizes and digests
//! of data, not the data.

#![forbid(unsafe_code)]

pub mod approval;
pub mod artifact;
pub mod audit;
pub mod bindings;
pub mod control;
pub mod credentials;
pub mod grant;
pub mod host;
pub mod job;
pub mod keys;
pub mod policy;
pub mod run;
pub mod sandbox;
pub mod scope;
pub mod store;
pub mod trust;
