//! The nginx-upstream-repair playbook against a real nginx: the repair
//! succeeds and the site answers; a failed verification rolls back and nginx
//! serves exactly what it served before; the credential reaches the admin
//! API and nowhere else.

use crate::common::{Site, of_kind, phase_ends, phases};
use crate::servers::{NGINX, Nginx, Reply, TestServer, free_port};
use salve::run::{CauseKind, Outcome};

const SECRET: &str = "lb-admin-9f2c7e";

fn grant(nginx: &Nginx, admin: &TestServer) -> String {
    format!(
        r#"
        [[fs]]
        name = "conf"
        path = "{dir}"
        access = "rw"

        [[exec]]
        program = "{NGINX}"
        argv = ["nginx", "-p", "{{path:conf}}", "-c", "nginx.conf", "-t"]
        cwd = "conf"
        read_only = true

        [[exec]]
        program = "{NGINX}"
        argv = ["nginx", "-p", "{{path:conf}}", "-c", "nginx.conf", "-s", "reload"]
        cwd = "conf"

        [[http]]
        methods = ["GET"]
        prefix = "http://127.0.0.1:{port}/"
        timeout = "2s"

        [[http]]
        methods = ["POST"]
        prefix = "{admin}/api/upstreams/"
        credential = {{ name = "lb-admin", header = "Authorization", prefix = "Bearer " }}
        "#,
        dir = nginx.dir.display(),
        port = nginx.port,
        admin = admin.base()
    )
}

fn admin_server() -> TestServer {
    TestServer::start(|hit| {
        if hit.header("authorization") == Some(&format!("Bearer {SECRET}")) {
            Reply::Status(200, b"{}".to_vec())
        } else {
            Reply::Status(401, b"who are you?".to_vec())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn nginx_upstream_repair() {
    let upstream = TestServer::start(|_| Reply::Status(200, b"hello from the healthy upstream\n".to_vec()));
    let admin = admin_server();
    let site = Site::new().with_secrets(&[("lb-admin", SECRET)]);
    let nginx = Nginx::start(&site.root.path().join("nginx"), &format!("127.0.0.1:{}", free_port()));
    assert_eq!(nginx.get().0, 502, "the site is down before the repair");

    let params = [
        ("upstream", format!("127.0.0.1:{}", upstream.port)),
        ("health_url", format!("http://127.0.0.1:{}/", nginx.port)),
        ("expect", "healthy upstream".into()),
        ("admin_url", format!("{}/api/upstreams/backend", admin.base())),
    ];
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let report = site.run("nginx-upstream-repair", &grant(&nginx, &admin), &params).await;

    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}\n{}", report.outcome, nginx.error_log());
    // Old workers finish their connections after a reload: ask until the
    // new configuration answers (bounded), then compare.
    let healthy = (200, b"hello from the healthy upstream\n".to_vec());
    assert_eq!(nginx.wait_for(&healthy), healthy, "the site answers again");
    let conf = std::fs::read_to_string(nginx.dir.join("nginx.conf")).unwrap();
    assert!(conf.contains(&format!("server 127.0.0.1:{};", upstream.port)), "{conf}");
    // The admin API got the credential; nothing the playbook or the
    // auditors see holds it.
    let hits = admin.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].method.as_str(), hits[0].path.as_str()), ("POST", "/api/upstreams/backend"));
    assert!(String::from_utf8_lossy(&hits[0].body).contains(&format!("127.0.0.1:{}", upstream.port)));
    assert_eq!(hits[0].header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    let log = std::fs::read_to_string(site.data().join("audit.jsonl")).unwrap();
    assert!(!log.contains(SECRET), "the audit log holds the credential");
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "ok"), ("verify", "ok")]));
    let execs: Vec<_> = of_kind(&records, "call").into_iter().filter(|c| c["interface"] == "exec").collect();
    assert_eq!(execs.len(), 2, "nginx -t, then nginx -s reload");
    assert!(execs.iter().all(|c| c["result"]["status"] == 0));
    assert!(of_kind(&records, "output").iter().all(|o| !o["text"].as_str().unwrap().contains(SECRET)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_upstream_repair_rolls_back_when_the_site_still_fails() {
    let broken = TestServer::start(|_| Reply::Status(500, b"still broken\n".to_vec()));
    let admin = admin_server();
    let site = Site::new().with_secrets(&[("lb-admin", SECRET)]);
    let nginx = Nginx::start(&site.root.path().join("nginx"), &format!("127.0.0.1:{}", free_port()));
    let served_before = nginx.get();
    assert_eq!(served_before.0, 502);
    let conf_before = std::fs::read(nginx.dir.join("nginx.conf")).unwrap();

    let params = [
        ("upstream", format!("127.0.0.1:{}", broken.port)),
        ("health_url", format!("http://127.0.0.1:{}/", nginx.port)),
        ("admin_url", format!("{}/api/upstreams/backend", admin.base())),
    ];
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let report = site.run("nginx-upstream-repair", &grant(&nginx, &admin), &params).await;

    let Outcome::RolledBack { cause } = &report.outcome else {
        panic!("expected a rollback, got {:?}\n{}", report.outcome, nginx.error_log());
    };
    assert_eq!((cause.phase.name(), &cause.kind), ("verify", &CauseKind::Error));
    assert!(cause.message.contains("status 500"), "{cause}");
    assert_eq!(std::fs::read(nginx.dir.join("nginx.conf")).unwrap(), conf_before, "the configuration is back");
    assert_eq!(nginx.wait_for(&served_before), served_before, "nginx serves exactly what it served before");
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "ok"), ("verify", "error"), ("rollback", "ok")]));
    let reloads = of_kind(&records, "call")
        .into_iter()
        .filter(|c| c["args"]["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == "reload")))
        .count();
    assert_eq!(reloads, 2, "reloaded by apply, and again by rollback");
    assert_eq!(admin.hits().len(), 2, "the admin API heard of the change and of its undoing");
}
