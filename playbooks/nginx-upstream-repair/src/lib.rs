//! nginx-upstream-repair: points an nginx `upstream` block at a healthy
//! server, checks the configuration (`nginx -t`), reloads nginx, tells the
//! load balancer's admin API, and verifies the site answers again.
//!
//! Parameters: `upstream` (host:port, required), `block` (default
//! `backend`), `health_url` (required: what verify fetches), `expect` (text
//! the answer must contain), `admin_url` (told of the change, with the
//! grant's credential, which this playbook never sees).
//!
//! The configuration is `conf/nginx.conf`. Its original bytes are journaled
//! before it is rewritten; rollback writes them back, checks and reloads
//! nginx, so nginx serves exactly what it served before.

use salve_playbook::{Change, Context, Error, Playbook, exec, fs, http, journal, read_all};

const CONF: &str = "conf/nginx.conf";

struct NginxUpstreamRepair;

struct Settings {
    upstream: String,
    block: String,
    health_url: String,
    expect: String,
    admin_url: Option<String>,
}

impl Settings {
    fn from(ctx: &Context) -> Result<Settings, Error> {
        let required = |name: &str| {
            ctx.param(name).map(String::from).ok_or_else(|| Error::Invalid(format!("parameter {name} is required")))
        };
        Ok(Settings {
            upstream: required("upstream")?,
            block: ctx.param("block").unwrap_or("backend").to_string(),
            health_url: required("health_url")?,
            expect: ctx.param("expect").unwrap_or_default().to_string(),
            admin_url: ctx.param("admin_url").map(String::from),
        })
    }
}

/// The `server` lines of `upstream NAME { ... }`, with their byte ranges.
fn servers(conf: &str, block: &str) -> Result<Vec<(std::ops::Range<usize>, String)>, Error> {
    let header = format!("upstream {block}");
    let start = conf
        .match_indices(&header)
        .find(|(i, _)| conf[i + header.len()..].trim_start().starts_with('{'))
        .map(|(i, _)| i)
        .ok_or_else(|| Error::failed(format!("{CONF} has no `upstream {block} {{ ... }}` block")))?;
    let open = start + conf[start..].find('{').expect("found above");
    let close =
        open + conf[open..].find('}').ok_or_else(|| Error::failed(format!("upstream {block} is not closed")))?;
    let mut found = Vec::new();
    let mut offset = open + 1;
    for statement in conf[open + 1..close].split_inclusive(';') {
        let trimmed = statement.trim_start();
        if let Some(rest) = trimmed.strip_prefix("server ") {
            let address = rest.trim_end_matches(';').split_whitespace().next().unwrap_or_default().to_string();
            let begin = offset + (statement.len() - trimmed.len());
            found.push((begin..offset + statement.len(), address));
        }
        offset += statement.len();
    }
    if found.is_empty() {
        return Err(Error::failed(format!("upstream {block} has no server")));
    }
    Ok(found)
}

/// The configuration with every server of the block replaced by `upstream`.
fn rewritten(conf: &str, block: &str, upstream: &str) -> Result<String, Error> {
    let servers = servers(conf, block)?;
    let mut out = String::with_capacity(conf.len());
    let mut at = 0;
    for (i, (range, _)) in servers.iter().enumerate() {
        out.push_str(&conf[at..range.start]);
        if i == 0 {
            out.push_str(&format!("server {upstream};"));
        }
        at = range.end;
    }
    out.push_str(&conf[at..]);
    Ok(out)
}

fn nginx(args: &[&str]) -> Result<(), Error> {
    let argv: Vec<String> =
        ["nginx", "-p", "conf", "-c", "nginx.conf"].iter().chain(args).map(|s| s.to_string()).collect();
    let output = exec::run(&argv, &[])?;
    if output.status != Some(0) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::failed(format!("nginx {} failed: {}", args.join(" "), stderr.trim())));
    }
    Ok(())
}

/// Checks the configuration, then reloads nginx with it.
fn check_and_reload() -> Result<(), Error> {
    nginx(&["-t"])?;
    nginx(&["-s", "reload"])
}

