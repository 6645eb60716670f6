//! A test helper (not part of salve): a program that daemonizes, for the
//! test that shows nothing an `exec` command starts outlives it.
//!
//! `daemonize SECONDS` starts a copy of itself that leaves the process
//! group and session (`setsid`) and sleeps SECONDS, and returns at once:
//! a process group kill misses the copy. `daemonize --stay SECONDS` leaves
//! the session itself and sleeps, outliving the call's timeout.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sleep = |seconds: &str| std::thread::sleep(Duration::from_secs(seconds.parse().unwrap_or(60)));
    match args.get(1).map(String::as_str) {
        Some("--stay") => {
            rustix::process::setsid().expect("setsid");
            sleep(args.get(2).map_or("60", String::as_str));
        }
        Some("--child") => {
            rustix::process::setsid().expect("setsid");
            sleep(args.get(2).map_or("60", String::as_str));
        }
        Some(seconds) => {
            let me = std::env::current_exe().expect("its own path");
            // Not waited for, on purpose: it is the daemon.
            #[allow(clippy::zombie_processes)]
            std::process::Command::new(me)
                .args(["--child", seconds])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start the daemon");
        }
        None => eprintln!("usage: daemonize [--stay] SECONDS"),
    }
}
