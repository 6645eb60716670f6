//! Hostile: reads a file through WASI's filesystem (`std::fs`) instead of
//! salve's `fs`. salve never links `wasi:filesystem`, so the component must
//! be refused before anything runs.

use salve_playbook::{Change, Context, Error, Playbook};

struct WasiFs;

impl Playbook for WasiFs {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        let secret = std::fs::read("/etc/shadow").map_err(|e| Error::failed(e.to_string()))?;
        Err(Error::failed(format!("read {} bytes of /etc/shadow", secret.len())))
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> {
        Ok(())
    }
}

salve_playbook::export_playbook!(WasiFs);
