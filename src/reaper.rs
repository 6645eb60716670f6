//! The reaper: what every `exec` command runs under, so that nothing it
//! starts outlives it.
//!
//! A process group kill misses a descendant that called `setsid` (a
//! daemon). So salve starts `salve __reap PROGRAM ARGV0 ARGS...` instead of
//! the program: the reaper marks itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), so every orphan below it, whatever session
//! or group it moved to, becomes its child; starts the program directly
//! (never through a shell), with the environment, directory and output
//! pipes salve gave it and stdin closed; and waits. When the program ends,
//! or when salve closes the reaper's stdin (at the call's timeout, or
//! because salve itself died), it kills every process left below it, reaps
//! them, and ends as the program did: the same exit code, or the same
//! signal.
//!
//! # Security
//! The reaper parses no input beyond its argv, runs the program by its
//! absolute path, and kills with `SIGKILL` until no child is left (bounded
//! in time). What remains outside it: a descendant that escapes the
//! subreaper (only a `ptrace`-capable or privileged one can) and one
//! another user's process started.

use rustix::process::{Pid, Signal, WaitOptions};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The argument that makes `salve` the reaper (hidden from `--help`).
pub const VERB: &str = "__reap";

/// How long the reaper keeps killing what is left below it.
const CLEAN_UP_WITHIN: Duration = Duration::from_secs(5);

/// Exit code when the reaper itself cannot do its job.
const REAPER_FAILED: u8 = 125;

/// How often the reaper looks at the program and at its stdin.
const POLL: Duration = Duration::from_millis(2);

/// Runs the reaper on `args` (`PROGRAM ARGV0 ARGS...`, after [`VERB`]).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let mut args = args.into_iter();
    let (Some(program), Some(argv0)) = (args.next(), args.next()) else {
        eprintln!("salve {VERB}: usage: salve {VERB} PROGRAM ARGV0 [ARGS...] (run by salve's exec, not by hand)");
        return ExitCode::from(REAPER_FAILED);
    };
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("salve {VERB}: cannot become a child subreaper: {e}");
        return ExitCode::from(REAPER_FAILED);
    }
    let mut child = match Command::new(&program).arg0(&argv0).args(args).stdin(Stdio::null()).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("salve {VERB}: cannot start {}: {e}", program.to_string_lossy());
            return ExitCode::from(REAPER_FAILED);
        }
    };
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        // Anything but data (EOF, an error) means salve is done with us.
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        let _ = stop.send(());
    });
    // The program is waited for here, by polling, so that it is killed
    // only while it is known not to have been reaped (its pid is still
    // its own).
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        match stopped.recv_timeout(POLL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    };
    let left = kill_descendants();
    if left > 0 {
        eprintln!("salve {VERB}: {left} processes below the command could not be killed within {CLEAN_UP_WITHIN:?}");
    }
    match status {
        Some(status) => end_as(status),
        None => ExitCode::from(REAPER_FAILED),
    }
}

/// Kills every child of this process (orphans the command left, adopted
/// as the subreaper's), over and over (orphans of the killed become
/// children in turn), and reaps them, until none is left or the time is up.
/// Returns how many were still there at the deadline.
fn kill_descendants() -> usize {
    let me = std::process::id();
    let deadline = Instant::now() + CLEAN_UP_WITHIN;
    loop {
        // Reap what has died (and was not reaped yet) without waiting.
        while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
        let children = children_of(me);
        if children.is_empty() || Instant::now() >= deadline {
            return children.len();
        }
        for &pid in &children {
            if let Some(pid) = Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The processes whose parent is `parent`, from `/proc`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// A process's parent, from `/proc/PID/stat` (`pid (comm) state ppid ...`;
/// `comm` may hold spaces and parentheses, so fields count from the last `)`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Ends the reaper as the program ended: its exit code, or its signal.
fn end_as(status: std::process::ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(code as u8);
    }
    let Some(raw) = status.signal() else { return ExitCode::from(REAPER_FAILED) };
    if let Some(signal) = Signal::from_named_raw(raw) {
        // No handler is installed, so the default action ends the reaper
        // the same way. A signal the Rust runtime ignores (PIPE) does not:
        // then the shell's convention, 128 + the signal.
        let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
    }
    ExitCode::from(128u8.saturating_add(raw as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(parent_of(std::process::id()), Some(std::os::unix::process::parent_id()));
        let (_, rest) = "42 (a) b (c)) S 7 42 42".rsplit_once(')').unwrap();
        assert_eq!(rest.split_whitespace().nth(1), Some("7"));
    }
}
