//! Hostile: `apply` overwrites `logs/a.txt` (journaled), then `verify`
//! fails. `rollback` must restore the file.

use salve_playbook::{Change, Context, Error, Playbook, fs, journal, read_all};

struct VerifyFails;

impl Playbook for VerifyFails {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        let original = read_all("logs/a.txt", 1 << 16)?;
        journal::record(&original)?;
        fs::write("logs/a.txt", b"changed by apply\n")
    }
    fn verify(_: Context) -> Result<(), Error> {
        Err(Error::failed("the service still does not answer"))
    }
    fn rollback(_: Context, journal: Vec<Vec<u8>>) -> Result<(), Error> {
        match journal.first() {
            Some(original) => fs::write("logs/a.txt", original),
            None => Ok(()),
        }
    }
}

salve_playbook::export_playbook!(VerifyFails);
