//! Scopes: the vocabulary a playbook's manifest and a task's grant both
//! speak. A manifest declares the most a playbook may ever be given in
//! these terms; a grant asks for some of it in the same terms; and
//! [`crate::grant`] checks one against the other. Nothing here opens or
//! reaches anything: these are values, patterns and the rules for reading
//! them, below both [`crate::artifact`] and [`crate::grant`].
//!
//! - [`Access`]: read-only or read-write.
//! - [`limits`]: deadlines, memory, write and mutation budgets, and the
//!   sizes and durations they are written in.
//! - [`pattern`]: path and URL glob patterns.
//! - [`exec`]: argv templates, the environment no program is given, and
//!   how a credential reaches a program.
//! - [`http`]: URL canonicalisation and prefix matching, special
//!   addresses, which methods only read ([`http::mutating_method`]), and
//!   how a credential reaches a service.

pub mod exec;
pub mod http;
pub mod limits;
pub mod pattern;

use serde::{Deserialize, Serialize};

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Ro,
    Rw,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Ro => "ro",
            Access::Rw => "rw",
        })
    }
}
