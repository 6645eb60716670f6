//! Hostile: recurses without bound in `apply`, with scalars only, so every
//! frame lives on the wasm stack (not in linear memory). The wasm stack cap
//! must stop it, and `rollback` must still run.

use salve_playbook::{Change, Context, Error, Playbook};

/// `limit` comes from the job, so the compiler cannot prove the recursion
/// ends, and the rotate after the call keeps it from becoming a loop.
#[inline(never)]
fn descend(depth: u64, limit: u64) -> u64 {
    if depth == limit {
        return depth;
    }
    descend(depth + 1, limit).rotate_left((depth % 63) as u32 + 1)
}

impl Playbook for DeepRecursion {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(ctx: Context) -> Result<(), Error> {
        let limit = u64::MAX - ctx.job_id.len() as u64;
        let reached = descend(0, limit);
        Err(Error::failed(format!("recursion ended at {reached}")))
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> {
        Ok(())
    }
}

struct DeepRecursion;

salve_playbook::export_playbook!(DeepRecursion);
