//! `exec`, `http` and credentials: every way around them is refused,
//! audited, and leaves nothing behind.

use crate::common::{Site, of_kind};
use crate::servers::{Reply, TestServer, free_port};
use salve::run::Outcome;

fn denied_calls(records: &[serde_json::Value], interface: &str) -> usize {
    of_kind(records, "call")
        .iter()
        .filter(|c| c["interface"] == interface && c["outcome"]["denied"].is_string())
        .count()
}

/// Compiles tests/programs/daemonize.rs with rustc where the exec-daemon
/// playbook's manifest says it is.
fn install_daemonize() -> &'static str {
    const AT: &str = "/tmp/salve-test-daemonize";
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/daemonize.rs");
    // Atomically, as test processes may run at once.
    let staged = format!("{AT}.{}", std::process::id());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = std::process::Command::new(&rustc)
        .args(["--edition", "2024", "-o", &staged])
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("{rustc} (to build {}): {e}", source.display()));
    assert!(built.success(), "{rustc} could not build {}", source.display());
    std::fs::rename(&staged, AT).unwrap();
    AT
}

/// The processes whose arguments after argv[0] are exactly `args`.
fn processes_running(args: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let arguments = |cmdline: Vec<u8>| cmdline.iter().position(|&b| b == 0).map(|end| cmdline[end + 1..].to_vec());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok().and_then(arguments) == Some(wanted.clone()))
        .collect()
}

#[tokio::test]
pub(crate) async fn exec_daemon() {
    let program = install_daemonize();
    // Numbers no other run uses at the same time.
    let seconds = (900_000 + std::process::id() % 90_000).to_string();
    // The check below sees a daemon that escaped: started outside salve,
    // it is found (and killed).
    let escaped = (800_000 + std::process::id() % 90_000).to_string();
    std::process::Command::new(program).arg(&escaped).status().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let found = loop {
        let found = processes_running(&["--child", &escaped]);
        if !found.is_empty() || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    for &pid in &found {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }
    assert_eq!(found.len(), 1, "a daemon started outside salve outlives its parent");
    for stay in [false, true] {
        let site = Site::new();
        site.write("work/.keep", "");
        let grant = format!(
            r#"
            [[fs]]
            name = "work"
            path = "{{root}}/work"
            access = "ro"

            [[exec]]
            program = "{program}"
            argv = ["daemonize", "{{int:1..999999}}"]
            cwd = "work"

            [[exec]]
            program = "{program}"
            argv = ["daemonize", "--stay", "{{int:1..999999}}"]
            cwd = "work"
            timeout = "1s"
            "#
        );
        let params = [("seconds", seconds.as_str()), ("stay", if stay { "yes" } else { "no" })];
        let report = site.run("exec-daemon", &grant, &params).await;
        let mut running = processes_running(&["--child", &seconds]);
        running.extend(processes_running(&["--stay", &seconds]));
        for &pid in &running {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        assert!(running.is_empty(), "stay={stay}: the daemon outlived its command: {running:?}");
        if stay {
            // Outlived its timeout: the mutating call stops the job.
            assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
        } else {
            assert_eq!(report.outcome, Outcome::Succeeded, "the command itself returned at once");
        }
    }
}

#[tokio::test]
pub(crate) async fn exec_escape() {
    let site = Site::new();
    site.write("work/file.txt", "inside\n");
    site.write("outside/secret.txt", "secret\n");
    let root = site.root.path();
    std::os::unix::fs::symlink(root.join("outside"), root.join("work/escape-link")).unwrap();
    let before = site.snapshot();
    let grant = r#"
        [[fs]]
        name = "work"
        path = "{root}/work"
        access = "rw"

        [[exec]]
        program = "/bin/echo"
        argv = ["echo", "{word:hello|bye}", "{int:1..3}", "{path:work}"]
        cwd = "work"
        env_allow = ["TZ"]
    "#;

    let report = site.run("exec-escape", grant, &[]).await;

    assert_eq!(report.outcome, Outcome::Succeeded, "every attempt denied, the granted command run");
    assert_eq!(site.snapshot(), before);
    let records = site.job_records(&report.job_id);
    assert_eq!(denied_calls(&records, "exec"), 14, "each attempt refused and audited");
    let ran: Vec<_> = of_kind(&records, "call").into_iter().filter(|c| c["outcome"] == "ok").collect();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0]["args"]["argv"], serde_json::json!(["echo", "bye", "3", "work"]));
    assert_eq!(ran[0]["result"]["status"], 0);
    assert!(ran[0]["args"]["program"].as_str().unwrap().ends_with("/echo"));
    let reasons: Vec<String> =
        of_kind(&records, "call").iter().filter_map(|c| c["outcome"]["denied"].as_str().map(String::from)).collect();
    for expected in [
        "is not {word:hello|bye}",
        "takes 3 arguments",
        "no command the grant allows runs \"cat\"",
        "LD_PRELOAD",
        "PATH",
        "leaves the granted directory",
    ] {
        assert!(reasons.iter().any(|r| r.contains(expected)), "no refusal says {expected:?}: {reasons:#?}");
    }
}

