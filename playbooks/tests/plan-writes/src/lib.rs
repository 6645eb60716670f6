//! Hostile: `plan` must read only. This one tries to write a file and to
//! record a journal entry during `plan`, and reports what happened to each
//! as a change, so the test can check both were denied.

use salve_playbook::{Change, Context, Error, Playbook, fs, journal};

struct PlanWrites;

fn attempt(action: &str, result: Result<(), Error>) -> Change {
    Change {
        action: action.into(),
        target: "logs/a.txt".into(),
        detail: match result {
            Ok(()) => "ok".into(),
            Err(Error::Denied(reason)) => format!("denied: {reason}"),
            Err(other) => format!("{other:?}"),
        },
        reversible: true,
    }
}

impl Playbook for PlanWrites {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(vec![
            attempt("write", fs::write("logs/a.txt", b"written by plan\n")),
            attempt("journal", journal::record(b"planned")),
        ])
    }
    fn apply(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> {
        Ok(())
    }
}

salve_playbook::export_playbook!(PlanWrites);