fn tell_admin(settings: &Settings, server: &str) -> Result<(), Error> {
    let Some(url) = &settings.admin_url else { return Ok(()) };
    let body = format!("{{\"block\":\"{}\",\"server\":\"{server}\"}}", settings.block);
    let response = http::send(&http::Request {
        method: "POST".into(),
        url: url.clone(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into_bytes(),
    })?;
    if !(200..300).contains(&response.status) {
        return Err(Error::failed(format!("the admin API answered {}", response.status)));
    }
    Ok(())
}

impl Playbook for NginxUpstreamRepair {
    fn plan(ctx: Context) -> Result<Vec<Change>, Error> {
        let settings = Settings::from(&ctx)?;
        let conf = String::from_utf8(read_all(CONF, 1 << 20)?).map_err(|_| Error::failed("nginx.conf is not UTF-8"))?;
        let current: Vec<String> = servers(&conf, &settings.block)?.into_iter().map(|(_, s)| s).collect();
        if current == [settings.upstream.clone()] {
            return Ok(Vec::new());
        }
        Ok(vec![
            Change {
                action: "rewrite-upstream".into(),
                target: CONF.into(),
                detail: format!("upstream {}: {} -> {}", settings.block, current.join(", "), settings.upstream),
                reversible: true,
            },
            Change {
                action: "reload".into(),
                target: "nginx".into(),
                detail: "nginx -t, then nginx -s reload".into(),
                reversible: true,
            },
        ])
    }

    fn apply(ctx: Context) -> Result<(), Error> {
        let settings = Settings::from(&ctx)?;
        let original = read_all(CONF, 1 << 20)?;
        let conf = String::from_utf8(original.clone()).map_err(|_| Error::failed("nginx.conf is not UTF-8"))?;
        let repaired = rewritten(&conf, &settings.block, &settings.upstream)?;
        if repaired == conf {
            return Ok(());
        }
        journal::record(&original)?;
        fs::write(CONF, repaired.as_bytes())?;
        check_and_reload()?;
        tell_admin(&settings, &settings.upstream)
    }

    fn verify(ctx: Context) -> Result<(), Error> {
        let settings = Settings::from(&ctx)?;
        // A reload replaces nginx's workers over a moment: ask a few times.
        let mut last = String::new();
        for _ in 0..30 {
            let request =
                http::Request { method: "GET".into(), url: settings.health_url.clone(), headers: vec![], body: vec![] };
            match http::send(&request) {
                Ok(response) if response.status == 200 => {
                    if String::from_utf8_lossy(&response.body).contains(&settings.expect) {
                        return Ok(());
                    }
                    last = format!("200, without {:?}", settings.expect);
                }
                Ok(response) => last = format!("status {}", response.status),
                Err(e) => last = format!("{e:?}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(Error::failed(format!("{} does not answer as it should: {last}", settings.health_url)))
    }

    fn rollback(ctx: Context, journal: Vec<Vec<u8>>) -> Result<(), Error> {
        let Some(original) = journal.first() else { return Ok(()) };
        if read_all(CONF, 1 << 20)? != *original {
            fs::write(CONF, original)?;
        }
        check_and_reload()?;
        let settings = Settings::from(&ctx)?;
        let conf = String::from_utf8_lossy(original);
        let before: Vec<String> = servers(&conf, &settings.block)?.into_iter().map(|(_, s)| s).collect();
        tell_admin(&settings, &before.join(","))
    }
}

salve_playbook::export_playbook!(NginxUpstreamRepair);

#[cfg(test)]
mod tests {
    use super::*;

    const CONF_TEXT: &str = "http {\n  upstream backend {\n    server 127.0.0.1:9;\n    server 127.0.0.1:10 backup;\n  }\n  upstream other { server 10.0.0.1:80; }\n}\n";

    #[test]
    fn the_named_block_is_rewritten_and_nothing_else() {
        let found: Vec<String> = servers(CONF_TEXT, "backend").unwrap().into_iter().map(|(_, s)| s).collect();
        assert_eq!(found, ["127.0.0.1:9", "127.0.0.1:10"]);
        let out = rewritten(CONF_TEXT, "backend", "127.0.0.1:8080").unwrap();
        assert!(out.contains("upstream backend {\n    server 127.0.0.1:8080;\n    \n  }"), "{out}");
        assert!(out.contains("upstream other { server 10.0.0.1:80; }"));
        assert!(servers(CONF_TEXT, "missing").is_err());
    }
}
