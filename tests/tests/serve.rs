//! `--serve` with real clients over real sockets, on SQLite, PostgreSQL and MariaDB: the line
//! protocol (pipelined, concurrent, malformed), HTTP, the token rule, unix sockets and stdio,
//! SIGTERM under load, and a database that stops and comes back under a running service.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use commondb::protocol::listen::{HTTP, STDIO, TCP};
use commondb::protocol::{AUTH, HEALTH_PATH, METRICS_PATH};
use e2e::{Answer, Backend, BackendSandbox, LineClient, Sandbox, http, on_every_backend, result};

const EXE: &str = "create-user";
const ANY_PORTS: [&str; 4] = [
    "--listen",
    "tcp://127.0.0.1:0",
    "--listen",
    "http://127.0.0.1:0",
];

on_every_backend!(
    a_thousand_pipelined_requests_are_answered_in_order,
    two_hundred_concurrent_connections_are_all_served,
    http_answers_with_fitting_status_codes,
    sigterm_under_load_loses_nothing_and_answers_every_request_read,
);

fn set_up(backend: Backend) -> Option<BackendSandbox> {
    let sb = BackendSandbox::new(backend)?;
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    Some(sb)
}

/// Connects `n` clients to `addr`, then, once all are connected, runs `work` on each in a thread
/// of its own; returns what each returned, in client order.
fn connected_at_once<R: Send>(
    addr: &str,
    n: usize,
    work: impl Fn(usize, &mut LineClient) -> R + Sync,
) -> Vec<R> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    let mut client = LineClient::tcp(addr);
                    barrier.wait();
                    work(i, &mut client)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn users(sb: &BackendSandbox) -> i64 {
    sb.count(EXE, "SELECT COUNT(*) FROM users")
}

fn is_ok(answer: &Answer) -> bool {
    answer.ok
}

fn a_thousand_pipelined_requests_are_answered_in_order(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    let served = sb.serve(EXE, &ANY_PORTS);
    let mut client = served.client();
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!(
            "--create --username pp{i} --email pp{i}@example.com\n"
        ));
    }
    client.send(batch.as_bytes()).unwrap();
    for i in 0..1000 {
        let answer = client.recv().expect("an answer per request");
        assert!(is_ok(&answer), "request {i}: {answer}");
        assert_eq!(
            result(&answer)["username"],
            format!("pp{i}"),
            "out of order"
        );
    }
    assert_eq!(users(&sb), 1000);
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

fn two_hundred_concurrent_connections_are_all_served(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    let served = sb.serve(EXE, &ANY_PORTS);
    let addr = served.address(TCP);
    // All 200 connect first, then all send: 200 connections open at once.
    let answers: Vec<Answer> = connected_at_once(&addr, 200, |i, client| {
        client.call(&format!(
            r#"{{"username": "cc{i}", "email": "cc{i}@example.com"}}"#
        ))
    });
    let failed: Vec<_> = answers.iter().filter(|a| !is_ok(a)).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {}",
        failed.len(),
        failed[0]
    );
    assert_eq!(users(&sb), 200);
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

