//! salve runs remediation playbooks that a security team can trust.
//!
//! A playbook is a WebAssembly component that exports `plan`, `apply`,
//! `verify` and `rollback` (see `wit/`). The crate reads bottom-up, each
//! layer using only those below it.
//!
//! # The vocabulary
//! - [`scope`]: what a manifest and a grant both speak (access modes,
//!   limits, path and URL patterns, argv templates, credential names).
//! - [`bindings`]: the WIT contract (`wit/`), the types host and guest
//!   share.
//! - [`keys`]: ed25519 keys with one role each; [`time`]: one time type;
//!   [`data_dir`]: where a runner keeps each file; [`fault`]: whose fault
//!   an error is; [`text`]: outside text made safe to print.
//!
//! # Trust and artifacts
//! - [`trust`]: the trust store (keys, roles, environments, expiry,
//!   revocations).
//! - [`artifact`]: a signed artifact (component + manifest + signatures),
//!   its manifest, verification, the version floor.
//!
//! Benchmarks are their own binary (`src/bin/salve-bench`), built on the
//! public API only.
//!
//! # The execution core
//! 1. [`grant`]: a [`grant::GrantSpec`] (what the task asks for) is opened
//!    into a [`grant::Grant`] within the signed manifest: the only place
//!    ambient authority is opened.
//! 2. [`sandbox`]: the component is compiled and checked once
//!    ([`sandbox::Sandbox::load`] takes a verified artifact; its
//!    [`sandbox::Catalog`] caches by digest): all four exports present
//!    with the right types, and no import beyond salve's capabilities and
//!    minimal WASI.
//! 3. [`host`]: one module per capability; every host call goes through
//!    one audited choke point. [`credentials`] leases what a grant names.
//! 4. [`run`]: the [`run::Runner`] runs each phase in a fresh instance that
//!    links only the capabilities the grant allows, under a deadline and a
//!    memory cap; any failure calls `rollback` with the journal `apply`
//!    recorded.
//! 5. [`audit`]: every host call, phase and outcome goes to one hash-chained
//!    log; [`audit::verify`] checks it offline.
//!
//! # The control plane
//! 6. [`job`]: a job an agent signed ([`job::SignedJob`] →
//!    [`job::VerifiedJob`]) and its life ([`job::JobState`]).
//! 7. [`policy`]: the Cedar policy's decision on a job at the moment of
//!    action; [`approval`]: votes signed over the job and its plan.
//! 8. [`store`]: the [`store::JobStore`] the control plane keeps its state
//!    in (SQLite by default).
//! 9. [`control`]: submission, admission, votes, the worker (plan, decide
//!    again, apply) and recovery.
//! 10. [`evidence`]: one job's evidence bundle, exported from a data
//!     directory and verified offline.
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
pub mod data_dir;
pub mod evidence;
pub mod fault;
pub mod grant;
pub mod histogram;
pub mod host;
pub mod job;
pub mod keys;
pub mod policy;
pub mod reaper;
pub mod redact;
pub mod run;
pub mod sandbox;
pub mod scope;
pub mod serve;
pub mod store;
pub mod text;
pub mod time;
pub mod trust;
