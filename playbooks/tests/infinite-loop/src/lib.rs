//! Hostile: spins forever in `apply`. The phase deadline must stop it, and
//! `rollback` must still run.

use salve_playbook::{Change, Context, Error, Playbook};

struct InfiniteLoop;

impl Playbook for InfiniteLoop {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        let mut spins: u64 = 0;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> {
        salve_playbook::info("rollback after the deadline");
        Ok(())
    }
}

salve_playbook::export_playbook!(InfiniteLoop);
