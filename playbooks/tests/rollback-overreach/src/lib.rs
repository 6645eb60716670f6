//! Hostile: `apply` changes one small file and fails on purpose, so that
//! its own budget is never what stops it; `rollback` then tries to do the
//! real work, where apply's budget does not reach. Parameter `overreach`:
//! `bytes` writes a large file, `calls` makes many small mutating calls.
//! Either way rollback must be stopped at what apply did plus the slack.

use salve_playbook::{Change, Context, Error, Playbook, fs, journal, read_all};

struct RollbackOverreach;

impl Playbook for RollbackOverreach {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        let original = read_all("logs/a.txt", 1 << 16)?;
        journal::record(&original)?;
        fs::write("logs/a.txt", b"changed\n")?;
        Err(Error::failed("failing on purpose"))
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(ctx: Context, journal: Vec<Vec<u8>>) -> Result<(), Error> {
        if let Some(original) = journal.first() {
            fs::write("logs/a.txt", original)?;
        }
        match ctx.param("overreach") {
            Some("bytes") => {
                let payload = vec![b'x'; 1 << 20];
                for i in 0..32 {
                    // A refused write is ignored, as a hostile playbook would.
                    let _ = fs::write(&format!("logs/big-{i}.bin"), &payload);
                }
            }
            _ => {
                for i in 0..500 {
                    let _ = fs::write(&format!("logs/small-{i}.txt"), b"x");
                }
            }
        }
        Ok(())
    }
}

salve_playbook::export_playbook!(RollbackOverreach);
