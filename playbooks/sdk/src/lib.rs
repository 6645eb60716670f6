//! Guest-side bindings for writing salve playbooks in Rust.
//!
//! A playbook implements [`Playbook`] (the four mandatory exports of the
//! `salve:playbook/playbook` interface) and calls
//! `salve_playbook::export_playbook!(MyPlaybook);`. It reaches the outside
//! world only through the capability modules re-exported here ([`fs`],
//! [`journal`], [`log`]); the runner links the ones the task's grant allows.
//!
//! ```ignore
//! use salve_playbook::{Context, Change, Error, Playbook};
//!
//! struct Noop;
//! impl Playbook for Noop {
//!     fn plan(_: Context) -> Result<Vec<Change>, Error> { Ok(vec![]) }
//!     fn apply(_: Context) -> Result<(), Error> { Ok(()) }
//!     fn verify(_: Context) -> Result<(), Error> { Ok(()) }
//!     fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> { Ok(()) }
//! }
//! salve_playbook::export_playbook!(Noop);
//! ```

extern crate self as salve_playbook;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

wit_bindgen::generate!({
    path: "../../wit",
    world: "remediation",
    pub_export_macro: true,
    export_macro_name: "export_playbook",
    default_bindings_module: "salve_playbook",
    runtime_path: "salve_playbook::__wit_bindgen::rt",
});

pub use exports::salve::playbook::playbook::Guest as Playbook;
pub use salve::playbook::types::{Change, Context, Error};
pub use salve::playbook::{exec, fs, http, journal, log};

impl Context {
    /// The value of parameter `name`, if the job gave one.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.parameters.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Parameter `name` parsed as `T`, or `default` when absent; `invalid`
    /// when present but unparsable.
    pub fn param_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Error> {
        match self.param(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|_| Error::Invalid(format!("parameter {name}={raw:?} is not valid"))),
        }
    }
}

impl Error {
    /// A `failed` error with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }
}

/// Logs a message at `info` through the host's audited log.
pub fn info(message: &str) {
    log::emit(log::Level::Info, message);
}

/// Reads a whole file through `fs.read`, `chunk` bytes per host call.
pub fn read_all(path: &str, chunk: u32) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let piece = fs::read(path, out.len() as u64, chunk)?;
        let done = (piece.len() as u32) < chunk;
        out.extend_from_slice(&piece);
        if done {
            return Ok(out);
        }
    }
}

/// Whether `path` exists (`stat` succeeds); other errors are passed on.
pub fn exists(path: &str) -> Result<bool, Error> {
    match fs::stat(path) {
        Ok(_) => Ok(true),
        Err(Error::NotFound) => Ok(false),
        Err(other) => Err(other),
    }
}
