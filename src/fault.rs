//! Whose fault an error is, defined once for every error that crosses a
//! boundary (the CLI's exit code, the worker's retry, an HTTP status).
//!
//! Each stage keeps its own error enum with the details; [`Classify`] maps
//! it to a [`Fault`], and what follows from a fault is written here and
//! nowhere else: [`Fault::exit_code`], [`Fault::retry_later`],
//! [`Fault::http_status`].

/// Who is at fault when something is refused or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Fault {
    /// The caller's input is wrong: malformed, unknown, outside a schema
    /// or a declaration. Fix it and ask again.
    Input,
    /// A check refused it: policy, trust, signature, expiry, a version
    /// floor, a scope, a vote that may not be cast. Nothing ran.
    Refused,
    /// The state moved under the caller (another process acted first).
    Conflict,
    /// Something salve keeps was changed behind its back (the job store,
    /// an installed artifact): a person must look.
    Tampered,
    /// salve or what it stands on failed (the store, the disk, the audit
    /// log): not the caller's fault; the same request may succeed later.
    Infrastructure,
}

impl Fault {
    /// The CLI's exit code: 1 for salve's own failure, 2 for a refusal of
    /// any kind (see `salve --help`).
    pub fn exit_code(self) -> u8 {
        match self {
            Fault::Infrastructure => 1,
            Fault::Input | Fault::Refused | Fault::Conflict | Fault::Tampered => 2,
        }
    }

    /// Whether the worker leaves the job as it is and tries again later
    /// (true), or records the refusal as the job's end (false).
    pub fn retry_later(self) -> bool {
        self == Fault::Infrastructure
    }

    /// The HTTP status an API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Fault::Input => 400,
            Fault::Refused => 403,
            Fault::Conflict => 409,
            Fault::Tampered => 422,
            Fault::Infrastructure => 503,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Input => "input",
            Fault::Refused => "refused",
            Fault::Conflict => "conflict",
            Fault::Tampered => "tampered",
            Fault::Infrastructure => "infrastructure",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An error that knows whose fault it is.
pub trait Classify {
    fn fault(&self) -> Fault;
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn only_infrastructure_is_retried_and_exits_1() {
        for fault in [Fault::Input, Fault::Refused, Fault::Conflict, Fault::Tampered, Fault::Infrastructure] {
            let ours = fault == Fault::Infrastructure;
            assert_eq!(fault.retry_later(), ours, "{fault}");
            assert_eq!(fault.exit_code() == 1, ours, "{fault}");
            assert_eq!(fault.http_status() >= 500, ours, "{fault}");
        }
    }
}
