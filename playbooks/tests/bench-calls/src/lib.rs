//! Makes `calls` host calls in `apply`: `fs.stat` (mode `stat`, read-only)
//! or a one-byte `fs.append` (mode `append`, mutating, so each has a
//! durable intent). The benchmark times jobs with and without the calls.
//! Mode `park` makes one `GET url` and waits in it (the benchmark's server
//! holds the connection), to measure what a job parked in a host call costs.

use salve_playbook::{Change, Context, Error, Playbook, fs, http};

struct BenchCalls;

impl Playbook for BenchCalls {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }

    fn apply(ctx: Context) -> Result<(), Error> {
        if ctx.param("mode") == Some("park") {
            let url = ctx.param("url").unwrap_or_default().to_string();
            // Whatever the answer (the server closes the connection when
            // the benchmark is done), the job is done.
            let _ = http::send(&http::Request { method: "GET".into(), url, headers: vec![], body: vec![] });
            return Ok(());
        }
        let calls: u32 = ctx.param_or("calls", 0)?;
        let append = ctx.param("mode") == Some("append");
        for _ in 0..calls {
            if append {
                fs::append("work/bench.log", b"x")?;
            } else {
                fs::stat("work/probe.txt")?;
            }
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

salve_playbook::export_playbook!(BenchCalls);
