//! Real servers the tests start on loopback: a small HTTP server with
//! scripted replies, and nginx (Debian's package) in a temporary directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the server answers a request.
pub enum Reply {
    Status(u16, Vec<u8>),
    Redirect(String),
    /// Headers that promise this many bytes, then bytes until the client
    /// goes away.
    Huge(u64),
    /// Never answers (until the server stops).
    Hang,
    /// The request's headers, as the body.
    Echo,
    /// A status, extra header lines (each ending in CRLF), and a body.
    With(u16, String, Vec<u8>),
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct TestServer {
    pub port: u16,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
}

fn read_request(stream: &mut TcpStream) -> Option<Hit> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let length =
        headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok());
    let mut body = vec![0; length.unwrap_or(0)];
    reader.read_exact(&mut body).ok()?;
    Some(Hit { method, path, headers, body })
}

fn respond(stream: &mut TcpStream, hit: &Hit, reply: Reply, stop: &AtomicBool) {
    let simple = |stream: &mut TcpStream, status: u16, extra: &str, body: &[u8]| {
        let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n", body.len());
        let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
    };
    match reply {
        Reply::Status(status, body) => simple(stream, status, "", &body),
        Reply::With(status, extra, body) => simple(stream, status, &extra, &body),
        Reply::Redirect(location) => simple(stream, 302, &format!("Location: {location}\r\n"), b""),
        Reply::Echo => {
            let body: String = hit.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
            simple(stream, 200, "", body.as_bytes());
        }
        Reply::Huge(total) => {
            let head = format!("HTTP/1.1 200 X\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'z'; 64 << 10];
            let mut sent = 0;
            if stream.write_all(head.as_bytes()).is_ok() {
                while sent < total && !stop.load(Ordering::Relaxed) && stream.write_all(&chunk).is_ok() {
                    sent += chunk.len() as u64;
                }
            }
        }
        Reply::Hang => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl TestServer {
    /// Starts a server on a free loopback port; `route` decides each reply.
    pub fn start(route: impl Fn(&Hit) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let route = Arc::new(route);
        let (h, s) = (Arc::clone(&hits), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let (h, s, route) = (Arc::clone(&h), Arc::clone(&s), Arc::clone(&route));
                std::thread::spawn(move || {
                    if let Some(hit) = read_request(&mut stream) {
                        h.lock().unwrap().push(hit.clone());
                        respond(&mut stream, &hit, route(&hit), &s);
                    }
                });
            }
        });
        TestServer { port, hits, stop }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

/// A GET over a fresh connection: status and body.
pub fn get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&response[..split]).split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response[split + 4..].to_vec()))
}

/// nginx, run by the test in a temporary directory on a free loopback port,
/// proxying `/` to the upstream block `backend`.
pub struct Nginx {
    pub dir: PathBuf,
    pub port: u16,
    child: Child,
}

pub const NGINX: &str = "/usr/sbin/nginx";

impl Nginx {
    pub fn start(dir: &Path, upstream: &str) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "nginx is not installed at {NGINX}: scripts/test.sh installs it (apt-get install nginx-light)"
        );
        let port = free_port();
        std::fs::create_dir_all(dir.join("temp")).unwrap();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n    access_log off;\n\
             \x20   client_body_temp_path {d}/temp/body;\n    proxy_temp_path {d}/temp/proxy;\n\
             \x20   fastcgi_temp_path {d}/temp/fastcgi;\n    uwsgi_temp_path {d}/temp/uwsgi;\n\
             \x20   scgi_temp_path {d}/temp/scgi;\n\
             \x20   upstream backend {{\n        server {upstream};\n    }}\n\
             \x20   server {{\n        listen 127.0.0.1:{port};\n\
             \x20       location / {{ proxy_pass http://backend; proxy_connect_timeout 2s; }}\n    }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .args(["-c", "nginx.conf"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start nginx");
        let nginx = Nginx { dir: dir.to_path_buf(), port, child };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "nginx did not start: {:?}", nginx.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn get(&self) -> (u16, Vec<u8>) {
        get(self.port, "/").expect("nginx answers")
    }

    /// Polls until nginx serves `expected` (a reload takes a moment), or
    /// gives up after a while; returns what it served last.
    pub fn wait_for(&self, expected: &(u16, Vec<u8>)) -> (u16, Vec<u8>) {
        let started = Instant::now();
        loop {
            let served = self.get();
            if served == *expected || started.elapsed() > Duration::from_secs(10) {
                return served;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `-s stop` makes the master stop its workers too.
        let _ = Command::new(NGINX).arg("-p").arg(&self.dir).args(["-c", "nginx.conf", "-s", "stop"]).status();
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
