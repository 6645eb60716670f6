//! The `salve:playbook` contract as the host sees it: the bindings
//! generated from `wit/`, the package and version this runner provides, and
//! [`LoadError`], why a component does not fit the contract.
//!
//! This sits below everything that speaks the contract: `host/*` implements
//! the generated traits, [`crate::sandbox`] links them, and an artifact's
//! error can carry a load failure, none of them importing another for it.
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

/// The package and version of the contract this runner provides.
pub const PACKAGE: &str = "salve:playbook";
pub const VERSION: &str = "0.1.0";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot set up the sandbox: {0}")]
    Engine(String),
    #[error("not a WebAssembly component that this runner can compile: {0}")]
    NotAComponent(String),
    #[error(
        "the component does not export {PACKAGE}/playbook@{VERSION} (it exports: {exports:?}); \
         build the playbook against salve's wit/ world `remediation`"
    )]
    NotAPlaybook { exports: Vec<String> },
    #[error(
        "the playbook does not export {}: plan, apply, verify and rollback are all mandatory",
        missing.join(", ")
    )]
    MissingExports { missing: Vec<String> },
    #[error("the playbook's exports do not have the types of {PACKAGE}@{VERSION}: {0}")]
    ExportTypes(String),
    #[error("the component imports `{import}`, which salve never provides: {why}")]
    ForbiddenImport { import: String, why: String },
    #[error("the component imports `{import}` whose types differ from salve's: {detail}")]
    ImportTypes { import: String, detail: String },
    #[error(
        "the component imports salve:playbook/{interface}, which its manifest does not declare: \
         declare it under [capabilities] or the playbook cannot be loaded"
    )]
    UndeclaredImport { interface: String },
}
