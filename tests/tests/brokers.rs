//! Executables as workers on a broker: `--serve --listen nats://…` answers the requests of
//! `<prefix>.<exe>` in queue group `<exe>` on the machine's NATS server (started by
//! scripts/test in CI), and `runmany --serve nats://…` sends them, on every backend. Each test
//! has a subject prefix of its own, so tests running at once never answer each other.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use commondb::protocol::listen::HTTP;
use e2e::{Backend, BackendSandbox, Run, on_every_backend};

const EXE: &str = "create-user";

/// The machine's NATS server, and a prefix no other test uses.
fn nats(test: &str) -> Option<String> {
    let server = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let host_port = server
        .strip_prefix("nats://")
        .unwrap_or(&server)
        .to_string();
    if std::net::TcpStream::connect(&host_port).is_err() {
        assert!(
            !e2e::ci(),
            "no NATS server at {host_port}, and CI=true requires it"
        );
        eprintln!("SKIPPED: no NATS server at {host_port} (set TEST_NATS_URL)");
        return None;
    }
    Some(format!(
        "nats://{host_port}?prefix=e2e_{test}_{}",
        std::process::id()
    ))
}

on_every_backend!(
    workers_on_nats_answer_runmany_once_each,
    jetstream_applies_each_request_once_through_a_worker_killed,
    jetstream_loses_and_doubles_nothing_when_the_broker_restarts,
    rabbitmq_workers_apply_each_request_once_through_a_worker_killed,
);

fn users(sb: &BackendSandbox) -> i64 {
    sb.count(EXE, "SELECT COUNT(*) FROM users")
}

