//! Hostile: `apply` journals an entry and fails; `rollback` fails too. The
//! outcome must be `rollback-failed` with both causes.

use salve_playbook::{Change, Context, Error, Playbook, journal};

struct RollbackFails;

impl Playbook for RollbackFails {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        journal::record(b"step 1")?;
        Err(Error::failed("apply gave up after step 1"))
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, journal: Vec<Vec<u8>>) -> Result<(), Error> {
        Err(Error::failed(format!("cannot undo {} step(s)", journal.len())))
    }
}

salve_playbook::export_playbook!(RollbackFails);
