//! Changes `logs/a.txt` to `half-done` (journaling the original first),
//! then spins until its deadline or until the runner stops it: the target
//! is half-changed for as long as `apply` runs. `rollback` puts the
//! original back.

use salve_playbook::{Change, Context, Error, Playbook, fs, journal, read_all};

struct ChangeThenSpin;

impl Playbook for ChangeThenSpin {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        let original = read_all("logs/a.txt", 1 << 16)?;
        journal::record(&original)?;
        fs::write("logs/a.txt", b"half-done\n")?;
        let mut spins: u64 = 0;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, journal: Vec<Vec<u8>>) -> Result<(), Error> {
        if let Some(original) = journal.first() {
            fs::write("logs/a.txt", original)?;
        }
        Ok(())
    }
}

salve_playbook::export_playbook!(ChangeThenSpin);
