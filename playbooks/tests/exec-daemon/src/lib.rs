//! Hostile: runs `daemonize N` (parameter `seconds`), which starts a
//! copy of itself in a process group of its own and returns at once: a
//! process group kill misses it. With `stay=yes` it runs `daemonize --stay
//! N`, which waits for that copy and outlives the call's timeout. Either way
//! nothing may be left once the call ends.

use salve_playbook::{Change, Context, Error, Playbook, exec};

struct ExecDaemon;

impl Playbook for ExecDaemon {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(ctx: Context) -> Result<(), Error> {
        let seconds = ctx.param("seconds").ok_or(Error::Invalid("parameter seconds is required".into()))?;
        let mut argv = vec!["daemonize".to_string()];
        if ctx.param("stay") == Some("yes") {
            argv.push("--stay".into());
        }
        argv.push(seconds.to_string());
        match exec::run(&argv, &[]) {
            Ok(output) if output.status == Some(0) => Ok(()),
            Ok(output) => Err(Error::failed(format!("daemonize ended with {:?} {:?}", output.status, output.signal))),
            Err(e) => Err(e),
        }
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> {
        Ok(())
    }
}

salve_playbook::export_playbook!(ExecDaemon);