#[tokio::test]
pub(crate) async fn http_escape() {
    let server = TestServer::start(|hit| match hit.path.as_str() {
        "/allowed/ok" | "/allowed/x" | "/params/x;v=1" => Reply::Status(200, b"ok".to_vec()),
        "/allowed/redirect" => Reply::Redirect("/secret".into()),
        "/allowed/huge" => Reply::Huge(300 << 20),
        "/allowed/hang" => Reply::Hang,
        _ => Reply::Status(200, b"should never be served".to_vec()),
    });
    let site = Site::new();
    let before = site.snapshot();
    let grant = format!(
        r#"
        [[http]]
        methods = ["GET"]
        prefix = "{base}/allowed/"
        timeout = "1s"
        max_response = "64KiB"

        [[http]]
        methods = ["GET"]
        prefix = "http://localhost:{port}/allowed/"

        [[http]]
        methods = ["GET"]
        prefix = "{base}/params/"
        allow_path_parameters = true
        "#,
        base = server.base(),
        port = server.port
    );
    let other = free_port().to_string();

    let report = site.run("http-escape", &grant, &[("base", &server.base()), ("other_port", &other)]).await;

    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.outcome);
    assert_eq!(site.snapshot(), before);
    let paths: Vec<String> = server.hits().into_iter().map(|h| h.path).collect();
    assert!(!paths.iter().any(|p| p.contains("secret") || p.contains("meta-data")), "never reached: {paths:?}");
    let records = site.job_records(&report.job_id);
    assert_eq!(denied_calls(&records, "http"), 34, "each attempt refused and audited");
    assert!(paths.contains(&"/params/x;v=1".to_string()), "a path parameter the grant allows: {paths:?}");
    let calls = of_kind(&records, "call");
    let huge = calls.iter().find(|c| c["args"]["url"].as_str().is_some_and(|u| u.ends_with("/huge"))).unwrap();
    assert_eq!(huge["result"]["truncated"], true);
    let redirect = calls.iter().find(|c| c["args"]["url"].as_str().is_some_and(|u| u.ends_with("/redirect"))).unwrap();
    assert_eq!(redirect["result"]["status"], 302);
    assert_eq!(redirect["result"]["location"], "/secret");
}