fn workers_on_nats_answer_runmany_once_each(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let Some(url) = nats(&format!("{backend:?}").to_lowercase()) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let http = format!("{HTTP}127.0.0.1:0");
    let one = sb.serve(EXE, &["--listen", &url, "--listen", &http]);
    let two = sb.serve(EXE, &["--listen", &url, "--listen", &http]);
    assert!(one.addresses.contains(&url), "{:?}", one.addresses);
    // Its health says whether the broker is connected.
    let (status, health) = e2e::http(&one.address(HTTP), "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{health}");
    assert!(
        health.contains(&format!(r#""brokers":{{"{url}":"connected"}}"#)),
        "{health}"
    );

    let run = Run::of(
        sb.command("runmany", &["-n", "1000", "-j", "16", "--serve", &url, EXE]),
        None,
    );
    run.code(0).stdout_has("succeeded   1000   failed 0");
    assert_eq!(users(&sb), 1000, "each request applied once");
    // The queue group shares the requests between the two workers.
    let served = |s: &e2e::Served| {
        s.metric(&format!(
            "commondb_requests_total{{executable=\"{EXE}\",outcome=\"ok\"}}"
        ))
        .unwrap_or(0.0)
    };
    let (a, b) = (served(&one), served(&two));
    assert_eq!(a + b, 1000.0);
    assert!(a > 0.0 && b > 0.0, "{a} and {b}");

    // Bad messages are answered with the error, and the worker goes on.
    let subject = url
        .split("prefix=")
        .nth(1)
        .map(|p| format!("{p}.{EXE}"))
        .unwrap();
    let server = url
        .strip_prefix("nats://")
        .and_then(|r| r.split('?').next())
        .unwrap()
        .to_string();
    let answers: Vec<serde_json::Value> = e2e::block_on(async move {
        let client = async_nats::connect(server.as_str()).await.unwrap();
        let mut answers = Vec::new();
        for body in [
            b"not json".to_vec(),
            br#"{"username": "x"}"#.to_vec(),
            vec![b' '; 70_000],
            br#"{"username": "natsuser", "email": "n@example.com"}"#.to_vec(),
        ] {
            let reply = client.request(subject.clone(), body.into()).await.unwrap();
            answers.push(serde_json::from_slice(&reply.payload).unwrap());
        }
        answers
    });
    assert_eq!(answers[0]["error"]["kind"], "usage", "{answers:?}");
    assert_eq!(answers[1]["error"]["kind"], "usage", "{answers:?}");
    assert!(
        answers[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{answers:?}"
    );
    assert_eq!(answers[3]["ok"], true, "{answers:?}");
    assert_eq!(users(&sb), 1001);

    // SIGTERM stops a worker gracefully mid-run: what it took is answered, the rest goes to
    // the other one, and every request is applied once. NATS core delivers at most once (a
    // request may race the drain): runmany gives each an id and sends again what got no answer.
    let load = sb
        .command(
            "runmany",
            &[
                "-n",
                "600",
                "-j",
                "8",
                "--request-ids",
                "--serve",
                &url,
                EXE,
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, said) = one.terminate();
    assert_eq!(code, Some(0), "{said}");
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("succeeded   600   failed 0"), "{text}");
    assert_eq!(users(&sb), 1601);
    two.terminate();

    // runmany starts its own workers for a run, and stops them after.
    Run::of(
        sb.command(
            "runmany",
            &[
                "-n",
                "200",
                "-j",
                "8",
                "--serve",
                &url,
                "--workers",
                "2",
                EXE,
            ],
        ),
        None,
    )
    .code(0)
    .stderr_has("started 2 worker(s)")
    .stdout_has("succeeded   200   failed 0");
    assert_eq!(users(&sb), 1801);
    // With no worker left, runmany says so.
    Run::of(
        sb.command("runmany", &["-n", "2", "--serve", &url, EXE]),
        None,
    )
    .stdout_has("no instance answers");
    sb.run_admin(EXE, &["--self-cleanup", "--yes"]).code(0);
}

/// Deletes a test's JetStream stream when dropped, so that the machine's server keeps none.
struct Stream {
    server: String,
    name: String,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        e2e::block_on(async move {
            if let Ok(client) = async_nats::connect(server.as_str()).await {
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(&name)
                    .await;
            }
        });
    }
}

/// Runs `EXE args` as the administrator with `serve.listen` naming `url`: setup and cleanup
/// then make and delete the broker's stream or queues too.
fn with_listen(sb: &BackendSandbox, args: &[&str], url: &str) -> Run {
    let mut cmd = sb.command_admin(EXE, args);
    cmd.env("COMMONDB_SERVE__LISTEN", url);
    Run::of(cmd, None)
}

/// Starts runmany through JetStream in the background.
fn runmany_durable(sb: &BackendSandbox, url: &str, n: &str) -> std::process::Child {
    sb.command(
        "runmany",
        &["-n", n, "-j", "16", "--timeout", "60", "--serve", url, EXE],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

/// What runmany printed, once it is done; it must have succeeded.
fn finished(load: std::process::Child) -> String {
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The redeliveries runmany reported.
fn redelivered(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("redelivered "))
        .and_then(|r| r.split_whitespace().next())
        .map_or(0, |n| n.parse().unwrap())
}

fn served_ok(s: &e2e::Served) -> f64 {
    s.metric(&format!(
        "commondb_requests_total{{executable=\"{EXE}\",outcome=\"ok\"}}"
    ))
    .unwrap_or(0.0)
}

fn jetstream_applies_each_request_once_through_a_worker_killed(backend: Backend) {
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    let Some(core) = nats(&format!("js_{backend:?}").to_lowercase()) else {
        return;
    };
    let url = core.replacen("nats://", "nats+js://", 1);
    let address = commondb::protocol::nats::Address::parse(&url).unwrap();
    let _stream = Stream {
        server: address.server.clone(),
        name: address.stream(EXE),
    };
    // A request a dead worker held comes again after twice the request timeout.
    sb.set_env("COMMONDB_SERVE__REQUEST_TIMEOUT_MS", "1000");
    // Setup makes the stream, so that clients may publish before any worker runs.
    with_listen(&sb, &["--self-setup"], &url)
        .code(0)
        .stdout_has(&format!(
            "broker:   stream {} and consumer {EXE} on {url}",
            address.stream(EXE)
        ));
    let http = format!("{HTTP}127.0.0.1:0");
    let one = sb.serve(EXE, &["--listen", &url, "--listen", &http]);
    let two = sb.serve(EXE, &["--listen", &url, "--listen", &http]);
    let (status, health) = e2e::http(&one.address(HTTP), "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{health}");

    // kill -9 of a worker mid-stream: what it held unacknowledged (committed or not) comes
    // again to the other one, and the request ids keep each effect to one.
    let load = runmany_durable(&sb, &url, "1000");
    e2e::wait_for("worker one to answer 200", 30, || {
        (served_ok(&one) >= 200.0).then_some(())
    })
    .unwrap();
    e2e::signal(one.pid(), rustix::process::Signal::KILL);
    let text = finished(load);
    assert!(text.contains("succeeded   1000   failed 0"), "{text}");
    assert_eq!(users(&sb), 1000, "rows == distinct request ids: {text}");
    let ids = sb.count(EXE, "SELECT COUNT(*) FROM _commondb_requests");
    assert_eq!(ids, 1000);
    eprintln!(
        "kill -9 of a worker under runmany -n 1000 through JetStream on {backend:?}: 1000 answered, 1000 rows, {} answers from a redelivery",
        redelivered(&text)
    );
    drop(one);
    let (code, said) = two.terminate();
    assert_eq!(code, Some(0), "{said}");

    // --self-status reads the stream the configuration names; a broker that does not answer
    // is exit 69.
    let mut status = sb.command(EXE, &["--self-status"]);
    status.env("COMMONDB_SERVE__LISTEN", &url);
    Run::of(status, None).code(0).stdout_has(&format!(
        "broker:    {url} (reachable); stream {}: 0 request(s) stored",
        address.stream(EXE)
    ));
    let mut status = sb.command(EXE, &["--self-status"]);
    status.env("COMMONDB_SERVE__LISTEN", "nats+js://127.0.0.1:1");
    Run::of(status, None)
        .code(69)
        .stdout_has("broker:    nats+js://127.0.0.1:1 (not reachable)");
    with_listen(&sb, &["--self-cleanup", "--yes"], &url)
        .code(0)
        .stdout_has(&format!(
            "dropped the stream {} on {url}",
            address.stream(EXE)
        ));
    let mut status = sb.command(EXE, &["--self-status"]);
    status.env("COMMONDB_SERVE__LISTEN", &url);
    Run::of(status, None).stdout_has("no stream");
}

/// The nats-server binary (Debian's package), for servers of the tests' own.
fn nats_server() -> Option<&'static str> {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if binary.is_none() {
        assert!(
            !e2e::ci(),
            "nats-server is not installed, and CI=true requires it"
        );
        eprintln!("SKIPPED: no nats-server binary");
    }
    binary
}

/// A NATS server of the test's own, with JetStream on file storage in a directory of its own,
/// which the test can restart; stopped when dropped.
struct PrivateNats {
    port: u16,
    dir: tempfile::TempDir,
    /// More options: TLS, users.
    extra: Vec<String>,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    fn start() -> Option<PrivateNats> {
        PrivateNats::start_with(Vec::new())
    }

    fn start_with(extra: Vec<String>) -> Option<PrivateNats> {
        nats_server()?;
        let port = e2e::free_port();
        let mut nats = PrivateNats {
            port,
            dir: tempfile::tempdir().unwrap(),
            extra,
            child: None,
        };
        nats.run();
        Some(nats)
    }

    /// Starts the server (again, on the same port and store) and waits until it listens.
    fn run(&mut self) {
        let child = std::process::Command::new(nats_server().unwrap())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        e2e::wait_for("the private NATS server", 20, || {
            std::net::TcpStream::connect(&address).ok()
        })
        .unwrap();
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            e2e::signal(child.id(), rustix::process::Signal::TERM);
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn jetstream_loses_and_doubles_nothing_when_the_broker_restarts(backend: Backend) {
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    let Some(mut broker) = PrivateNats::start() else {
        return;
    };
    let url = format!("nats+js://127.0.0.1:{}", broker.port);
    let text = restarted_under_load(&mut sb, &url, &mut broker);
    // Publishes are retried under their id until the server confirms them, so every request
    // is stored and applied, once; an answer published while a client was reconnecting may be
    // lost (NATS core carries answers), and is then a timeout, never a second row.
    let succeeded: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("succeeded"))
        .and_then(|r| r.split_whitespace().next())
        .map(|n| n.parse().unwrap())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.contains(&format!("failed {}", 1000 - succeeded)),
        "only timeouts may fail: {text}"
    );
    if succeeded < 1000 {
        assert!(text.contains("timed out"), "{text}");
    }
    eprintln!(
        "nats-server restarted under runmany -n 1000 through JetStream on {backend:?}: 1000 rows, {succeeded} answered, {} answers from a redelivery",
        redelivered(&text)
    );
    sb.run_admin(EXE, &["--self-cleanup", "--yes"]).code(0);
}

/// A broker a test can stop and start again.
trait Restartable {
    fn stop(&mut self);
    fn run(&mut self);
}

impl Restartable for PrivateNats {
    fn stop(&mut self) {
        PrivateNats::stop(self);
    }
    fn run(&mut self) {
        PrivateNats::run(self);
    }
}

impl Restartable for PrivateRabbit {
    fn stop(&mut self) {
        PrivateRabbit::stop(self);
    }
    fn run(&mut self) {
        PrivateRabbit::run(self);
    }
}

/// Two workers on `url` under runmany -n 1000; after 300 answers the broker is stopped (the
/// workers' /healthz says 503 meanwhile) and started again; both workers then stop gracefully.
/// Returns runmany's report, after checking that nothing was lost or doubled.
fn restarted_under_load(
    sb: &mut BackendSandbox,
    url: &str,
    broker: &mut dyn Restartable,
) -> String {
    sb.set_env("COMMONDB_SERVE__REQUEST_TIMEOUT_MS", "1000");
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let http = format!("{HTTP}127.0.0.1:0");
    let one = sb.serve(EXE, &["--listen", url, "--listen", &http]);
    let two = sb.serve(EXE, &["--listen", url, "--listen", &http]);
    let load = runmany_durable(sb, url, "1000");
    e2e::wait_for("the workers to answer 300", 30, || {
        (served_ok(&one) + served_ok(&two) >= 300.0).then_some(())
    })
    .unwrap();
    broker.stop();
    let (status, health) = e2e::http(&one.address(HTTP), "GET", "/healthz", &[], b"");
    assert_eq!(status, 503, "{health}");
    std::thread::sleep(Duration::from_millis(500));
    broker.run();
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(users(sb), 1000, "nothing lost, nothing doubled: {text}");
    assert_eq!(
        sb.count(EXE, "SELECT COUNT(*) FROM _commondb_requests"),
        1000
    );
    for worker in [one, two] {
        let (code, said) = worker.terminate();
        assert_eq!(code, Some(0), "{said}");
    }
    text
}

/// Through JetStream on SQLite: a request that fails for a passing reason (the database busy)
/// is delivered again, then parked on the dead-letter subject with its error after the last
/// delivery, and its requester gets the error; a bad message is answered once and not
/// delivered again.
#[test]
fn jetstream_parks_what_keeps_failing_and_answers_bad_messages_once() {
    let Some(mut sb) = BackendSandbox::new(Backend::Sqlite) else {
        return;
    };
    let Some(mut broker) = PrivateNats::start() else {
        return;
    };
    let Some(sqlite3) = e2e::tool("sqlite3", "sqlite3") else {
        return;
    };
    let url = format!("nats+js://127.0.0.1:{}", broker.port);
    let address = commondb::protocol::nats::Address::parse(&url).unwrap();
    sb.set_env("COMMONDB_BUSY_TIMEOUT_MS", "20");
    sb.set_env("COMMONDB_SERVE__REQUEST_TIMEOUT_MS", "1000");
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let worker = sb.serve(EXE, &["--listen", &url]);
    // Another writer holds the database's write lock.
    let mut holder = std::process::Command::new(sqlite3)
        .arg(sb.database(EXE))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut hold = holder.stdin.take().unwrap();
    use std::io::Write;
    hold.write_all(b"BEGIN IMMEDIATE;\n").unwrap();
    hold.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let server = address.server.clone();
    let (subject, dead, stream) = (
        address.subject(EXE),
        address.dead_subject(EXE),
        address.stream(EXE),
    );
    let answers = e2e::block_on(async move {
        use commondb::protocol::nats::{DELIVERED, ERROR, MSG_ID, REPLY_TO};
        use futures_util::StreamExt;
        let client = async_nats::connect(server.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let inbox = client.new_inbox();
        let mut answers = client.subscribe(inbox.clone()).await.unwrap();
        let mut got = Vec::new();
        for (id, body) in [
            (
                "busy-1",
                br#"{"username": "parked", "email": "p@example.com"}"#.to_vec(),
            ),
            ("bad-1", b"not json".to_vec()),
        ] {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(MSG_ID, id);
            headers.insert(REPLY_TO, inbox.as_str());
            js.publish_with_headers(subject.clone(), headers, body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        for _ in 0..2 {
            let answer = tokio::time::timeout(Duration::from_secs(30), answers.next())
                .await
                .expect("an answer within 30 s")
                .unwrap();
            let h = answer.headers.clone().unwrap();
            got.push((
                h.get(MSG_ID).unwrap().as_str().to_string(),
                h.get(DELIVERED).unwrap().as_str().to_string(),
                String::from_utf8_lossy(&answer.payload).into_owned(),
            ));
        }
        let parked = js
            .get_stream(&stream)
            .await
            .unwrap()
            .get_last_raw_message_by_subject(&dead)
            .await
            .unwrap();
        let error = parked.headers.get(ERROR).unwrap().as_str().to_string();
        (
            got,
            error,
            String::from_utf8_lossy(&parked.payload).into_owned(),
        )
    });
    let (mut got, error, parked) = answers;
    got.sort();
    // The bad message: answered at its first delivery, not delivered again.
    assert_eq!(got[0].0, "bad-1");
    assert_eq!(got[0].1, "1");
    assert!(got[0].2.contains(r#""kind":"usage""#), "{got:?}");
    // The busy one: delivered five times, then answered with its error and parked.
    assert_eq!(got[1].0, "busy-1");
    assert_eq!(got[1].1, "5", "{got:?}");
    assert!(got[1].2.contains(r#""kind":"temporary""#), "{got:?}");
    assert!(error.contains("temporary"), "{error}");
    assert!(parked.contains("parked"), "{parked}");
    hold.write_all(b"COMMIT;\n").unwrap();
    drop(hold);
    let _ = holder.wait();
    assert_eq!(users(&sb), 0, "nothing was written");

    // The same request id twice, under two Nats-Msg-Ids (a client's copy after a lost answer,
    // which JetStream would otherwise drop): one row, the first answer twice.
    let (server, subject) = (address.server.clone(), address.subject(EXE));
    let twice = e2e::block_on(async move {
        use commondb::protocol::nats::{MSG_ID, REPLY_TO, REQUEST_ID};
        use futures_util::StreamExt;
        let client = async_nats::connect(server.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let inbox = client.new_inbox();
        let mut answers = client.subscribe(inbox.clone()).await.unwrap();
        let mut got = Vec::new();
        for copy in ["twice-1", "twice-1.1"] {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(MSG_ID, copy);
            headers.insert(REQUEST_ID, "twice-1");
            headers.insert(REPLY_TO, inbox.as_str());
            let body = br#"{"username": "twice", "email": "t@example.com"}"#.to_vec();
            js.publish_with_headers(subject.clone(), headers, body.into())
                .await
                .unwrap()
                .await
                .unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(30), answers.next())
                .await
                .expect("an answer within 30 s")
                .unwrap();
            got.push(String::from_utf8_lossy(&answer.payload).into_owned());
        }
        got
    });
    assert!(twice[0].contains(r#""ok":true"#), "{twice:?}");
    assert_eq!(twice[0], twice[1], "the first answer, again");
    assert_eq!(users(&sb), 1, "one row for one id");
    let (code, said) = worker.terminate();
    assert_eq!(code, Some(0), "{said}");
    broker.stop();
}

/// The machine's RabbitMQ broker, and a queue prefix no other test uses.
fn rabbitmq(test: &str) -> Option<String> {
    let server = std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672".into());
    let host_port = server
        .trim_start_matches("amqp://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    if std::net::TcpStream::connect(&host_port).is_err() {
        assert!(
            !e2e::ci(),
            "no RabbitMQ broker at {host_port}, and CI=true requires it"
        );
        eprintln!("SKIPPED: no RabbitMQ broker at {host_port} (set TEST_AMQP_URL)");
        return None;
    }
    Some(format!(
        "amqp://{host_port}?prefix=e2e_{test}_{}",
        std::process::id()
    ))
}

/// Deletes a test's queues when dropped, so that the machine's broker keeps none.
struct Queues(commondb::protocol::amqp::Address);

impl Drop for Queues {
    fn drop(&mut self) {
        let address = self.0.clone();
        e2e::block_on(async move {
            let Ok(connection) = lapin::Connection::connect(
                &address.uri(None),
                lapin::ConnectionProperties::default(),
            )
            .await
            else {
                return;
            };
            if let Ok(channel) = connection.create_channel().await {
                for queue in [address.queue(EXE), address.dead_queue(EXE)] {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), Default::default())
                        .await;
                }
            }
            let _ = connection.close(200, "done".into()).await;
        });
    }
}

/// Publishes `body` with `id` to `queue` and waits for its answer by direct reply-to: the
/// answer, and which delivery it came from.
async fn amqp_call(
    address: &commondb::protocol::amqp::Address,
    queue: &str,
    id: &str,
    body: &[u8],
) -> (String, i64) {
    use commondb::protocol::amqp::{DELIVERED, DIRECT_REPLY_TO};
    use futures_util::StreamExt;
    let connection =
        lapin::Connection::connect(&address.uri(None), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut replies = channel
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let properties = lapin::BasicProperties::default()
        .with_message_id(id.into())
        .with_correlation_id(id.into())
        .with_reply_to(DIRECT_REPLY_TO.into());
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            Default::default(),
            body,
            properties,
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), replies.next())
        .await
        .expect("an answer within 30 s")
        .unwrap()
        .unwrap();
    let delivered = match reply
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(DELIVERED).cloned())
    {
        Some(lapin::types::AMQPValue::LongLongInt(n)) => n,
        other => panic!("no delivery count: {other:?}"),
    };
    let _ = connection.close(200, "done".into()).await;
    (String::from_utf8_lossy(&reply.data).into_owned(), delivered)
}

fn rabbitmq_workers_apply_each_request_once_through_a_worker_killed(backend: Backend) {
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    let Some(url) = rabbitmq(&format!("{backend:?}").to_lowercase()) else {
        return;
    };
    let address = commondb::protocol::amqp::Address::parse(&url).unwrap();
    let _queues = Queues(address.clone());
    sb.set_env("COMMONDB_SERVE__REQUEST_TIMEOUT_MS", "1000");
    with_listen(&sb, &["--self-setup"], &url)
        .code(0)
        .stdout_has(&format!(
            "broker:   queues {} and {} on {url}",
            address.queue(EXE),
            address.dead_queue(EXE)
        ));
    let http = format!("{HTTP}127.0.0.1:0");
    let one = sb.serve(EXE, &["--listen", &url, "--listen", &http]);
    let two = sb.serve(EXE, &["--listen", &url, "--listen", &http]);
    let (status, health) = e2e::http(&one.address(HTTP), "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{health}");
    assert!(
        health.contains(&format!(r#""brokers":{{"{url}":"connected"}}"#)),
        "{health}"
    );

    // kill -9 of a worker mid-stream: its unacknowledged requests go back to the queue, to
    // the other worker, and the request ids keep each effect to one.
    let load = runmany_durable(&sb, &url, "1000");
    e2e::wait_for("worker one to answer 200", 30, || {
        (served_ok(&one) >= 200.0).then_some(())
    })
    .unwrap();
    e2e::signal(one.pid(), rustix::process::Signal::KILL);
    let text = finished(load);
    assert!(text.contains("succeeded   1000   failed 0"), "{text}");
    assert_eq!(users(&sb), 1000, "rows == distinct request ids: {text}");
    assert_eq!(
        sb.count(EXE, "SELECT COUNT(*) FROM _commondb_requests"),
        1000
    );
    eprintln!(
        "kill -9 of a worker under runmany -n 1000 through RabbitMQ on {backend:?}: 1000 answered, 1000 rows, {} answers from a redelivery",
        redelivered(&text)
    );
    drop(one);

    // The same id twice: one row, the same answer; a bad message is answered once.
    let queue = address.queue(EXE);
    let (first, second, bad) = e2e::block_on(async {
        let body = br#"{"username": "twice", "email": "t@example.com"}"#;
        let first = amqp_call(&address, &queue, "twice-1", body).await;
        let second = amqp_call(&address, &queue, "twice-1", body).await;
        let bad = amqp_call(&address, &queue, "bad-1", b"not json").await;
        (first, second, bad)
    });
    assert!(first.0.contains(r#""ok":true"#), "{first:?}");
    assert_eq!(first.0, second.0, "the first answer, again");
    assert_eq!(users(&sb), 1001);
    assert!(bad.0.contains(r#""kind":"usage""#), "{bad:?}");
    assert_eq!(bad.1, 1, "answered at its first delivery");
    let mut status = sb.command(EXE, &["--self-status"]);
    status.env("COMMONDB_SERVE__LISTEN", &url);
    Run::of(status, None).code(0).stdout_has(&format!(
        "queue {}: 0 request(s) ready, 1 consumer(s)",
        address.queue(EXE)
    ));
    let (code, said) = two.terminate();
    assert_eq!(code, Some(0), "{said}");
    with_listen(&sb, &["--self-cleanup", "--yes"], &url)
        .code(0)
        .stdout_has(&format!("dropped the queues {} and", address.queue(EXE)));
}

/// A RabbitMQ node of the test's own (its own name, ports and data directory, which the
/// `rabbitmq` user owns), which the test can stop and start again; stopped when dropped.
struct PrivateRabbit {
    node: String,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRabbit {
    fn start(name: &str) -> Option<PrivateRabbit> {
        PrivateRabbit::start_with(name, |_, port| {
            format!("listeners.tcp.local = 127.0.0.1:{port}\n")
        })
    }

    /// A node whose configuration `conf` writes, given its directory (to put files in, which
    /// the `rabbitmq` user will own) and its port.
    fn start_with(
        name: &str,
        conf: impl FnOnce(&std::path::Path, u16) -> String,
    ) -> Option<PrivateRabbit> {
        e2e::tool("rabbitmq-server", "rabbitmq-server")?;
        let dir = tempfile::tempdir().unwrap();
        let port = e2e::free_port();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        let conf = conf(dir.path(), port);
        std::fs::write(dir.path().join("rabbitmq.conf"), conf).unwrap();
        let owned = std::process::Command::new("chown")
            .args(["-R", "rabbitmq"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(owned.success(), "chown to the rabbitmq user");
        let mut rabbit = PrivateRabbit {
            node: format!("e2e{name}{}@localhost", std::process::id()),
            port,
            dist_port: e2e::free_port(),
            dir,
            child: None,
        };
        rabbit.run();
        Some(rabbit)
    }

    /// Starts the node (again, on the same ports and data) and waits until it listens.
    fn run(&mut self) {
        let dir = self.dir.path();
        let child = std::process::Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        e2e::wait_for("the private RabbitMQ node", 60, || {
            std::net::TcpStream::connect(&address).ok()
        })
        .unwrap();
    }

    /// Stops the node gracefully and waits for it.
    fn stop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

// A private RabbitMQ node takes seconds to start, twice per test: on the two backends the
// issue names, SQLite and PostgreSQL (MySQL/MariaDB's path through the broker is the same).
#[test]
fn sqlite_rabbitmq_loses_and_doubles_nothing_when_the_broker_restarts() {
    rabbitmq_loses_and_doubles_nothing_when_the_broker_restarts(Backend::Sqlite);
}

#[test]
fn postgres_rabbitmq_loses_and_doubles_nothing_when_the_broker_restarts() {
    rabbitmq_loses_and_doubles_nothing_when_the_broker_restarts(Backend::Postgres);
}

fn rabbitmq_loses_and_doubles_nothing_when_the_broker_restarts(backend: Backend) {
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    let Some(mut broker) = PrivateRabbit::start(&format!("{backend:?}").to_lowercase()) else {
        return;
    };
    let url = format!("amqp://127.0.0.1:{}", broker.port);
    // Published again under their ids until confirmed, the durable queue kept across the
    // restart: every request applied, once, and answered.
    let text = restarted_under_load(&mut sb, &url, &mut broker);
    assert!(text.contains("succeeded   1000   failed 0"), "{text}");
    eprintln!(
        "RabbitMQ restarted under runmany -n 1000 on {backend:?}: 1000 rows, 1000 answered, {} answers from a redelivery",
        redelivered(&text)
    );
    sb.run_admin(EXE, &["--self-cleanup", "--yes"]).code(0);
}

/// Three NATS servers clustered on loopback ports, JetStream on each (the simulation of three
/// machines); stopped when dropped.
struct NatsCluster {
    ports: Vec<u16>,
    nodes: Vec<Option<std::process::Child>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl NatsCluster {
    fn start() -> Option<NatsCluster> {
        let binary = nats_server()?;
        let ports: Vec<u16> = (0..3).map(|_| e2e::free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| e2e::free_port()).collect();
        let all_routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut dirs = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let child = std::process::Command::new(binary)
                .args(["-a", "127.0.0.1", "-p", &ports[i].to_string(), "-js", "-sd"])
                .arg(dir.path())
                .args(["--server_name", &format!("n{i}"), "--cluster_name", "e2e"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
                .args(["--routes", &all_routes])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            dirs.push(dir);
            nodes.push(Some(child));
        }
        for port in &ports {
            let address = format!("127.0.0.1:{port}");
            e2e::wait_for("a NATS cluster node", 20, || {
                std::net::TcpStream::connect(&address).ok()
            })
            .unwrap();
        }
        Some(NatsCluster {
            ports,
            nodes,
            _dirs: dirs,
        })
    }

    /// Kills node `i` outright: a machine lost.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Many machines, simulated: three workers, each with a home and configuration of its own (its
/// own sandbox, holding a copy of the secrets file setup wrote, as a deployment would copy it),
/// each on another node of a three-node NATS cluster, all on one PostgreSQL; the stream kept on
/// all three nodes (`replicas=3`). A node is killed mid-run: its worker reconnects to another,
/// and every request is still applied once.
#[test]
fn workers_on_three_machines_share_one_database_through_a_nats_cluster() {
    let Some(sb) = BackendSandbox::new(Backend::Postgres) else {
        return;
    };
    let Some(mut cluster) = NatsCluster::start() else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let secrets = std::fs::read_dir(sb.secrets_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    let url = |i: usize| {
        format!(
            "nats+js://127.0.0.1:{}?prefix=e2e_cluster&replicas=3",
            cluster.ports[i]
        )
    };
    // The cluster elects its JetStream leader in a few seconds; before, no stream can be made.
    let first = format!("127.0.0.1:{}", cluster.ports[0]);
    e2e::wait_for("the cluster's JetStream", 30, || {
        let first = first.clone();
        e2e::block_on(async move {
            let client = async_nats::connect(first.as_str()).await.ok()?;
            let js = async_nats::jetstream::new(client);
            let probe = async_nats::jetstream::stream::Config {
                name: "e2e_probe".into(),
                num_replicas: 3,
                ..Default::default()
            };
            js.get_or_create_stream(probe).await.ok()?;
            js.delete_stream("e2e_probe").await.ok()
        })
    })
    .unwrap();
    let http = format!("{HTTP}127.0.0.1:0");
    let mut machines = Vec::new();
    let mut workers = Vec::new();
    for i in 0..3 {
        let mut machine = e2e::Sandbox::new();
        machine.set_env("COMMONDB_SERVE__REQUEST_TIMEOUT_MS", "1000");
        // Where the database is: configuration; who it is for: the secrets file.
        let database = sb.env().get("COMMONDB_DATABASE_URL").cloned().unwrap();
        machine.set_env("COMMONDB_DATABASE_URL", database);
        std::fs::create_dir_all(machine.secrets_dir()).unwrap();
        for file in &secrets {
            let to = machine.secrets_dir().join(file.file_name().unwrap());
            std::fs::copy(file, &to).unwrap();
        }
        workers.push(machine.serve(EXE, &["--listen", &url(i), "--listen", &http]));
        machines.push(machine);
    }
    let load = runmany_durable(&sb, &url(0), "1000");
    e2e::wait_for("the workers to answer 300", 30, || {
        let done: f64 = workers.iter().map(served_ok).sum();
        (done >= 300.0).then_some(())
    })
    .unwrap();
    cluster.kill(2);
    let text = finished(load);
    assert!(text.contains("succeeded   1000   failed 0"), "{text}");
    assert_eq!(users(&sb), 1000, "each request once: {text}");
    let shares: Vec<f64> = workers.iter().map(served_ok).collect();
    eprintln!(
        "three workers on a three-node NATS cluster, one node killed mid-run: 1000 rows; answered per worker {shares:?}"
    );
    assert!(
        shares.iter().filter(|s| **s > 0.0).count() >= 2,
        "{shares:?}"
    );
    for worker in workers {
        let (code, said) = worker.terminate();
        assert_eq!(code, Some(0), "{said}");
    }
    drop(machines);
    sb.run_admin(EXE, &["--self-cleanup", "--yes"]).code(0);
}

/// Puts `broker_password` in the sandbox's app secrets file (mode 0600), as an operator would.
fn broker_password(sb: &e2e::Sandbox, password: &str) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = sb.secrets_dir();
    let _ = std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join(format!("{EXE}.toml")))
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        format!("broker_password = {password:?}\n").as_bytes(),
    )
    .unwrap();
}

/// A worker on `url`, and what runmany printed of 200 requests through it: each answered and
/// applied once.
fn serve_and_load(sb: &e2e::Sandbox, url: &str) -> (e2e::Served, String) {
    let worker = sb.serve(EXE, &["--listen", url]);
    let load = sb
        .command(
            "runmany",
            &[
                "-n",
                "200",
                "-j",
                "16",
                "--timeout",
                "60",
                "--serve",
                url,
                EXE,
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text = finished(load);
    assert!(text.contains("failed 0"), "{text}");
    let users = e2e::sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users");
    assert_eq!(users, 200, "{text}");
    (worker, text)
}

/// A wrong `broker_password` is refused (77) with `says`, and never shown; the right one is
/// put back.
fn a_wrong_password_is_refused(sb: &e2e::Sandbox, url: &str, password: &str, says: &str) {
    broker_password(sb, "not the password");
    Run::within(sb.command(EXE, &["--serve", "--listen", url]), 30)
        .code(77)
        .stderr_has(says)
        .never_shows("not the password");
    broker_password(sb, password);
}

/// Stops the worker (SIGTERM: exit 0), and cleanup deletes what setup made on the broker.
fn stop_and_clean_up(sb: &BackendSandbox, worker: e2e::Served, url: &str, gone: &str) {
    let (code, said) = worker.terminate();
    assert_eq!(code, Some(0), "{said}");
    with_listen(sb, &["--self-cleanup", "--yes"], url)
        .code(0)
        .stdout_has(gone);
}

/// What an address off loopback needs, refused before anything is sent there (192.0.2.1 is
/// TEST-NET-1: nothing answers there, and nothing tries): credentials (a fresh sandbox has
/// none), then TLS (`user` names a user, and the password is there).
fn off_loopback_needs_credentials_and_tls(bare: &str, user: &str) {
    let sb = e2e::Sandbox::new();
    let refused = Run::within(sb.command(EXE, &["--serve", "--listen", bare]), 20);
    refused
        .code(78)
        .stderr_has("not on loopback, and this executable has no credentials")
        .stderr_has("broker_password");
    broker_password(&sb, "a password");
    Run::within(sb.command(EXE, &["--serve", "--listen", user]), 20)
        .code(78)
        .stderr_has("in clear")
        .stderr_has("serve.allow_plaintext");
}

/// NATS with TLS (a throwaway CA) and a user with a password: every mode and runmany go
/// through it; a wrong password, a CA that did not sign the server's certificate, a missing
/// password and a password in the address are refused with what to do.
#[test]
fn jetstream_over_tls_with_a_user_and_password() {
    let Some(openssl) = e2e::tool("openssl", "openssl") else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    e2e::certificates(&openssl, certs.path(), "nats", "IP:127.0.0.1,DNS:localhost");
    e2e::certificates(
        &openssl,
        certs.path(),
        "other",
        "IP:127.0.0.1,DNS:localhost",
    );
    let file = |name: &str| certs.path().join(name).display().to_string();
    let password = "the-worker's password: 0123";
    let extra = [
        "--tls",
        "--tlscert",
        &file("nats.pem"),
        "--tlskey",
        &file("nats.key"),
        "--user",
        "worker",
        "--pass",
        password,
    ];
    let Some(broker) = PrivateNats::start_with(extra.iter().map(|s| s.to_string()).collect())
    else {
        return;
    };
    let sb = BackendSandbox::new(Backend::Sqlite).unwrap();
    let server = format!("127.0.0.1:{}", broker.port);
    let url = format!(
        "nats+js://worker@{server}?prefix=e2e_tls&ca={}",
        file("nats-ca.pem")
    );

    // A user without its password: what to do, before any connection.
    with_listen(&sb, &["--self-setup"], &url)
        .code(78)
        .stderr_has("broker_password");
    broker_password(&sb, password);
    with_listen(&sb, &["--self-setup"], &url)
        .code(0)
        .stdout_has("stream e2e_tls_create-user and consumer create-user on");
    with_listen(&sb, &["--self-status"], &url)
        .code(0)
        .stdout_has("(reachable); stream e2e_tls_create-user");
    let (worker, text) = serve_and_load(&sb, &url);

    // A CA that did not sign the server's certificate; TLS with the public roots alone.
    for wrong in [
        format!("nats://worker@{server}?ca={}", file("other-ca.pem")),
        format!("nats://worker@{server}?tls=true"),
    ] {
        Run::within(sb.command(EXE, &["--serve", "--listen", &wrong]), 30)
            .code(69)
            .stderr_has("ca= names the CA");
    }
    // A password in the address is refused and never shown.
    let shown = format!("nats://worker:s3cret-in-argv@{server}");
    Run::within(sb.command(EXE, &["--serve", "--listen", &shown]), 20)
        .code(2)
        .stderr_has("never a password or token")
        .never_shows("s3cret-in-argv");
    off_loopback_needs_credentials_and_tls("nats://192.0.2.1:4222", "nats://worker@192.0.2.1:4222");
    a_wrong_password_is_refused(&sb, &url, password, "broker_password");

    // The password as systemd's credential broker_password instead of the file.
    let creds = tempfile::tempdir().unwrap();
    let credential = creds.path().join("broker_password");
    std::fs::write(&credential, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::remove_file(sb.secrets_dir().join(format!("{EXE}.toml"))).unwrap();
    let mut status = sb.command(EXE, &["--self-status"]);
    status.env("COMMONDB_SERVE__LISTEN", &url);
    status.env("CREDENTIALS_DIRECTORY", creds.path());
    Run::of(status, None).code(0).stdout_has("(reachable)");
    broker_password(&sb, password);

    stop_and_clean_up(&sb, worker, &url, "the stream e2e_tls_create-user on");
    eprintln!("NATS over TLS as a user: setup, status, serve, runmany -n 200, cleanup: {text}");
}

/// RabbitMQ over TLS only (amqps://, a throwaway CA) as a user of its own with a password:
/// setup, status, a worker and runmany, cleanup; a wrong password is refused.
#[test]
fn rabbitmq_over_tls_with_a_user_of_its_own() {
    let Some(openssl) = e2e::tool("openssl", "openssl") else {
        return;
    };
    let password = "rabbit/worker:pw@0123";
    let made = PrivateRabbit::start_with("tls", |dir, port| {
        e2e::certificates(&openssl, dir, "rabbit", "IP:127.0.0.1,DNS:localhost");
        let file = |name: &str| dir.join(name).display().to_string();
        format!(
            "listeners.tcp = none\nlisteners.ssl.local = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
             ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n\
             default_user = worker\ndefault_pass = {password}\n",
            file("rabbit-ca.pem"),
            file("rabbit.pem"),
            file("rabbit.key"),
        )
    });
    let Some(broker) = made else {
        return;
    };
    let sb = BackendSandbox::new(Backend::Sqlite).unwrap();
    let ca = broker.dir.path().join("rabbit-ca.pem");
    let url = format!(
        "amqps://worker@127.0.0.1:{}?prefix=e2e_tls&ca={}",
        broker.port,
        ca.display()
    );
    broker_password(&sb, password);
    with_listen(&sb, &["--self-setup"], &url)
        .code(0)
        .stdout_has("queues e2e_tls.create-user and e2e_tls.dead.create-user on amqps://worker@");
    let (worker, text) = serve_and_load(&sb, &url);
    with_listen(&sb, &["--self-status"], &url)
        .code(0)
        .stdout_has("queue e2e_tls.create-user: 0 request(s) ready, 1 consumer(s)");
    off_loopback_needs_credentials_and_tls(
        "amqps://192.0.2.1:5671",
        "amqp://worker@192.0.2.1:5672",
    );
    a_wrong_password_is_refused(&sb, &url, password, "refused the login");
    stop_and_clean_up(&sb, worker, &url, "the queues e2e_tls.create-user and");
    eprintln!("RabbitMQ over TLS as a user: setup, serve, runmany -n 200, status, cleanup: {text}");
}
