//! Integration test harness: a real nginx loading the built module, a real redis-server, a
//! fake upstream, and a raw HTTP/1.1 client — std only.
//!
//! Binaries come from the environment (set by `scripts/test.sh`; a missing one is a failure,
//! never a skip): `SHIELD_NGINX_BIN` (nginx), `SHIELD_MODULE` (the `.so`), optional
//! `SHIELD_REDIS_BIN` (default `redis-server`).
//!
//! Config placeholders in an http block: `%%PORT%%` (a free port for this nginx),
//! `%%TMP%%` (its prefix dir), `%%HTML%%` (a docroot with index.html, static.txt, app.js,
//! style.css, page.html) and `%%NAME%%` for each `.var("NAME", value)`.
//!
//! Every `Nginx` checks on drop that its error.log has no `[alert]`, `[crit]`, `[emerg]` or
//! panic line (patterns passed to `allow_log` excepted).

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// ports and temp dirs

/// A free loopback port, never handed out twice in one test process.
pub fn free_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut used = USED.lock().unwrap();
        if used.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free port");
}

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shield-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            Instant::now().elapsed().as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SHIELD_KEEP_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

pub fn env_path(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test.sh"))
}

pub fn nginx_bin() -> String {
    env_path("SHIELD_NGINX_BIN")
}

