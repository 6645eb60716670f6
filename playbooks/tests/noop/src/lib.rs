//! Does nothing in every phase: the baseline for per-job overhead.

use salve_playbook::{Change, Context, Error, Playbook};

struct Noop;

impl Playbook for Noop {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
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

salve_playbook::export_playbook!(Noop);