#[tokio::test]
pub(crate) async fn credential_probe() {
    const SECRET: &str = "s3cret-lb-admin-token";
    use base64::Engine as _;
    let server = TestServer::start(|hit| {
        let headers: String = hit.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
        match hit.path.as_str() {
            "/echo/base64" => {
                Reply::Status(200, base64::engine::general_purpose::STANDARD.encode(&headers).into_bytes())
            }
            "/echo/gzip" => {
                use std::io::Write as _;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(headers.as_bytes()).unwrap();
                Reply::With(200, "Content-Encoding: gzip\r\n".into(), gz.finish().unwrap())
            }
            _ => Reply::Echo,
        }
    });
    let site = Site::new().with_secrets(&[("probe-secret", SECRET)]);
    site.write("work/.keep", "");
    // A program the grant runs wrote the credential to a file.
    site.write("work/leak.txt", format!("token={SECRET}\n"));
    let grant = format!(
        r#"
        [[fs]]
        name = "work"
        path = "{{root}}/work"
        access = "rw"

        [[exec]]
        program = "/usr/bin/printenv"
        argv = ["printenv", "ADMIN_TOKEN"]
        cwd = "work"
        credential = {{ name = "probe-secret", env = "ADMIN_TOKEN" }}

        [[http]]
        methods = ["GET"]
        prefix = "{base}/echo"
        credential = {{ name = "probe-secret", header = "Authorization", prefix = "Bearer " }}
        "#,
        base = server.base()
    );

    let report = site.run("credential-probe", &grant, &[("echo_url", &format!("{}/echo", server.base()))]).await;

    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.outcome);
    let hits = server.hits();
    assert_eq!(hits[0].header("authorization"), Some(format!("Bearer {SECRET}").as_str()), "the service got it");
    let observed = std::fs::read_to_string(site.root.path().join("work/observed.txt")).unwrap();
    assert!(!observed.contains(SECRET), "the playbook saw the credential: {observed}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET);
    assert!(!observed.contains(&encoded[4..encoded.len() - 4]), "the playbook saw it in base64: {observed}");
    assert_eq!(
        observed.matches("[REDACTED]").count(),
        3,
        "echoed header, base64 echo and printenv, each redacted: {observed}"
    );
    assert!(observed.contains(&format!("read in pieces: token={}\n", "*".repeat(SECRET.len()))), "{observed}");
    assert!(
        observed.contains("echoed compressed: Err(Error::Denied(\"the server answered with content-encoding"),
        "{observed}"
    );
    assert!(observed.contains("asked compressed: Err(Error::Denied(\"the accept-encoding header is refused while the job holds a credential"), "{observed}");
    assert!(observed.contains("asked a range: Err(Error::Denied(\"the range header is refused"), "{observed}");
    assert!(
        server
            .hits()
            .iter()
            .filter(|h| h.header("authorization").is_some())
            .all(|h| h.header("accept-encoding") == Some("identity")),
        "every request with the credential asked for identity encoding"
    );
    assert!(observed.contains("environment: []"), "{observed}");
    let log = std::fs::read_to_string(site.data().join("audit.jsonl")).unwrap();
    assert!(!log.contains(SECRET), "the audit log holds the credential");
    let records = site.job_records(&report.job_id);
    let lease = of_kind(&records, "lease");
    assert_eq!(lease.len(), 1);
    let lease_id = lease[0]["lease_id"].as_str().unwrap();
    assert!(
        of_kind(&records, "call").iter().filter(|c| c["args"]["lease"] == lease_id).count() == 4,
        "each use names the lease (the three requests sent and printenv)"
    );
    assert_eq!(of_kind(&records, "leases-revoked")[0]["lease_ids"][0], lease_id);
}

#[tokio::test]
async fn a_grant_naming_an_unknown_credential_is_refused_before_anything_runs() {
    let site = Site::new();
    site.write("work/.keep", "");
    let grant = r#"
        [[http]]
        methods = ["GET"]
        prefix = "http://127.0.0.1:9/echo"
        credential = { name = "probe-secret", header = "Authorization", prefix = "Bearer " }
    "#;
    let playbook = crate::common::playbook("credential-probe");
    let job = crate::common::job(&[("echo_url", "http://127.0.0.1:9/echo")]);
    let result = site.runner().run(&playbook, &site.grant_for(&playbook, grant), &job).await;
    assert!(matches!(result, Err(salve::run::RunError::Credential { .. })), "{result:?}");
    assert!(of_kind(&site.job_records(&job.id), "phase").is_empty(), "nothing ran");
}

#[tokio::test]
async fn minted_tokens_reach_the_service_and_verify_downstream() {
    let server = TestServer::start(|_| Reply::Echo);
    let site = Site::new().with_token("probe-secret", "lb-admin-api");
    site.write("work/.keep", "");
    let grant = format!(
        r#"
        [[fs]]
        name = "work"
        path = "{{root}}/work"
        access = "rw"

        [[exec]]
        program = "/usr/bin/printenv"
        argv = ["printenv", "ADMIN_TOKEN"]
        cwd = "work"

        [[http]]
        methods = ["GET"]
        prefix = "{base}/echo"
        credential = {{ name = "probe-secret", header = "Authorization", prefix = "Bearer " }}
        "#,
        base = server.base()
    );

    let report = site.run("credential-probe", &grant, &[("echo_url", &format!("{}/echo", server.base()))]).await;

    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.outcome);
    let header = server.hits()[0].header("authorization").unwrap().to_string();
    let token = header.strip_prefix("Bearer ").unwrap();
    assert!(token.starts_with("v4.public."), "{token}");
    let trust = site.write("trust.toml", toml::to_string(&crate::common::trust_file()).unwrap());
    let verify = |audience: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["token", "verify", token, "--audience", audience, "--trust"])
            .arg(&trust)
            .output()
            .unwrap()
    };
    let ok = verify("lb-admin-api");
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let claims: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(claims["job"], report.job_id.as_str());
    assert_eq!(claims["action"], "apply");
    assert_eq!(claims["sub"], "test-host");
    let records = site.job_records(&report.job_id);
    let lease = of_kind(&records, "lease")[0];
    assert_eq!(claims["jti"], lease["lease_id"]);
    assert_eq!(lease["lease_kind"], "token");
    let wrong = verify("another-api");
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not \"another-api\""));
    let observed = std::fs::read_to_string(site.root.path().join("work/observed.txt")).unwrap();
    assert!(!observed.contains(token) && observed.contains("[REDACTED]"), "{observed}");
}

