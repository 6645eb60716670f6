//! A test helper (not part of salve, std only): a program that daemonizes,
//! for the test that shows nothing an `exec` command starts outlives it.
//! The test compiles it with rustc.
//!
//! `daemonize SECONDS` starts a copy of itself in a process group of its
//! own that sleeps SECONDS, and returns at once: a process group kill
//! misses the copy. `daemonize --stay SECONDS` does the same and waits for
//! the copy, outliving the call's timeout.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = |at: usize| args.get(at).and_then(|s| s.parse().ok()).unwrap_or(60);
    let copy = |seconds: u64| {
        Command::new(std::env::current_exe().expect("its own path"))
            .args(["--child", &seconds.to_string()])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the daemon")
    };
    match args.get(1).map(String::as_str) {
        Some("--child") => std::thread::sleep(Duration::from_secs(seconds(2))),
        Some("--stay") => {
            copy(seconds(2)).wait().expect("wait for the daemon");
        }
        Some(_) => {
            // Not waited for, on purpose: it is the daemon.
            drop(copy(seconds(1)));
        }
        None => eprintln!("usage: daemonize [--stay] SECONDS"),
    }
}
