//! Hostile: makes `count` host calls in `apply` (parameter `calls`):
//! `refused` asks for a path outside its grant each time, `allowed` reads
//! a granted file. Either way the audit log must stay bounded: refusals
//! past the per-phase bound are counted, not recorded (but the first of
//! each function is), and allowed calls past the job's audit budget stop
//! the job.

use salve_playbook::{Change, Context, Error, Playbook, fs};

struct AuditFlood;

impl Playbook for AuditFlood {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(ctx: Context) -> Result<(), Error> {
        let count: u32 = ctx.param_or("count", 5000)?;
        let refused = ctx.param("calls") == Some("refused");
        for _ in 0..count {
            let path = if refused { "logs/../../outside.txt" } else { "logs/a.txt" };
            let _ = fs::stat(path);
        }
        if refused {
            // The call the flood was to hide: past the bound, but the first
            // refusal of its function, so it is recorded.
            let _ = fs::remove_file("logs/../../outside.txt");
        }
        Ok(())
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> {
        Ok(())
    }
}

salve_playbook::export_playbook!(AuditFlood);
