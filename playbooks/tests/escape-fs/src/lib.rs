//! Hostile: tries every way out of its fs grant. `apply` succeeds only if
//! every attempt is refused with `denied`; otherwise it fails, naming the
//! attempt that got through.
//!
//! The test grants `logs` read-write and `ro` read-only, and plants inside
//! `logs` a symlink to a directory outside (`escape-dir`), a symlink to a
//! file outside (`escape-file`) and a hard link to a file outside
//! (`hardlink.txt`). The guest has no way to create a symlink or a hard
//! link itself: salve's fs has no such function and WASI's filesystem is
//! never linked (see the `wasi-fs` playbook).

use salve_playbook::{Change, Context, Error, Playbook, fs};

struct EscapeFs;

fn attempts() -> Vec<(&'static str, Result<(), Error>)> {
    vec![
        ("read absolute", fs::read("/etc/passwd", 0, 64).map(drop)),
        ("read ..", fs::read("logs/../outside.txt", 0, 64).map(drop)),
        ("read leading ..", fs::read("../outside.txt", 0, 64).map(drop)),
        ("read unknown mount", fs::read("elsewhere/x", 0, 64).map(drop)),
        ("read .", fs::read("logs/./inside.txt", 0, 64).map(drop)),
        ("read empty component", fs::read("logs//inside.txt", 0, 64).map(drop)),
        ("read via dir symlink", fs::read("logs/escape-dir/secret.txt", 0, 64).map(drop)),
        ("read via file symlink", fs::read("logs/escape-file", 0, 64).map(drop)),
        ("read hard link", fs::read("logs/hardlink.txt", 0, 64).map(drop)),
        ("list via dir symlink", fs::list_dir("logs/escape-dir").map(drop)),
        ("stat via dir symlink", fs::stat("logs/escape-dir/secret.txt").map(drop)),
        ("write via dir symlink", fs::write("logs/escape-dir/planted.txt", b"x")),
        ("write via file symlink", fs::write("logs/escape-file", b"x")),
        ("append via file symlink", fs::append("logs/escape-file", b"x")),
        ("append hard link", fs::append("logs/hardlink.txt", b"x")),
        ("truncate hard link", fs::truncate("logs/hardlink.txt", 0)),
        ("write under ro", fs::write("ro/planted.txt", b"x")),
        ("append under ro", fs::append("ro/existing.txt", b"x")),
        ("truncate under ro", fs::truncate("ro/existing.txt", 0)),
        ("remove under ro", fs::remove_file("ro/existing.txt")),
        ("mkdir under ro", fs::create_dir("ro/sub")),
        ("rename across mounts", fs::rename("logs/inside.txt", "ro/inside.txt")),
        ("rename out via ..", fs::rename("logs/inside.txt", "logs/../moved.txt")),
        ("rename into dir symlink", fs::rename("logs/inside.txt", "logs/escape-dir/moved.txt")),
        ("remove the mount root", fs::remove_file("logs")),
    ]
}

impl Playbook for EscapeFs {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }

    fn apply(_: Context) -> Result<(), Error> {
        for (what, result) in attempts() {
            match result {
                Err(Error::Denied(_)) => {}
                other => return Err(Error::failed(format!("{what} was not denied: {other:?}"))),
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

salve_playbook::export_playbook!(EscapeFs);
