//! Hostile: tries every way around its `http` grant. Parameter `base` is
//! the test server (`http://127.0.0.1:PORT`), of which the grant allows
//! `GET /allowed/`, and `GET /params/` with path parameters; `other_port`
//! is a loopback port it does not allow.
//! `apply` succeeds only if every attempt ends as it must.

use salve_playbook::{Change, Context, Error, Playbook, http};

struct HttpEscape;

fn get(url: &str) -> Result<http::Response, Error> {
    http::send(&http::Request { method: "GET".into(), url: url.into(), headers: vec![], body: vec![] })
}

fn expect_denied(what: &str, result: Result<http::Response, Error>) -> Result<(), Error> {
    match result {
        Err(Error::Denied(_)) => Ok(()),
        other => Err(Error::failed(format!("{what} was not denied: {:?}", other.map(|r| r.status)))),
    }
}

impl Playbook for HttpEscape {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }

    fn apply(ctx: Context) -> Result<(), Error> {
        let base = ctx.param("base").ok_or(Error::Invalid("base".into()))?.to_string();
        let other: u16 = ctx.param_or("other_port", 1)?;
        let port = base.rsplit(':').next().unwrap_or_default().to_string();
        let attempts = [
            ("cloud metadata", "http://169.254.169.254/latest/meta-data/".to_string()),
            ("metadata, decimal", "http://2852039166/latest/meta-data/".to_string()),
            ("metadata, IPv6-mapped", "http://[::ffff:169.254.169.254]/latest/meta-data/".to_string()),
            ("loopback, another port", format!("http://127.0.0.1:{other}/")),
            ("loopback, decimal, another port", format!("http://2130706433:{other}/")),
            ("loopback, IPv6-mapped", format!("http://[::ffff:127.0.0.1]:{port}/allowed/x")),
            ("userinfo before an allowed host", format!("http://allowed.example@127.0.0.1:{port}/allowed/x")),
            ("an allowed host as userinfo", format!("{base}@evil.example/allowed/x")),
            ("out of the prefix by ..", format!("{base}/allowed/../secret")),
            ("out of the prefix by %2e%2e", format!("{base}/allowed/%2e%2e/secret")),
            ("out of the prefix by %2E%2e", format!("{base}/allowed/%2E%2e/secret")),
            ("a prefix that only looks alike", format!("{base}/allowedx/secret")),
            ("a name that resolves to loopback", format!("http://localhost:{port}/allowed/x")),
            ("another scheme", "file:///etc/passwd".to_string()),
            ("out of the prefix by a path parameter", format!("{base}/allowed/..;/secret")),
            ("out of the prefix by an encoded path parameter", format!("{base}/allowed/..%3B/secret")),
            ("a path parameter the grant does not allow", format!("{base}/allowed/x;v=1")),
            ("out of the prefix by %252e%252e", format!("{base}/allowed/%252e%252e/secret")),
            ("out of the prefix by %u002e%u002e", format!("{base}/allowed/%u002e%u002e/secret")),
            ("out of the prefix by overlong UTF-8", format!("{base}/allowed/%C0%AE%C0%AE/secret")),
            ("an encoded NUL", format!("{base}/allowed/secret%00.txt")),
            ("metadata, NAT64", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/".to_string()),
            ("metadata, NAT64 for local use", "http://[64:ff9b:1::a9fe:a9fe]/latest/meta-data/".to_string()),
            ("metadata, 6to4", "http://[2002:a9fe:a9fe::1]/latest/meta-data/".to_string()),
            ("metadata, Teredo", "http://[2001:0:4136:e378:8000:63bf:5601:5601]/latest/meta-data/".to_string()),
            ("loopback, NAT64", format!("http://[64:ff9b::7f00:1]:{port}/allowed/x")),
            ("loopback, 6to4", format!("http://[2002:7f00:1::1]:{port}/allowed/x")),
        ];
        for (what, url) in &attempts {
            expect_denied(what, get(url))?;
        }
        let post = http::Request {
            method: "POST".into(),
            url: format!("{base}/allowed/x"),
            headers: vec![],
            body: b"x".to_vec(),
        };
        expect_denied("a method the grant does not give", http::send(&post))?;
        expect_denied("an encoded slash", get(&format!("{base}/allowed/..%2Fsecret")))?;
        for (name, value) in [
            ("host", "evil.example"),
            ("transfer-encoding", "chunked"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/secret"),
        ] {
            let smuggle = http::Request {
                method: "GET".into(),
                url: format!("{base}/allowed/x"),
                headers: vec![(name.into(), value.into())],
                body: vec![],
            };
            expect_denied(name, http::send(&smuggle))?;
        }

        // A redirect comes back as it is; following it is a new request.
        let redirect = get(&format!("{base}/allowed/redirect"))?;
        if redirect.status != 302 {
            return Err(Error::failed(format!("the redirect was followed or lost: {}", redirect.status)));
        }
        let location =
            redirect.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone()).unwrap_or_default();
        let target = if location.starts_with('/') { format!("{base}{location}") } else { location };
        expect_denied("following a redirect out of the prefix", get(&target))?;

        // Hundreds of megabytes: a bounded prefix, marked truncated.
        let huge = get(&format!("{base}/allowed/huge"))?;
        if !huge.body_truncated || huge.body.len() != 65536 {
            return Err(Error::failed(format!("the huge body was not cut at the bound: {} bytes", huge.body.len())));
        }
        // A server that never answers: the request times out.
        match get(&format!("{base}/allowed/hang")) {
            Err(Error::Failed(reason)) if reason.contains("timed out") => {}
            other => {
                return Err(Error::failed(format!(
                    "the silent server did not time out: {:?}",
                    other.map(|r| r.status)
                )));
            }
        }
        // Path parameters where the grant allows them.
        let parameters = get(&format!("{base}/params/x;v=1"))?;
        if parameters.status != 200 {
            return Err(Error::failed(format!("the allowed path parameter did not work: {}", parameters.status)));
        }
        let ok = get(&format!("{base}/allowed/ok"))?;
        if ok.status != 200 || ok.body != b"ok" {
            return Err(Error::failed(format!("the allowed request did not work: {}", ok.status)));
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

salve_playbook::export_playbook!(HttpEscape);