fn wait_for_port(port: u16, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

// ---------------------------------------------------------------------------------------
// nginx

pub struct NginxBuilder {
    http: String,
    main: String,
    workers: u32,
    vars: Vec<(String, String)>,
    module: bool,
}

pub struct Nginx {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    vars: Vec<(String, String)>,
    allowed: Mutex<Vec<String>>,
}

impl Nginx {
    pub fn builder() -> NginxBuilder {
        NginxBuilder { http: String::new(), main: String::new(), workers: 2, vars: Vec::new(), module: true }
    }

    pub fn start(http: &str) -> Nginx {
        Nginx::builder().http(http).start()
    }

    pub fn var_port(&self, name: &str) -> u16 {
        self.vars.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok()).expect("port var")
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Reads a log file in the prefix once it has at least `lines` lines (nginx writes the
    /// access log after the response has been sent), waiting at most 5 s.
    pub fn wait_log(&self, name: &str, lines: usize) -> String {
        let path = self.dir.path().join(name);
        let start = Instant::now();
        loop {
            let text = fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() >= lines || start.elapsed() > Duration::from_secs(5) {
                return text;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Expected error.log content (e.g. a refused upstream) that must not fail the test.
    pub fn allow_log(&self, pattern: &str) {
        self.allowed.lock().unwrap().push(pattern.to_string());
    }

    fn signal(&self, sig: &str) {
        let status = Command::new(nginx_bin())
            .args(["-p", self.dir.path().to_str().unwrap(), "-c", self.conf_path().to_str().unwrap(), "-s", sig])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "nginx -s {sig} failed");
    }

    /// `nginx -s reopen` (USR1); returns once the master and `workers` workers reopened.
    pub fn reopen(&self, workers: usize) {
        let before = self.error_log().matches("reopening logs").count();
        self.signal("reopen");
        let start = Instant::now();
        while self.error_log().matches("reopening logs").count() < before + 1 + workers {
            assert!(start.elapsed() < Duration::from_secs(10), "reopen not logged:\n{}", self.error_log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful reload; returns once new workers have been started.
    pub fn reload(&self) {
        let before = self.error_log().matches("start worker process").count();
        self.signal("reload");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.error_log().matches("start worker process").count() > before {
                thread::sleep(Duration::from_millis(200));
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("reload did not start new workers:\n{}", self.error_log());
    }

    /// Rewrites nginx.conf with a new http block (same ports and vars) and reloads.
    pub fn reload_with(&mut self, http: &str) {
        let conf = render_conf(self.dir.path(), self.port, &self.vars, http, "", 2, true);
        fs::write(self.conf_path(), conf).unwrap();
        self.reload();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-QUIT", &child.id().to_string()]).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The worker processes' ids: the master's (from nginx.pid) children.
    pub fn worker_pids(&self) -> Vec<u32> {
        let master = fs::read_to_string(self.dir.path().join("nginx.pid")).unwrap_or_default().trim().to_string();
        let mut workers = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(master.as_str()) {
                workers.push(pid);
            }
        }
        workers
    }

    /// Lines of error.log that make a test fail.
    pub fn bad_log_lines(&self) -> Vec<String> {
        let allowed = self.allowed.lock().unwrap().clone();
        bad_lines(&self.error_log(), &allowed)
    }
}

pub fn bad_lines(log: &str, allowed: &[String]) -> Vec<String> {
    log.lines()
        .filter(|l| {
            (l.contains("[alert]") || l.contains("[crit]") || l.contains("[emerg]") || l.contains("panic"))
                && !allowed.iter().any(|a| l.contains(a.as_str()))
        })
        .map(str::to_string)
        .collect()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        let bad = self.bad_log_lines();
        if thread::panicking() {
            eprintln!("--- error.log of the failed test ---\n{}", self.error_log());
            return;
        }
        assert!(bad.is_empty(), "error.log has alerts/crits/panics:\n{}", bad.join("\n"));
    }
}

fn render_conf(
    dir: &Path,
    port: u16,
    vars: &[(String, String)],
    http: &str,
    main: &str,
    workers: u32,
    module: bool,
) -> String {
    let d = dir.display();
    let mut http = http
        .replace("%%PORT%%", &port.to_string())
        .replace("%%TMP%%", &d.to_string())
        .replace("%%HTML%%", &format!("{d}/html"));
    for (k, v) in vars {
        http = http.replace(&format!("%%{k}%%"), v);
    }
    let load = if module { format!("load_module {};\n", env_path("SHIELD_MODULE")) } else { String::new() };
    // Workers run as the invoking user's peer: as root, nginx would switch to nobody, who
    // cannot read the test's temp dir.
    let user = if is_root() && !main.contains("user ") { "user root;" } else { "" };
    format!(
        "{load}{user}\ndaemon off;\nmaster_process on;\nworker_processes {workers};\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n{main}\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         types {{ text/html html; text/plain txt; application/javascript js; text/css css; application/json json; image/png png; }}\n\
         {http}\n}}\n"
    )
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

fn prepare_dir(dir: &Path) {
    fs::create_dir_all(dir.join("logs")).unwrap();
    let html = dir.join("html");
    fs::create_dir_all(&html).unwrap();
    for (name, body) in [
        ("index.html", "hello from shield test\n"),
        ("static.txt", "static text\n"),
        ("app.js", "console.log('app');\n"),
        ("style.css", "body{}\n"),
        ("page.html", "<html><body>page</body></html>\n"),
    ] {
        fs::write(html.join(name), body).unwrap();
    }
}

impl NginxBuilder {
    pub fn http(mut self, http: &str) -> Self {
        self.http = http.to_string();
        self
    }
    pub fn main_conf(mut self, main: &str) -> Self {
        self.main = main.to_string();
        self
    }
    pub fn worker_processes(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }
    pub fn without_module(mut self) -> Self {
        self.module = false;
        self
    }

    pub fn start(self) -> Nginx {
        let dir = TempDir::new();
        prepare_dir(dir.path());
        let port = free_port();
        let conf = render_conf(dir.path(), port, &self.vars, &self.http, &self.main, self.workers, self.module);
        fs::write(dir.path().join("nginx.conf"), &conf).unwrap();
        let child = Command::new(nginx_bin())
            .args(["-p", dir.path().to_str().unwrap(), "-c", dir.path().join("nginx.conf").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(dir.path().join("stderr.log")).unwrap()))
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { port, dir, child: Some(child), vars: self.vars, allowed: Mutex::new(Vec::new()) };
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = nginx.child.as_mut().map(|c| c.try_wait()) {
                let stderr = fs::read_to_string(nginx.dir.path().join("stderr.log")).unwrap_or_default();
                nginx.child = None;
                panic!("nginx exited ({status}):\n{stderr}\n{}\nconf:\n{conf}", nginx.error_log());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("nginx did not listen on {port}:\n{}", nginx.error_log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        nginx
    }
}

/// Runs `nginx -t` on a config built like `Nginx::start`'s; returns (ok, output).
pub fn nginx_test_config(http: &str) -> (bool, String) {
    let dir = TempDir::new();
    prepare_dir(dir.path());
    let conf = render_conf(dir.path(), free_port(), &[], http, "", 1, true);
    let path = dir.path().join("nginx.conf");
    fs::write(&path, conf).unwrap();
    let out = Command::new(nginx_bin())
        // `-e stderr`: the log nginx uses before the configuration's own is open goes to
        // stderr, notices included, whatever the build's default error log path (Debian's is
        // absolute, the vendored build's is relative to the prefix).
        .args(["-t", "-e", "stderr", "-p", dir.path().to_str().unwrap(), "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Asserts `nginx -t` fails with an `[emerg]` line containing `expected` and naming the
/// config file and line.
pub fn assert_config_error(http: &str, expected: &str) {
    let (ok, out) = nginx_test_config(http);
    assert!(!ok, "nginx -t accepted {http:?}:\n{out}");
    let emerg = out.lines().find(|l| l.contains("[emerg]")).unwrap_or_else(|| panic!("no [emerg] line:\n{out}"));
    assert!(emerg.contains(expected), "[emerg] line lacks {expected:?}:\n{emerg}");
    let located = emerg.rsplit_once("nginx.conf:").map(|(_, n)| n.chars().next().is_some_and(|c| c.is_ascii_digit()));
    assert_eq!(located, Some(true), "[emerg] line lacks file:line:\n{emerg}");
}

// ---------------------------------------------------------------------------------------
// HTTP client

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }
}

pub fn http_get(port: u16, path: &str) -> Response {
    http_request(port, "GET", path, &[], None)
}

pub fn http_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    try_http_request(port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn try_http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req.push_str("Host: localhost\r\n");
    }
    if !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !has("content-length") && !has("transfer-encoding") {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    if let Some(b) = body {
        raw.extend_from_slice(b);
    }
    try_http_raw(port, &raw, method == "HEAD")
}

pub fn http_raw(port: u16, raw: &[u8]) -> Response {
    try_http_raw(port, raw, false).unwrap_or_else(|e| panic!("raw request: {e}"))
}

pub fn try_http_raw(port: u16, raw: &[u8], head: bool) -> Result<Response, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    // Read until the response is complete (or EOF); Connection: close makes EOF the usual end.
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(resp) = parse_response(&buf, head)? {
            return Ok(resp);
        }
        match s.read(&mut chunk) {
            Ok(0) => return parse_response_eof(&buf, head),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // SIGCHLD from another test's nginx interrupts blocking reads.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e} after {} bytes", buf.len())),
        }
    }
}

/// Header names and values, in the order received.
type HeaderList = Vec<(String, String)>;

/// The end of a response's head, its status and its headers, once the head is complete.
fn split_head(buf: &[u8]) -> Option<(usize, u16, HeaderList)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Some((end + 4, status, headers))
}

/// A complete response in `buf`, or None if more bytes are needed.
fn parse_response(buf: &[u8], head_only: bool) -> Result<Option<Response>, String> {
    let Some((start, status, headers)) = split_head(buf) else { return Ok(None) };
    let resp = |body: Vec<u8>| Response { status, headers: headers.clone(), body };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some(resp(Vec::new())));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Ok(dechunk(&buf[start..])?.map(resp));
    }
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| "bad content-length")?;
        return Ok((buf.len() >= start + len).then(|| resp(buf[start..start + len].to_vec())));
    }
    Ok(None)
}

fn parse_response_eof(buf: &[u8], head: bool) -> Result<Response, String> {
    if let Some(r) = parse_response(buf, head)? {
        return Ok(r);
    }
    let (start, status, headers) =
        split_head(buf).ok_or_else(|| format!("incomplete response: {:?}", String::from_utf8_lossy(buf)))?;
    Ok(Response { status, headers, body: buf[start..].to_vec() })
}

fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// HTTPS GET through curl (the harness has no TLS client of its own).
pub fn https_get_with_curl(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-i", "--max-time", "5", &format!("https://127.0.0.1:{port}{path}")]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    let out = cmd.output().expect("curl");
    parse_response_eof(&out.stdout, false).unwrap_or_else(|e| panic!("curl: {e}"))
}

pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    (cert, key)
}

/// Runs `n` requests with at most `concurrency` in flight, bounded by `deadline`.
pub fn parallel<T: Send + 'static>(
    n: usize,
    concurrency: usize,
    deadline: Duration,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let next = Arc::new(AtomicU64::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (f, next, results) = (f.clone(), next.clone(), results.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n || start.elapsed() > deadline {
                    return;
                }
                let r = f(i);
                results.lock().unwrap().push(r);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(results).ok().unwrap().into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------
// fake upstream

#[derive(Debug, Clone, Default)]
pub struct UpstreamRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct CannedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct Upstream {
    pub port: u16,
    requests: Arc<Mutex<Vec<UpstreamRequest>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    pub fn start(handler: impl Fn(&UpstreamRequest) -> CannedResponse + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = Arc::new(handler);
        let (reqs, stop2) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (handler, reqs) = (handler.clone(), reqs.clone());
                        thread::spawn(move || serve_upstream(stream, &*handler, &reqs));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Upstream { port, requests, stop }
    }

    pub fn requests(&self) -> Vec<UpstreamRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_upstream(
    mut s: TcpStream,
    handler: &dyn Fn(&UpstreamRequest) -> CannedResponse,
    reqs: &Mutex<Vec<UpstreamRequest>>,
) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let req = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
            let body_start = end + 4;
            let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                match dechunk(&buf[body_start..]) {
                    Ok(Some(b)) => Some(b),
                    _ => None,
                }
            } else {
                let len: usize = get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                (buf.len() >= body_start + len).then(|| buf[body_start..body_start + len].to_vec())
            };
            if let Some(body) = body {
                break UpstreamRequest {
                    method: first.first().unwrap_or(&"").to_string(),
                    path: first.get(1).unwrap_or(&"").to_string(),
                    headers,
                    body,
                };
            }
        }
        match s.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let resp = handler(&req);
    reqs.lock().unwrap().push(req);
    let mut out = format!("HTTP/1.1 {} X\r\n", resp.status);
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", resp.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&resp.body);
    let _ = s.write_all(&bytes);
}

/// An upstream that answers 200 with the request body echoed back.
pub fn echo_upstream() -> Upstream {
    Upstream::start(|req| CannedResponse {
        status: 200,
        headers: vec![("Content-Type".into(), "application/octet-stream".into())],
        body: req.body.clone(),
    })
}

// ---------------------------------------------------------------------------------------
// redis

pub struct Redis {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    /// The server also listens on this Unix socket (inside its private directory).
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn start() -> Redis {
        let mut r = Redis { port: free_port(), dir: TempDir::new(), child: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let bin = std::env::var("SHIELD_REDIS_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.try_command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Same port, fresh process (data is not persisted).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// A connection through the `redis` crate, for tests that need more than `command`.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(con)
    }

    /// Sends one command; returns the reply as text: `+OK`, `:5`, `-ERR ...`, a bulk string's
    /// content, `(nil)`, or an array's elements joined with `\n`.
    pub fn try_command(&self, args: &[&str]) -> Result<String, String> {
        let mut con = self.connection().map_err(|e| e.to_string())?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        match cmd.query::<redis::Value>(&mut con) {
            Ok(v) => Ok(reply_text(&v)),
            Err(e) if e.kind() == redis::ErrorKind::IoError => Err(e.to_string()),
            Err(e) => Ok(format!("-{}", e.code().unwrap_or("ERR"))),
        }
    }

    /// The server's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server running").id()
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing, as a stalled Redis does.
    pub fn pause(&self) {
        assert!(Command::new("kill").args(["-STOP", &self.pid().to_string()]).status().unwrap().success());
    }

    pub fn resume(&self) {
        assert!(Command::new("kill").args(["-CONT", &self.pid().to_string()]).status().unwrap().success());
    }
}

fn reply_text(v: &redis::Value) -> String {
    match v {
        redis::Value::Okay => "+OK".into(),
        redis::Value::SimpleString(s) => format!("+{s}"),
        redis::Value::Int(n) => format!(":{n}"),
        redis::Value::Nil => "(nil)".into(),
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Array(items) => items.iter().map(reply_text).collect::<Vec<_>>().join("\n"),
        other => format!("{other:?}"),
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// a real browser

/// Loads `url` (a page on a loopback test nginx) in headless Chromium and returns the DOM once
/// its scripts have run. `--virtual-time-budget` lets pending `fetch()`es finish before the
/// dump; `timeout` bounds the whole run; the resolver maps every host but 127.0.0.1 to
/// nothing and background networking is off, so the browser only ever talks to loopback.
/// `SHIELD_CHROMIUM` overrides the binary (default `chromium`); a missing one is a failure.
pub fn chromium_dom(url: &str) -> String {
    chromium_dom_reaching(url, &[])
}

/// `chromium_dom` for a page that also reaches other loopback addresses (`127.0.0.2` is
/// another site to the browser: a cross-site request that stays on loopback).
pub fn chromium_dom_reaching(url: &str, loopback: &[&str]) -> String {
    assert!(url.starts_with("http://127.0.0.1:"), "browser tests stay on loopback: {url}");
    assert!(loopback.iter().all(|a| a.starts_with("127.")), "loopback only: {loopback:?}");
    let exclude: String = loopback.iter().map(|a| format!(", EXCLUDE {a}")).collect();
    let profile = TempDir::new();
    let out = Command::new("timeout")
        .arg("30")
        .arg(std::env::var("SHIELD_CHROMIUM").unwrap_or_else(|_| "chromium".into()))
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-proxy-server"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--disable-extensions", "--disable-dev-shm-usage", "--virtual-time-budget=10000"])
        .arg(format!("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1{exclude}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium (apt-get install chromium)");
    assert!(out.status.success(), "chromium failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod selftest {
    #[test]
    fn log_scan_flags_alerts_and_panics_only() {
        let log = "2026/01/01 [notice] 1#1: start\n2026/01/01 [alert] 1#1: boom\n[error] x\nthread panicked at y\n";
        assert_eq!(super::bad_lines(log, &[]).len(), 2);
        assert_eq!(super::bad_lines(log, &["boom".into()]).len(), 1);
    }
}
