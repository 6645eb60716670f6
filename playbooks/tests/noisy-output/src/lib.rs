//! Hostile: writes 8 MiB to stdout and 1 MiB to stderr in `apply`. The host
//! must keep a bounded prefix, record the truncation, and carry on.

use salve_playbook::{Change, Context, Error, Playbook};
use std::io::Write;

struct NoisyOutput;

impl Playbook for NoisyOutput {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        let line = [b'x'; 1023];
        let mut out = std::io::stdout().lock();
        for _ in 0..8 * 1024 {
            out.write_all(&line).and_then(|()| out.write_all(b"\n")).map_err(|e| Error::failed(e.to_string()))?;
        }
        drop(out);
        let mut err = std::io::stderr().lock();
        for _ in 0..1024 {
            err.write_all(&line).and_then(|()| err.write_all(b"\n")).map_err(|e| Error::failed(e.to_string()))?;
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

salve_playbook::export_playbook!(NoisyOutput);
