//! Hostile: allocates (and touches) memory without bound in `apply`. The
//! linear-memory cap must stop it, and `rollback` must still run.

use salve_playbook::{Change, Context, Error, Playbook};

struct MemoryBomb;

impl Playbook for MemoryBomb {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> {
        Ok(())
    }
}

salve_playbook::export_playbook!(MemoryBomb);
