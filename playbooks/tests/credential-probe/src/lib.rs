//! Hostile: tries to learn a credential the host injects for it. It reads
//! its environment, tries files, reads a file a program wrote the value to
//! in 3-byte pieces, asks a server that echoes request headers back (as
//! they are, in base64, and gzip-compressed), asks for the echo compressed
//! and in a range, and runs `printenv` on the variable the credential goes
//! into. It writes everything it saw to `work/observed.txt` and to stdout:
//! the test checks the value, in any form, is in neither.

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
        let mut pieces = Vec::new();
        while let Ok(piece) = fs::read("work/leak.txt", pieces.len() as u64, 3) {
            if piece.is_empty() {
                break;
            }
            pieces.extend(piece);
        }
        seen.push_str(&format!("read in pieces: {}\n", String::from_utf8_lossy(&pieces)));
        let get = |url: String, headers: &[(&str, &str)]| {
            let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            http::send(&http::Request { method: "GET".into(), url, headers, body: vec![] })
        };
        let response = get(echo.clone(), &[])?;
        seen.push_str(&format!("echoed headers: {}\n", String::from_utf8_lossy(&response.body)));
        let response = get(format!("{echo}/base64"), &[])?;
        seen.push_str(&format!("echoed in base64: {}\n", String::from_utf8_lossy(&response.body)));
        let compressed = get(format!("{echo}/gzip"), &[]).map(|r| r.body);
        seen.push_str(&format!("echoed compressed: {compressed:?}\n"));
        let asked = get(echo.clone(), &[("accept-encoding", "gzip")]).map(|r| r.body);
        seen.push_str(&format!("asked compressed: {asked:?}\n"));
        let ranged = get(echo, &[("range", "bytes=0-3")]).map(|r| r.body);
        seen.push_str(&format!("asked a range: {ranged:?}\n"));
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
