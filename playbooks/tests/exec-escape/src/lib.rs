//! Hostile: tries every way around its `exec` grant. The test grants
//! `echo {word:hello|bye} {int:1..3} {path:work}` with `TZ` settable, and
//! plants `work/escape-link`, a symlink out of the granted directory.
//! `apply` succeeds only if every attempt is denied and the one allowed
//! command runs.

use salve_playbook::{Change, Context, Error, Playbook, exec};

struct ExecEscape;

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Playbook for ExecEscape {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }

    fn apply(_: Context) -> Result<(), Error> {
        let attempts = [
            ("command substitution", argv(&["echo", "$(id)", "1", "work"]), env(&[])),
            ("shell metacharacters", argv(&["echo", "hello; id", "1", "work"]), env(&[])),
            ("metacharacters in an integer", argv(&["echo", "hello", "1 && id", "work"]), env(&[])),
            ("an extra argument", argv(&["echo", "hello", "1", "work", "--extra"]), env(&[])),
            ("a missing argument", argv(&["echo", "hello", "1"]), env(&[])),
            ("a different program", argv(&["cat", "/etc/shadow"]), env(&[])),
            // Hostile on purpose: the host must refuse a shell (the grant
            // allows only `echo`); nothing here is ever run through one.
            ("a shell", argv(&["sh", "-c", "id"]), env(&[])),
            ("the program by path", argv(&["/bin/echo", "hello", "1", "work"]), env(&[])),
            ("a path escaping by ..", argv(&["echo", "hello", "1", "work/../../etc"]), env(&[])),
            ("an absolute path", argv(&["echo", "hello", "1", "/etc"]), env(&[])),
            ("a path through a symlink", argv(&["echo", "hello", "1", "work/escape-link"]), env(&[])),
            ("LD_PRELOAD", argv(&["echo", "hello", "1", "work"]), env(&[("LD_PRELOAD", "/tmp/evil.so")])),
            ("PATH", argv(&["echo", "hello", "1", "work"]), env(&[("PATH", "/tmp")])),
            ("an unlisted variable", argv(&["echo", "hello", "1", "work"]), env(&[("HOME", "/root")])),
        ];
        for (what, argv, env) in attempts {
            match exec::run(&argv, &env) {
                Err(Error::Denied(_)) => {}
                other => return Err(Error::failed(format!("{what} was not denied: {other:?}"))),
            }
        }
        let allowed = exec::run(&argv(&["echo", "bye", "3", "work"]), &env(&[("TZ", "UTC")]))?;
        let stdout = String::from_utf8_lossy(&allowed.stdout);
        if allowed.status != Some(0) || !stdout.starts_with("bye 3 /") || !stdout.trim_end().ends_with("/work") {
            return Err(Error::failed(format!("the allowed command did not run as granted: {allowed:?}")));
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

salve_playbook::export_playbook!(ExecEscape);