/// Opens `grant` (with `{root}` set) within a playbook's manifest.
fn open_within(site: &Site, playbook: &str, grant: &str) -> Result<salve::grant::Grant, salve::grant::GrantError> {
    let toml = grant.replace("{root}", &site.root.path().display().to_string());
    let playbook = crate::common::playbook(playbook);
    salve::grant::Grant::open(&salve::grant::GrantSpec::parse(&toml).unwrap(), playbook.manifest().unwrap())
}

#[test]
fn a_grant_cannot_widen_what_the_manifest_declares_for_exec_and_http() {
    let site = Site::new();
    site.write("work/.keep", "");
    let work = "[[fs]]\nname = \"work\"\npath = \"{root}/work\"\naccess = \"rw\"\n";
    let echo = |extra: &str, program: &str| {
        format!(
            "{work}[[exec]]\nprogram = \"{program}\"\nargv = [\"echo\", \"hello\", \"1\", \"{{path:work}}\"]\ncwd = \"work\"\n{extra}"
        )
    };
    let cases = [
        ("exec-escape", echo("", "/bin/echo"), None),
        ("exec-escape", echo("", "/usr/bin/perl"), Some("program /usr/bin/perl")),
        ("exec-escape", echo("env = { OPENSSL_CONF = \"/tmp/x\" }\n", "/bin/echo"), Some("OPENSSL_CONF may not be set for a program")),
        ("exec-escape", echo("env = { LANG = \"C\" }\n", "/bin/echo"), Some("setting LANG")),
        ("exec-escape", echo("env_allow = [\"LANG\"]\n", "/bin/echo"), Some("the playbook setting LANG")),
        ("exec-escape", echo("read_only = true\n", "/bin/echo"), Some("as read-only")),
        (
            "exec-escape",
            format!("{work}[[exec]]\nprogram = \"/bin/echo\"\nargv = [\"echo\", \"hello\", \"1\", \"work/../../etc\"]\ncwd = \"work\"\n"),
            Some("the command line echo hello 1 work/../../etc"),
        ),
        (
            "credential-probe",
            "[[http]]\nmethods = [\"GET\"]\nprefix = \"http://127.0.0.1:9/\"\ncredential = { name = \"probe-secret\", header = \"X-Leak\", prefix = \"Bearer \" }\n".into(),
            Some("with credential probe-secret"),
        ),
        (
            "credential-probe",
            "[[http]]\nmethods = [\"GET\"]\nprefix = \"https://attacker.example/\"\ncredential = { name = \"probe-secret\", header = \"Authorization\", prefix = \"Bearer \" }\n".into(),
            Some("https://attacker.example/"),
        ),
        (
            "credential-probe",
            "[[http]]\nmethods = [\"GET\"]\nprefix = \"http://10.0.0.5:9/\"\n".into(),
            Some("http://10.0.0.5:9/"),
        ),
        ("http-escape", "[[http]]\nmethods = [\"GET\"]\nprefix = \"http://169.254.169.254/\"\n".into(), Some("169.254.169.254")),
    ];
    for (playbook, grant, refused) in cases {
        match (open_within(&site, playbook, &grant), refused) {
            (Ok(_), None) => {}
            (Err(e), Some(expected)) => assert!(e.to_string().contains(expected), "{grant}\n{e}"),
            (result, expected) => panic!("{grant}\nexpected {expected:?}, got {:?}", result.err()),
        }
    }
}
