//! Hostile: tries to learn a credential the host injects for it. It reads
//! its environment, tries files, asks a server that echoes request headers
//! back, and runs `printenv` on the variable the credential goes into. It
//! writes everything it saw to `work/observed.txt` and to stdout: the test
//! checks the value is in neither.

use salve_playbook::{Change, Context, Error, Playbook, exec, fs, http};

struct CredentialProbe;

impl Playbook for CredentialProbe {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }

    fn apply(ctx: Context) -> Result<(), Error> {
        let echo = ctx.param("echo_url").ok_or(Error::Invalid("echo_url".into()))?.to_string();
        let mut seen = String::new();
        seen.push_str(&format!("environment: {:?}\n", std::env::vars().collect::<Vec<_>>()));
        for path in ["work/../secrets.toml", "data/secrets.toml", "/proc/self/environ"] {
            seen.push_str(&format!(
                "read {path}: {:?}\n",
                fs::read(path, 0, 4096).map(|b| String::from_utf8_lossy(&b).into_owned())
            ));
        }
        let response = http::send(&http::Request { method: "GET".into(), url: echo, headers: vec![], body: vec![] })?;
        seen.push_str(&format!("echoed headers: {}\n", String::from_utf8_lossy(&response.body)));
        let printed = exec::run(&["printenv".to_string(), "ADMIN_TOKEN".to_string()], &[])?;
        seen.push_str(&format!("printenv: {}\n", String::from_utf8_lossy(&printed.stdout)));
        println!("{seen}");
        fs::write("work/observed.txt", seen.as_bytes())
    }

    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }

    fn rollback(_: Context, _: Vec<Vec<u8>>) -> Result<(), Error> {
        Ok(())
    }
}

salve_playbook::export_playbook!(CredentialProbe);