fn http_answers_with_fitting_status_codes(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    let served = sb.serve(EXE, &ANY_PORTS);
    let addr = served.address(HTTP);
    let post = |body: &str| http(&addr, "POST", "/create", &[], body.as_bytes());

    let (status, body) = post(r#"{"username": "alice", "email": "alice@example.com"}"#);
    assert_eq!(status, 201, "{body}");
    assert_eq!(result(&e2e::answer(&body))["username"], "alice");
    let (status, body) = post(r#"{"username": "alice", "email": "other@example.com"}"#);
    assert_eq!(status, 409, "{body}");
    let error = e2e::answer(&body).error;
    assert_eq!(error.map(|e| e.exit_code), Some(73), "{body}");
    let (status, body) = post(r#"{"username": "bob", "email": "not-an-address"}"#);
    assert_eq!(status, 422, "{body}");
    let (status, body) = post("{not json");
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(r#"{"username": "bob"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--email"), "{body}");
    // A password travels in the body's "stdin", never as an argument.
    let (status, body) = post(
        r#"{"username": "carol", "email": "carol@example.com", "password_stdin": true, "stdin": "correct horse"}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"has_password\":true"), "{body}");
    assert!(!served.stderr().contains("correct horse"));

    let (status, body) = http(&addr, "POST", "/create", &[], &vec![b' '; 70_000]);
    assert_eq!(status, 413, "{body}");
    assert_eq!(http(&addr, "GET", HEALTH_PATH, &[], b"").0, 200);
    assert_eq!(http(&addr, "GET", "/nothing", &[], b"").0, 404);
    assert_eq!(http(&addr, "GET", "/create", &[], b"").0, 405);
    let (status, metrics) = http(&addr, "GET", METRICS_PATH, &[], b"");
    assert_eq!(status, 200);
    for line in [
        "commondb_requests_total{executable=\"create-user\",outcome=\"ok\"} 2",
        "commondb_requests_total{executable=\"create-user\",outcome=\"conflict\"} 1",
        "commondb_requests_total{executable=\"create-user\",outcome=\"invalid_input\"} 1",
        "commondb_request_duration_seconds_count{executable=\"create-user\"} 6",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("commondb_pool_connections{executable=\"create-user\",state=\"idle\"}")
    );
    assert_eq!(users(&sb), 2);
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// Clients send requests one after another, each on its own connection, until the server
/// closes them; SIGTERM arrives in the middle. Every request the server read is answered, and
/// the rows in the database are exactly the `ok` answers.
fn sigterm_under_load_loses_nothing_and_answers_every_request_read(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    let served = sb.serve(EXE, &["--listen", "tcp://127.0.0.1:0"]);
    let addr = served.address(TCP);
    let oks = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (addr, oks, errors) = (addr.clone(), Arc::clone(&oks), Arc::clone(&errors));
            std::thread::spawn(move || {
                let mut client = LineClient::tcp(&addr);
                for i in 0.. {
                    let line = format!("--username t{c}x{i} --email t{c}x{i}@example.com\n");
                    if client.send(line.as_bytes()).is_err() {
                        return;
                    }
                    match client.recv() {
                        Some(answer) if is_ok(&answer) => oks.fetch_add(1, Ordering::SeqCst),
                        Some(answer) => {
                            assert_eq!(answer.kind(), Some("interrupted"), "{answer}");
                            errors.fetch_add(1, Ordering::SeqCst)
                        }
                        None => return,
                    };
                }
            })
        })
        .collect();
    // The SIGTERM comes once every client is under way: as many answers as a few rounds of all
    // eight clients.
    e2e::wait_for("the load to be under way", 30, || {
        (oks.load(Ordering::SeqCst) + errors.load(Ordering::SeqCst) >= 40).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", served.stderr()));
    let (code, stderr) = served.terminate();
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    let oks = oks.load(Ordering::SeqCst);
    assert!(oks > 0, "no request was served before the SIGTERM");
    assert_eq!(
        users(&sb),
        i64::try_from(oks).unwrap(),
        "rows differ from the ok answers"
    );
}

#[test]
fn malformed_requests_are_answered_and_the_connection_stays_usable() {
    let sb = Sandbox::new();
    let served = sb.serve(EXE, &["--listen", "tcp://127.0.0.1:0"]);
    let mut client = served.client();
    let cases: [(&[u8], &str, &str); 9] = [
        (b"\xff\xfe --username x\n", "usage", "not UTF-8"),
        (b"--username 'open --email a@b.c\n", "usage", "quoting"),
        (b"{\"username\": \n", "usage", "not valid JSON"),
        (
            b"{\"username\": [\"x\", {}]}\n",
            "usage",
            "must be a string",
        ),
        (b"--self-setup\n", "usage", "--self-setup is not served"),
        (b"--serve\n", "usage", "--serve is not served"),
        (b"--username x --email a@b.c --bogus\n", "usage", "--bogus"),
        (b"\n", "usage", "empty"),
        (
            b"--username 9bad --email a@b.c\n",
            "invalid_input",
            "not valid",
        ),
    ];
    for (line, kind, says) in cases {
        client.send(line).unwrap();
        let answer = client.recv().expect("an answer");
        assert!(!answer.ok, "{answer}");
        assert_eq!(answer.kind(), Some(kind), "{answer}");
        let message = &answer.error.expect("an error").message;
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let answer = client.call("--create --username alice --email alice@example.com");
    assert!(is_ok(&answer), "{answer}");

    // An oversized line is answered, then the connection is closed.
    let mut long = vec![b'x'; 65 * 1024];
    long.push(b'\n');
    let _ = client.send(&long);
    let answer = client.recv().expect("an answer to the long line");
    let error = answer.error.as_ref().expect("an error");
    assert!(error.message.contains("longer than 65536"), "{answer}");
    assert!(client.recv().is_none(), "the connection stays open");
    // The service goes on for others.
    let answer = served
        .client()
        .call("--username bob --email bob@example.com");
    assert!(is_ok(&answer), "{answer}");
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// A request whose newline never came before the client closed is not executed: the client may
/// have been cut off mid-line.
#[test]
fn a_last_line_without_its_newline_is_not_executed() {
    use std::io::Read;
    let sb = Sandbox::new();
    let served = sb.serve(EXE, &["--listen", "tcp://127.0.0.1:0"]);
    let mut stream = std::net::TcpStream::connect(served.address(TCP)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(b"--username ghost --email ghost@example.com")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    assert!(
        answer.is_empty(),
        "the incomplete line was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    // Had it run, this would be a conflict.
    let answer = served
        .client()
        .call("--username ghost --email ghost@example.com");
    assert!(is_ok(&answer), "{answer}");
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// A client that sends a whole HTTP request and then shuts its side down (as `curl` can, and
/// many one-shot clients do) still gets its answer: without it, the request committed and the
/// client never learnt so.
#[test]
fn an_http_client_that_half_closes_after_its_request_gets_the_answer() {
    use std::io::Read;
    let sb = Sandbox::new();
    let served = sb.serve(EXE, &["--listen", "http://127.0.0.1:0"]);
    let addr = served.address(HTTP);
    let body = r#"{"username": "half", "email": "half@example.com"}"#;
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "no answer: {answer:?}");
    assert!(answer.contains("\"username\":\"half\""), "{answer}");
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// `--listen` takes no user or password, and never shows one back.
#[test]
fn a_listen_address_with_credentials_is_refused_without_showing_them() {
    let sb = Sandbox::new();
    for spec in [
        "http://user:hunter2@127.0.0.1:0",
        "tcp://hunter2@127.0.0.1:0",
    ] {
        sb.run(EXE, &["--serve", "--listen", spec])
            .code(2)
            .stderr_has("takes no user or password")
            .never_shows("hunter2");
    }
}

#[test]
fn limits_on_connections_and_idle_time_are_kept() {
    let mut sb = Sandbox::new();
    sb.set_env("COMMONDB_SERVE__MAX_CONNECTIONS", "2");
    sb.set_env("COMMONDB_SERVE__IDLE_TIMEOUT_MS", "500");
    let served = sb.serve(EXE, &["--listen", "tcp://127.0.0.1:0"]);
    let mut first = served.client();
    let mut second = served.client();
    assert!(is_ok(&first.call("--username aa1 --email aa1@example.com")));
    assert!(is_ok(
        &second.call("--username aa2 --email aa2@example.com")
    ));
    let mut third = served.client();
    let refused = third.recv().expect("an answer before the close");
    assert_eq!(refused.kind(), Some("temporary"), "{refused}");
    assert!(third.recv().is_none());
    // Idle connections are closed after the idle timeout, which frees their slots. This sleep is
    // the test: the idle timeout (500 ms) must elapse for both connections, and a slot is freed
    // just after its connection closed, which no client can see; a new client is then served.
    std::thread::sleep(Duration::from_millis(900));
    assert!(first.recv().is_none(), "an idle connection stayed open");
    assert!(is_ok(
        &served
            .client()
            .call("--username aa3 --email aa3@example.com")
    ));
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// Off loopback in clear text: only with the operator's opt-out and a token, which clients
/// must present.
#[test]
fn a_non_loopback_address_needs_a_token_and_clients_must_present_it() {
    let mut sb = Sandbox::new();
    let public = ["--serve", "--listen", "tcp://0.0.0.0:0"];
    sb.run(EXE, &public)
        .code(78)
        .stderr_has("clear text")
        .stderr_has("serve.allow_plaintext");
    let token = "s3cret-token-0123456789";
    write_private(
        &sb.secrets_dir().join(format!("{EXE}.toml")),
        &format!("serve_token = \"{token}\"\n"),
    );
    // A token alone does not make clear text acceptable.
    sb.run(EXE, &public).code(78).stderr_has("clear text");
    sb.set_env("COMMONDB_SERVE__ALLOW_PLAINTEXT", "true");
    let served = sb.serve(
        EXE,
        &[
            "--listen",
            "tcp://0.0.0.0:0",
            "--listen",
            "http://0.0.0.0:0",
        ],
    );
    let port = |prefix: &str| {
        let addr = served.address(prefix);
        format!("127.0.0.1:{}", addr.rsplit_once(':').unwrap().1)
    };
    let mut anonymous = LineClient::tcp(&port(TCP));
    let answer = anonymous.call("--username anon --email anon@example.com");
    assert_eq!(answer.kind(), Some("permission"), "{answer}");
    assert!(anonymous.recv().is_none(), "kept a client without a token");
    let mut wrong = LineClient::tcp(&port(TCP));
    assert_eq!(
        wrong.call(&format!("{AUTH}not-the-token")).kind(),
        Some("permission")
    );
    let mut client = LineClient::tcp(&port(TCP));
    assert!(is_ok(&client.call(&format!("{AUTH}{token}"))));
    assert!(is_ok(
        &client.call("--username alice --email alice@example.com")
    ));

    let body = br#"{"username": "bob", "email": "bob@example.com"}"#;
    let (status, _) = http(&port(HTTP), "POST", "/create", &[], body);
    assert_eq!(status, 401);
    let bearer = format!("Bearer {token}");
    let (status, text) = http(
        &port(HTTP),
        "POST",
        "/create",
        &[("Authorization", &bearer)],
        body,
    );
    assert_eq!(status, 201, "{text}");
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0));
    assert!(!stderr.contains(token), "the token was logged: {stderr}");
    // The opt-out without a token: refused all the same.
    std::fs::remove_file(sb.secrets_dir().join(format!("{EXE}.toml"))).unwrap();
    sb.run(EXE, &public).code(78).stderr_has("no access token");
}

fn write_private(file: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = file.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(file, text).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_unix_socket_is_private_and_removed_at_exit() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let path = sb.root().join("create-user.sock");
    let spec = format!("unix:{}", path.display());
    let served = sb.serve(EXE, &["--listen", &spec]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut client = LineClient::unix(path.to_str().unwrap());
    assert!(is_ok(
        &client.call("--username alice --email alice@example.com")
    ));
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!path.exists(), "the socket file was left behind");
}

#[test]
fn stdio_serves_one_connection_and_exits() {
    let sb = Sandbox::new();
    let mut child = sb
        .command(EXE, &["--serve", "--listen", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"--username alice --email alice@example.com\n{\"username\": \"alice\", \"email\": \"b@example.com\"}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let answers: Vec<Answer> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(e2e::answer)
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(is_ok(&answers[0]));
    assert_eq!(answers[1].kind(), Some("conflict"));
    let ready = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(commondb::protocol::parse_ready_line);
    assert_eq!(
        ready.map(|r| r.addresses),
        Some(vec![STDIO.to_string()]),
        "{output:?}"
    );
}

/// A private PostgreSQL (never the shared one) is stopped and started again under a running
/// service: requests fail fast with "unavailable" while it is down, and succeed again once it
/// is back, without restarting the service.
#[test]
fn a_database_that_stops_and_comes_back_is_used_again() {
    if Backend::Postgres.admin_url().is_none() {
        return; // no PostgreSQL here at all (already reported)
    }
    let pg = PrivatePostgres::start();
    let mut sb = Sandbox::new();
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        format!("postgres://127.0.0.1:{}/served", pg.port),
    );
    sb.set_env("COMMONDB_CONNECT_TIMEOUT_MS", "2000");
    let mut setup = sb.command(EXE, &["--self-setup"]);
    setup.env("COMMONDB_ADMIN_URL", &admin);
    e2e::Run::of(setup, None).code(0);
    let served = sb.serve(EXE, &["--listen", "tcp://127.0.0.1:0"]);
    let mut client = served.client();
    assert!(is_ok(
        &client.call("--username before --email before@example.com")
    ));

    pg.stop();
    let asked = Instant::now();
    let answer = client.call("--username during --email during@example.com");
    assert_eq!(answer.kind(), Some("unavailable"), "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "a request took {:?} to fail while the database was down",
        asked.elapsed()
    );

    pg.start_again();
    let answer = client.call("--username after --email after@example.com");
    assert!(is_ok(&answer), "not recovered: {answer}");
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// A PostgreSQL of the test's own, from `scripts/dev-servers`, on a free port.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-servers")
    }

    fn run(&self, what: &str) {
        let status = std::process::Command::new(Self::script())
            .args([what, self.dir.path().to_str().unwrap()])
            .env("PG_PORT", self.port.to_string())
            .status()
            .expect("scripts/dev-servers runs");
        assert!(status.success(), "scripts/dev-servers {what} failed");
    }

    fn start() -> PrivatePostgres {
        let port = e2e::free_port();
        let pg = PrivatePostgres {
            dir: tempfile::Builder::new().prefix("pg-").tempdir().unwrap(),
            port,
        };
        pg.run("start-postgres");
        pg
    }

    fn stop(&self) {
        self.run("stop-postgres");
    }

    fn start_again(&self) {
        self.run("start-postgres");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// systemd's socket activation (`LISTEN_FDS`), through `systemd-socket-activate`, and the
/// readiness message on `NOTIFY_SOCKET`.
#[test]
fn systemd_sockets_are_served_and_readiness_is_notified() {
    let sb = Sandbox::new();
    let notify_path = sb.root().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = e2e::free_port();
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let Some(cmd) = socket_activated(&sb, &format!("127.0.0.1:{port}"), &[&notify_env]) else {
        return;
    };
    // The tool starts the program on the first connection, which then waits in the backlog:
    // the first client connects as soon as the tool listens.
    let first = std::thread::spawn(move || {
        LineClient::tcp_once_listening(&format!("127.0.0.1:{port}"))
            .call("--username first --email f@example.com")
    });
    let served = sb.serve_command(cmd);
    assert_eq!(served.addresses, [format!("tcp://127.0.0.1:{port}")]);
    assert!(is_ok(&first.join().unwrap()));
    let mut message = [0u8; 256];
    let n = notify
        .recv(&mut message)
        .expect("a message on NOTIFY_SOCKET");
    assert!(
        String::from_utf8_lossy(&message[..n]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&message[..n])
    );
    let mut client = LineClient::tcp(&format!("127.0.0.1:{port}"));
    assert!(is_ok(
        &client.call("--username alice --email alice@example.com")
    ));
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// `create-user --serve` under `systemd-socket-activate -l ADDRESS`, which binds the socket and
/// starts the program on the first connection; `None` (after a loud line) without the tool,
/// except with `CI=true`, where a missing tool fails the test (scripts/test installs it).
/// The tool passes on only the variables named with `--setenv`: the sandbox's and `extra`.
fn socket_activated(sb: &Sandbox, address: &str, extra: &[&str]) -> Option<std::process::Command> {
    let tool = e2e::tool("systemd-socket-activate", "systemd")?;
    let mut cmd = std::process::Command::new(tool);
    cmd.args(["-l", address])
        .args(sb.env().iter().map(|(k, v)| format!("--setenv={k}={v}")))
        .args(extra.iter().map(|kv| format!("--setenv={kv}")))
        .arg(e2e::bin(EXE))
        .arg("--serve")
        .env_clear()
        .envs(sb.env())
        .current_dir(sb.root())
        .stdin(Stdio::null());
    Some(cmd)
}

/// SIGTERM while requests wait behind a lock: after the grace period, a request that had not
/// sent its statement is answered `interrupted`; one whose statement was running is waited for
/// and answered with what the database said. Nothing is written, and the service exits 0.
#[test]
fn requests_in_flight_at_the_cut_are_answered_and_write_nothing() {
    let mut sb = Sandbox::new();
    sb.set_env("COMMONDB_SERVE__GRACE_MS", "300");
    sb.set_env("COMMONDB_BUSY_TIMEOUT_MS", "1500");
    sb.set_env("COMMONDB_SERVE__REQUEST_TIMEOUT_MS", "20000");
    sb.run(EXE, &["--self-setup"]).code(0);
    // HTTP only to watch the metrics.
    let served = sb.serve(EXE, &ANY_PORTS);
    let db = sb.database(EXE);
    // Another writer holds the database's write lock.
    let lock = WriteLock::hold(&db);
    // The first waits in its statement (the pool's one SQLite connection), the second for the
    // connection.
    let mut running = served.client();
    running
        .send(b"--username stuck --email stuck@example.com\n")
        .unwrap();
    // The writer took it (it holds the pool's connection), so the next request waits apart.
    served.wait_for_metric(
        "commondb_pool_connections{executable=\"create-user\",state=\"in_use\"}",
        1.0,
    );
    let mut waiting = served.client();
    waiting
        .send(b"--username queued --email queued@example.com\n")
        .unwrap();
    // Both were read: the drain stops only the reading of new requests.
    served.wait_for_metric(
        "commondb_requests_in_flight{executable=\"create-user\"}",
        2.0,
    );
    served.signal_term();
    let answer = waiting.recv().expect("an answer to the waiting request");
    assert_eq!(answer.kind(), Some("interrupted"), "{answer}");
    assert_eq!(answer.error.map(|e| e.exit_code), Some(130));
    let answer = running.recv().expect("an answer to the running request");
    assert_eq!(answer.kind(), Some("temporary"), "{answer}");
    let (code, stderr) = served.wait();
    assert_eq!(code, Some(0), "{stderr}");
    lock.release();
    assert_eq!(e2e::sqlite_count(&db, "SELECT COUNT(*) FROM users"), 0);
}

/// A SQLite write lock held by another connection (`BEGIN IMMEDIATE`) until released.
struct WriteLock {
    runtime: tokio::runtime::Runtime,
    conn: sqlx::SqliteConnection,
}

impl WriteLock {
    fn hold(db: &std::path::Path) -> WriteLock {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut conn = runtime.block_on(e2e::open_sqlite(db));
        runtime
            .block_on(sqlx::query("BEGIN IMMEDIATE").execute(&mut conn))
            .unwrap();
        WriteLock { runtime, conn }
    }

    fn release(mut self) {
        self.runtime
            .block_on(sqlx::query("ROLLBACK").execute(&mut self.conn))
            .unwrap();
    }
}

/// A request that takes longer than `request_timeout_ms` is answered `temporary` and writes
/// nothing; the connection and the service go on. (The statement, once sent, is bounded by the
/// database: here SQLite's busy timeout.)
#[test]
fn a_request_past_its_timeout_is_answered_and_writes_nothing() {
    let mut sb = Sandbox::new();
    sb.set_env("COMMONDB_SERVE__REQUEST_TIMEOUT_MS", "300");
    sb.set_env("COMMONDB_SERVE__POOL_SIZE", "2");
    sb.set_env("COMMONDB_BUSY_TIMEOUT_MS", "1000");
    sb.run(EXE, &["--self-setup"]).code(0);
    let served = sb.serve(EXE, &["--listen", "tcp://127.0.0.1:0"]);
    let lock = WriteLock::hold(&sb.database(EXE));
    let mut client = served.client();
    let started = Instant::now();
    let answer = client.call("--username slow --email slow@example.com");
    assert_eq!(answer.kind(), Some("temporary"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    lock.release();
    assert!(is_ok(
        &client.call("--username fast --email fast@example.com")
    ));
    assert_eq!(
        e2e::sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users"),
        1
    );
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// SQLite's group commit: concurrent requests share transactions, yet a duplicate fails alone
/// and the rows are exactly the `ok` answers.
#[test]
fn concurrent_requests_with_duplicates_commit_exactly_the_ok_ones_on_sqlite() {
    let sb = Sandbox::new();
    sb.run(EXE, &["--self-setup"]).code(0);
    let served = sb.serve(EXE, &["--listen", "tcp://127.0.0.1:0"]);
    let addr = served.address(TCP);
    let answers: Vec<Answer> = connected_at_once(&addr, 60, |i, client| {
        // Every third asks for the same username.
        let name = if i % 3 == 0 {
            "dupe".to_string()
        } else {
            format!("gc{i}")
        };
        (0..5)
            .map(|k| client.call(&format!("--username {name}{k} --email {name}@example.com")))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    let oks = answers.iter().filter(|a| is_ok(a)).count();
    let conflicts = answers
        .iter()
        .filter(|a| a.kind() == Some("conflict"))
        .count();
    assert_eq!(oks + conflicts, 300, "other failures: {answers:?}");
    // 40 distinct names × 5, and the 20 clients sharing "dupe" write each of dupe0..dupe4 once.
    assert_eq!(oks, 40 * 5 + 5);
    assert_eq!(
        e2e::sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users"),
        i64::try_from(oks).unwrap()
    );
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// A socket systemd bound on a non-loopback address needs the token as much as one we bind
/// (and the clear-text opt-out: systemd's sockets are plain TCP).
#[test]
fn a_systemd_socket_on_a_public_address_needs_a_token_too() {
    let sb = Sandbox::new();
    let port = e2e::free_port();
    let opt_out = ["COMMONDB_SERVE__ALLOW_PLAINTEXT=true"];
    let Some(mut cmd) = socket_activated(&sb, &format!("0.0.0.0:{port}"), &opt_out) else {
        return;
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tool starts the program on the first connection, made as soon as the tool listens.
    let first = e2e::wait_for("systemd-socket-activate to listen", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    if first.is_err() {
        let _ = child.kill();
    }
    let _first = first.unwrap_or_else(|e| panic!("{e}"));
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("no access token"), "{stderr}");
}
