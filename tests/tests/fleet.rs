//! `fleet`: a family started from one `fleet.toml` (on SQLite), served, an instance killed and
//! brought back, a crash loop that backs off and gives up, a graceful stop, a runtime killed
//! outright that leaves no instance behind, and `fleet init`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use commondb::protocol::listen::HTTP;
use e2e::{Run, Sandbox, StderrLog};

/// A running `fleet up` and its output.
struct Up {
    child: Child,
    out: StderrLog,
}

impl Up {
    fn start(sb: &Sandbox, toml: &str) -> Up {
        std::fs::write(sb.root().join("fleet.toml"), toml).unwrap();
        let mut cmd = sb.command("fleet", &["up"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("fleet starts");
        let out = StderrLog::read(child.stdout.take().unwrap());
        Up { child, out }
    }

    /// The value `found` picks out of a line, waiting up to `secs` seconds for it.
    fn wait<T>(&self, secs: u64, what: &str, found: impl FnMut(&str) -> Option<T>) -> T {
        self.out
            .wait_for_line(secs, found)
            .unwrap_or_else(|| panic!("no line with {what} in:\n{}", self.out.text()))
    }

    /// The pid and HTTP address of instance `label` once it is ready (and not `pid_not`).
    fn ready(&self, label: &str, pid_not: Option<u32>) -> (u32, String) {
        let prefix = format!("{label}: ready (pid ");
        self.wait(20, &prefix, |line| {
            let rest = line.strip_prefix(&prefix)?;
            let (pid, addrs) = rest.split_once("): ")?;
            let pid: u32 = pid.parse().ok()?;
            let http = addrs.split(' ').find_map(|a| a.strip_prefix(HTTP))?;
            (Some(pid) != pid_not).then(|| (pid, http.to_string()))
        })
    }

    /// The gateway's `HOST:PORT`, from the line the runtime prints once it listens.
    fn gateway(&self) -> String {
        self.wait(20, "the gateway's address", |l| {
            let rest = l.strip_prefix("fleet: gateway on ")?;
            let rest = rest
                .strip_prefix("http://")
                .or(rest.strip_prefix("https://"))?;
            let (host, rest) = rest.split_once(':')?;
            Some(format!("{host}:{}", rest.split(':').next()?))
        })
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits (up to 20 s) for the runtime to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("fleet did not exit:\n{}", self.out.text());
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn gone_within(pid: u32, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

const FAMILY: &str = r#"
[services.create-user]
exe = "create-user"

[services.get-user]
exe = "get-user"
scale = 2
depends_on = ["create-user"]
"#;

#[test]
fn a_family_is_started_served_restarted_and_stopped_together() {
    let mut sb = Sandbox::new();
    // Setup may read the administrator's URL; no service gets it.
    sb.set_env(
        "COMMONDB_ADMIN_URL",
        "postgres://postgres@127.0.0.1:1/unused",
    );
    let mut up = Up::start(&sb, FAMILY);
    up.wait(20, "every instance is ready", |l| {
        l.starts_with("fleet: every instance is ready")
            .then_some(())
    });
    let (writer, create) = up.ready("create-user.0", None);
    let (reader0, get) = up.ready("get-user.0", None);
    let (reader1, _) = up.ready("get-user.1", None);
    let (status, body) = e2e::http(
        &create,
        "POST",
        "/create",
        &[],
        br#"{"username": "alice", "email": "a@example.com"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = e2e::http(&get, "GET", "/get?username=alice", &[], b"");
    assert_eq!(status, 200, "{body}");
    let environ = std::fs::read(format!("/proc/{reader0}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("COMMONDB_PARENT_PID="), "{environ}");
    assert!(!environ.contains("COMMONDB_ADMIN_URL"), "{environ}");
    // The same fleet twice is refused: nothing starts twice.
    Run::of(sb.command("fleet", &["up"]), None)
        .code(75)
        .stderr_has("another fleet up is running");

    // An instance killed outright comes back, with a new pid, after a short backoff.
    let pid = rustix::process::Pid::from_raw(writer as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    up.wait(10, "the kill reported", |l| {
        (l.starts_with("create-user.0: killed by signal 9")).then_some(())
    });
    let (again, create) = up.ready("create-user.0", Some(writer));
    assert_ne!(again, writer);
    let (status, _) = e2e::http(
        &create,
        "POST",
        "/create",
        &[],
        br#"{"username": "bob", "email": "b@example.com"}"#,
    );
    assert_eq!(status, 201);
    // `fleet ps` tells it.
    let ps = sb.run("fleet", &["ps", "--json"]);
    let instances = ps.code(0).json();
    let writer_now = &instances[0];
    assert_eq!(writer_now["service"], "create-user", "{instances}");
    assert_eq!(writer_now["state"], "ready");
    assert_eq!(writer_now["restarts"], 1);
    assert_eq!(writer_now["last_exit"], "killed by signal 9");
    assert_eq!(writer_now["pid"], again);
    assert_eq!(instances.as_array().map(Vec::len), Some(3));
    sb.run("fleet", &["ps"])
        .code(0)
        .stdout_has("get-user")
        .stdout_has("ready");
    // The control socket is its user's alone.
    let dir = sb.data_dir().parent().unwrap().join("commondb/fleet");
    let socket = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir), mode(&socket)), (0o700, 0o600));
    // Another user cannot reach it (root can reach anything: the test runs as nobody).
    if rustix::process::geteuid().is_root()
        && let Some(setpriv) = e2e::tool("setpriv", "util-linux")
    {
        let sock = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "sock"))
            .unwrap();
        let out = std::process::Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c"])
            .arg("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'ps\\n'); print(s.recv(100))")
            .arg(&sock)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("Permission denied"),
            "{said}{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // SIGTERM stops every instance gracefully, and the runtime exits 0.
    up.signal(rustix::process::Signal::TERM);
    assert_eq!(up.exit_code(), Some(0), "{}", up.out.text());
    for pid in [again, reader0, reader1] {
        assert!(!alive(pid), "instance {pid} outlived the fleet");
    }
    let log = up.out.text();
    assert!(log.contains("get-user.1: stopped"), "{log}");
    // Every line an instance wrote is prefixed with its service and instance.
    assert!(
        log.lines().all(|l| l.starts_with("create-user.")
            || l.starts_with("get-user.")
            || l.starts_with("fleet:")),
        "{log}"
    );
}

#[test]
fn a_crash_loop_backs_off_then_fails_and_the_others_run_on() {
    let sb = Sandbox::new();
    // The address its instance must bind is taken: it exits at once, every time.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let toml = format!(
        r#"
[services.create-user]
exe = "create-user"
listen = ["tcp://127.0.0.1:{port}"]
backoff_initial_ms = 20
max_failures = 3

[services.get-user]
exe = "get-user"
"#
    );
    let mut up = Up::start(&sb, &toml);
    up.ready("get-user.0", None);
    up.wait(20, "the failed state", |l| {
        l.starts_with("create-user.0: failed: 4 failures in a row")
            .then_some(())
    });
    let log = up.out.text();
    let backoffs = log
        .lines()
        .filter(|l| l.starts_with("create-user.0: backoff: restarting in"))
        .count();
    assert_eq!(backoffs, 3, "{log}");
    assert!(log.contains("create-user.0 | create-user: error"), "{log}");
    let instances = sb.run("fleet", &["ps", "--json"]).code(0).json();
    assert_eq!(instances[0]["state"], "failed", "{instances}");
    assert_eq!(instances[0]["restarts"], 3);
    assert_eq!(instances[1]["state"], "ready");
    // `fleet down` stops the rest gracefully and returns once the runtime is gone.
    sb.run("fleet", &["down"])
        .code(0)
        .stdout_has("the fleet is down");
    assert_eq!(up.exit_code(), Some(0));
    sb.run("fleet", &["ps"])
        .code(69)
        .stderr_has("no fleet is running");
    drop(taken);
}

#[test]
fn no_instance_outlives_a_runtime_killed_outright() {
    let sb = Sandbox::new();
    let up = Up::start(&sb, FAMILY);
    let (writer, _) = up.ready("create-user.0", None);
    let (reader, _) = up.ready("get-user.1", None);
    // A process of this fleet that outlives the runtime (here a stand-in, which no death
    // signal reaches) is found by the next fleet up, which starts nothing twice.
    let environ = std::fs::read(format!("/proc/{writer}/environ")).unwrap();
    let id = environ
        .split(|b| *b == 0)
        .find(|v| v.starts_with(b"COMMONDB_FLEET_ID="))
        .map(|v| String::from_utf8_lossy(&v[18..]).to_string())
        .expect("the instance knows its fleet");
    let mut stray = std::process::Command::new("sleep")
        .arg("60")
        .env("COMMONDB_FLEET_ID", &id)
        .spawn()
        .unwrap();
    up.signal(rustix::process::Signal::KILL);
    for pid in [writer, reader] {
        assert!(gone_within(pid, 10), "instance {pid} outlived the fleet");
    }
    Run::of(sb.command("fleet", &["up"]), None)
        .code(75)
        .stderr_has(&format!("{} (sleep)", stray.id()))
        .stderr_has("nothing was started twice");
    let _ = stray.kill();
    let _ = stray.wait();
}

#[test]
fn init_writes_a_fleet_toml_of_the_executables_beside_it_and_up_checks_it() {
    let sb = Sandbox::new();
    let run = sb.run("fleet", &["init"]);
    run.code(0).stdout_has("create-user");
    let text = std::fs::read_to_string(sb.root().join("fleet.toml")).unwrap();
    for exe in ["create-user", "get-user", "login", "log-event"] {
        assert!(text.contains(&format!("[services.{exe}]")), "{text}");
    }
    assert!(
        !text.contains("runmany") && !text.contains("[services.fleet]"),
        "{text}"
    );
    // Never over an existing file.
    sb.run("fleet", &["init"]).code(73).stderr_has("exists");
    // A mistake in it is named, and nothing starts.
    std::fs::write(
        sb.root().join("fleet.toml"),
        "[services.create-user]\nexe = \"create-user\"\nscael = 2\n",
    )
    .unwrap();
    Run::of(sb.command("fleet", &["up"]), None)
        .code(78)
        .stderr_has("scael");
}

#[test]
fn up_d_returns_once_ready_and_down_stops_it() {
    let sb = Sandbox::new();
    std::fs::write(sb.root().join("fleet.toml"), FAMILY).unwrap();
    let up = sb.run("fleet", &["up", "-d"]);
    up.code(0)
        .stdout_has("running in the background")
        .stdout_has("get-user");
    let instances = sb.run("fleet", &["ps", "--json"]).code(0).json();
    let create = instances[0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix(HTTP))
        .unwrap()
        .to_string();
    let (status, body) = e2e::http(
        &create,
        "POST",
        "/create",
        &[],
        br#"{"username": "alice", "email": "a@example.com"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let pids: Vec<u32> = instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap() as u32)
        .collect();
    // A second runtime of the same fleet is refused, and says why.
    sb.run("fleet", &["up", "-d"])
        .code(75)
        .stderr_has("another fleet up is running");
    sb.run("fleet", &["down"]).code(0);
    for pid in pids {
        assert!(gone_within(pid, 10), "instance {pid} outlived fleet down");
    }
}

/// How one request through the gateway went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Answered with this status.
    Status(u16),
    /// The gateway took no connection: the request was never sent.
    Refused,
    /// Taken, and closed without an answer.
    Unanswered,
}

/// `POST /create-user` of user `name` through the gateway at `addr`, on a connection of its own.
fn create_through(addr: &str, name: &str) -> Sent {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return Sent::Refused;
    };
    let body = format!(r#"{{"username":"{name}","email":"{name}@example.com"}}"#);
    let request = format!(
        "POST /create-user HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return Sent::Unanswered;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    match text.split(' ').nth(1).and_then(|s| s.parse().ok()) {
        Some(status) => {
            if status != 201 {
                // Shown when the test fails.
                eprintln!("{name} at {:?}: {text}", std::time::SystemTime::now());
            }
            Sent::Status(status)
        }
        None => Sent::Unanswered,
    }
}

/// Clients sending `create-user` requests through the gateway, one at a time each, until
/// stopped; every outcome, by request.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Vec<Sent>>>,
}

impl Load {
    fn start(addr: &str, clients: usize, prefix: &str) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|c| {
                let (stop, addr, prefix) = (stop.clone(), addr.to_string(), prefix.to_string());
                std::thread::spawn(move || {
                    let mut sent = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = create_through(&addr, &format!("{prefix}{c}x{}", sent.len()));
                        sent.push(outcome);
                        if outcome == Sent::Refused {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    sent
                })
            })
            .collect();
        Load { stop, clients }
    }

    fn finish(self) -> Vec<Sent> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    }
}

fn count(outcomes: &[Sent], which: Sent) -> usize {
    outcomes.iter().filter(|o| **o == which).count()
}

/// The users `prefix` names in the sandbox's users database.
fn users_named(sb: &Sandbox, prefix: &str) -> i64 {
    let out = sb
        .run(
            "list-users",
            &["--list", "--prefix", prefix, "--limit", "1000000", "--json"],
        )
        .code(0)
        .stdout
        .clone();
    out.lines().count() as i64
}

/// A fleet of create-user behind a gateway on a free port; the gateway's address.
fn gateway_fleet(sb: &Sandbox, scale: u32) -> (Up, String) {
    gateway_fleet_with(sb, "listen = \"http://127.0.0.1:0\"", scale)
}

/// The same with the `[gateway]` table's lines `gateway`.
fn gateway_fleet_with(sb: &Sandbox, gateway: &str, scale: u32) -> (Up, String) {
    let up = Up::start(
        sb,
        &format!(
            "[gateway]\n{gateway}\n\n[services.create-user]\nexe = \"create-user\"\nscale = {scale}\nbackoff_initial_ms = 50\n"
        ),
    );
    let gateway = up.gateway();
    up.wait(20, "every instance is ready", |l| {
        l.starts_with("fleet: every instance is ready")
            .then_some(())
    });
    (up, gateway)
}

#[test]
fn the_gateway_routes_by_service_and_an_instance_killed_under_load_costs_no_ok_answer() {
    let sb = Sandbox::new();
    let (up, gateway) = gateway_fleet(&sb, 1);
    // Routed by path to the service's instance, as its own POST /create.
    let (status, body) = e2e::http(
        &gateway,
        "POST",
        "/create-user",
        &[],
        br#"{"username": "alice", "email": "a@example.com"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = e2e::http(&gateway, "POST", "/nope", &[], b"{}");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("create-user"), "{body}");
    let (status, body) = e2e::http(&gateway, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = e2e::http(&gateway, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"commondb_requests_total{service="create-user",instance="0",executable="create-user",outcome="ok"} 1"#)
            && metrics.contains(r#"fleet_gateway_requests_total{service="create-user",status="201"} 1"#),
        "{metrics}"
    );

    // Under load from 8 clients, the one instance is killed outright and comes back.
    let (pid, _) = up.ready("create-user.0", None);
    let load = Load::start(&gateway, 8, "k");
    std::thread::sleep(Duration::from_millis(300));
    // One-shot runs report their phases to the runtime, through the path it gave.
    let fifo = up.wait(5, "where one-shot runs report", |l| {
        l.strip_prefix("fleet: one-shot runs report to fleet top with COMMONDB_PERFORMANCE_REPORT=")
            .map(String::from)
    });
    // `fleet top` sees the traffic: requests per second, and the time of each phase; and the
    // one-shot runs of its interval.
    let mut top = sb.command(
        "fleet",
        &["top", "-n", "1", "--interval-ms", "1500", "--json"],
    );
    let top = top.stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        let name = format!("oneshot{i}");
        let mut cmd = sb.command(
            "create-user",
            &["--create", "--username", &name, "--email", "o@example.com"],
        );
        cmd.env("COMMONDB_PERFORMANCE_REPORT", &fifo);
        Run::of(cmd, None).code(0);
    }
    let top = top.wait_with_output().unwrap();
    assert!(top.status.success());
    let top: serde_json::Value = serde_json::from_slice(&top.stdout).unwrap();
    let runs = &top["runs"][0];
    assert_eq!(runs["executable"], "create-user", "{top}");
    assert_eq!(runs["runs"], 3, "{top}");
    assert!(runs["connect"]["p50_ms"].as_f64().unwrap() > 0.0, "{top}");
    let row = &top["services"][0];
    assert_eq!(row["service"], "create-user", "{top}");
    assert!(row["requests_per_second"].as_f64().unwrap() > 0.0, "{top}");
    for series in ["request", "prepare", "execute"] {
        assert!(row[series]["p50_ms"].as_f64().unwrap() > 0.0, "{top}");
        assert!(
            row[series]["p99_ms"].as_f64() >= row[series]["p50_ms"].as_f64(),
            "{top}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    e2e::signal(pid, rustix::process::Signal::KILL);
    up.ready("create-user.0", Some(pid));
    std::thread::sleep(Duration::from_millis(500));
    let outcomes = load.finish();
    let ok = count(&outcomes, Sent::Status(201));
    let unsure = count(&outcomes, Sent::Status(502));
    // Requests that came during the gap waited for the replacement (or got 503); only those
    // in flight in the killed instance may have been lost (502: it may have applied them).
    let others: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Sent::Status(201 | 502 | 503)))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert!(ok > 50, "{ok} ok answers");
    assert!(unsure <= 8, "{unsure} answers 502");
    let rows = users_named(&sb, "k");
    assert!(
        ok as i64 <= rows && rows <= (ok + unsure) as i64,
        "{rows} rows, {ok} answers 201, {unsure} answers 502"
    );
    drop(up);
}

#[test]
fn scaling_under_load_and_down_under_load_lose_no_request() {
    let sb = Sandbox::new();
    let (mut up, gateway) = gateway_fleet(&sb, 1);
    let load = Load::start(&gateway, 6, "s");
    std::thread::sleep(Duration::from_millis(300));
    sb.run("fleet", &["scale", "create-user=3"])
        .code(0)
        .stdout_has("scaled from 1 to 3");
    std::thread::sleep(Duration::from_millis(300));
    let ps = sb.run("fleet", &["ps", "--json"]).code(0).json();
    let served: Vec<u64> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["requests"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(served.len(), 3, "{ps}");
    // Least outstanding first: the new instances take their share.
    assert!(served.iter().all(|n| *n > 0), "{ps}");
    sb.run("fleet", &["restart", "create-user"])
        .code(0)
        .stdout_has("restarted 3 instance(s)");
    sb.run("fleet", &["scale", "create-user=1", "--json"])
        .code(0)
        .stdout_has(r#""ok":true"#);
    std::thread::sleep(Duration::from_millis(300));
    // Down while the clients still send: the gateway answers what it took, then closes.
    sb.run("fleet", &["down"]).code(0);
    assert_eq!(up.exit_code(), Some(0), "{}", up.out.text());
    let outcomes = load.finish();
    let ok = count(&outcomes, Sent::Status(201));
    let refused = count(&outcomes, Sent::Refused);
    let unanswered = count(&outcomes, Sent::Unanswered);
    assert!(
        ok + refused + unanswered == outcomes.len(),
        "every answer was 201: {:?}\n{}",
        outcomes
            .iter()
            .filter(|o| !matches!(o, Sent::Status(201) | Sent::Refused | Sent::Unanswered))
            .collect::<Vec<_>>(),
        up.out.text(),
    );
    // A connection the gateway had not read yet when it closed is closed unanswered (at most
    // one per client), and nothing of it is applied: every row is an answer 201.
    assert!(unanswered <= 6, "{unanswered} unanswered");
    assert!(ok > 50, "{ok}");
    assert_eq!(users_named(&sb, "s"), ok as i64);

    // Every line is in the service's log, prefixed and stamped, after the fleet stopped.
    let logs = sb.run("fleet", &["logs", "create-user", "-n", "100000"]);
    let text = logs.code(0).stdout.clone();
    for want in ["create-user.2: ready (pid ", "create-user.0: stopped"] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(
        text.lines().all(|l| l
            .split(' ')
            .nth(1)
            .is_some_and(|w| w.starts_with("create-user."))),
        "{text}"
    );
    let all = sb.run("fleet", &["logs", "-n", "3"]);
    let tail = all.code(0).stdout.clone();
    assert_eq!(tail.lines().count(), 3, "{tail}");
    sb.run("fleet", &["logs", "nope"])
        .code(64)
        .stderr_has("no service \"nope\"");
}

#[test]
fn a_stopped_service_is_answered_503_until_started() {
    let sb = Sandbox::new();
    let (up, gateway) = gateway_fleet(&sb, 1);
    sb.run("fleet", &["stop", "create-user"])
        .code(0)
        .stdout_has("stopped 1 instance(s)");
    let (status, body) = e2e::http(&gateway, "POST", "/create-user", &[], b"{}");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("no instance of create-user is ready"),
        "{body}"
    );
    let (status, _) = e2e::http(&gateway, "GET", "/healthz", &[], b"");
    assert_eq!(status, 503);
    sb.run("fleet", &["start", "create-user"])
        .code(0)
        .stdout_has("started 1 instance(s)");
    assert_eq!(create_through(&gateway, "back"), Sent::Status(201));
    sb.run("fleet", &["scale", "nope=2"])
        .code(70)
        .stderr_has("there is no service \"nope\"");
    sb.run("fleet", &["scale", "create-user"])
        .code(64)
        .stderr_has("SERVICE=N");
    drop(up);
}

#[test]
fn up_watch_restarts_a_service_whose_executable_changed_without_a_failed_request() {
    let sb = Sandbox::new();
    // A copy of create-user that the test replaces, as a build would.
    let exe = sb.root().join("create-user");
    std::fs::copy(e2e::bin("create-user"), &exe).unwrap();
    std::fs::write(
        sb.root().join("fleet.toml"),
        format!(
            "[gateway]\nlisten = \"http://127.0.0.1:0\"\n\n[services.create-user]\nexe = \"{}\"\nscale = 2\n",
            exe.display()
        ),
    )
    .unwrap();
    let mut cmd = sb.command("fleet", &["up", "--watch"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("fleet starts");
    let out = StderrLog::read(child.stdout.take().unwrap());
    let up = Up { child, out };
    let gateway = up.gateway();
    let (old0, _) = up.ready("create-user.0", None);
    let (old1, _) = up.ready("create-user.1", None);
    let load = Load::start(&gateway, 4, "w");
    std::thread::sleep(Duration::from_millis(300));
    let next = sb.root().join(".create-user.new");
    std::fs::copy(e2e::bin("create-user"), &next).unwrap();
    std::fs::rename(&next, &exe).unwrap();
    up.wait(20, "the restart", |l| {
        (l == "create-user: restarted 2 instance(s) of create-user").then_some(())
    });
    let (new0, _) = up.ready("create-user.0", Some(old0));
    let (new1, _) = up.ready("create-user.1", Some(old1));
    assert!(new0 != old0 && new1 != old1);
    std::thread::sleep(Duration::from_millis(200));
    let outcomes = load.finish();
    let ok = count(&outcomes, Sent::Status(201));
    assert_eq!(ok, outcomes.len(), "{outcomes:?}\n{}", up.out.text());
    assert_eq!(users_named(&sb, "w"), ok as i64);
}

#[test]
fn export_systemd_writes_units_systemd_accepts() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.root().join("fleet.toml"),
        format!(
            "{FAMILY}\n[services.login]\nexe = \"login\"\nlisten = [\"http://127.0.0.1:9443\"]\nrestart = \"on-failure\"\nenv = {{ COMMONDB_TASK__SESSION_TTL_SECS = \"60\", ODD = \"50% $HOME \\\"x\\\"\" }}\n"
        ),
    )
    .unwrap();
    // What comes from an env file stays in it: a unit is readable by every user.
    std::fs::write(sb.root().join("shop.env"), "SHOP_SECRET=hunter2\n").unwrap();
    let toml = std::fs::read_to_string(sb.root().join("fleet.toml")).unwrap();
    std::fs::write(
        sb.root().join("fleet.toml"),
        toml.replace(
            "[services.get-user]\nexe = \"get-user\"",
            "[services.get-user]\nexe = \"get-user\"\nenv_file = \"shop.env\"",
        ),
    )
    .unwrap();
    let units = sb.root().join("units");
    sb.run("fleet", &["export", "systemd", "units", "--name", "shop"])
        .code(0)
        .stdout_has("systemctl enable --now shop.target");
    let read = |name: &str| std::fs::read_to_string(units.join(name)).unwrap();
    let target = read("shop.target");
    assert!(
        target.contains("Wants=create-user-setup.service create-user@0.socket get-user-setup.service get-user@0.socket get-user@1.socket login-setup.service login@0.socket"),
        "{target}"
    );
    let get = read("get-user@.service");
    assert!(
        get.contains("After=get-user-setup.service create-user@0.service"),
        "{get}"
    );
    assert!(get.contains("--serve --listen http+systemd"), "{get}");
    assert!(
        get.contains("EnvironmentFile=/") && get.contains("shop.env\n") && !get.contains("hunter2"),
        "{get}"
    );
    let login = read("login@.service");
    assert!(login.contains("Restart=on-failure"), "{login}");
    assert!(
        login.contains(r#"Environment="ODD=50%% $HOME \"x\"""#),
        "{login}"
    );
    assert!(read("login@.socket").contains("ListenStream=127.0.0.1:9443\nReusePort=yes"));
    // Never over units already there, unless asked.
    sb.run("fleet", &["export", "systemd", "units", "--name", "shop"])
        .code(73)
        .stderr_has("--force");
    sb.run(
        "fleet",
        &["export", "systemd", "units", "--name", "shop", "--force"],
    )
    .code(0);
    sb.run("fleet", &["export", "systemd", "units", "--name", "Shop!"])
        .code(78)
        .stderr_has("not valid");
    if let Some(analyze) = e2e::tool("systemd-analyze", "systemd") {
        let out = std::process::Command::new(analyze)
            .args(["verify", "--man=no"])
            .args(
                [
                    "shop.target",
                    "get-user@1.service",
                    "get-user@1.socket",
                    "get-user-setup.service",
                    "login@0.service",
                ]
                .map(|u| units.join(u)),
            )
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "{said}");
    }
}

/// `curl -X POST https://<gateway>/create-user` trusting `ca`: whether it was answered 201.
fn created_over_tls(
    curl: &std::path::Path,
    gateway: &str,
    ca: &std::path::Path,
    name: &str,
) -> bool {
    let out = std::process::Command::new(curl)
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args([
            "-X",
            "POST",
            &format!("https://{gateway}/create-user"),
            "-d",
        ])
        .arg(format!(
            r#"{{"username": "{name}", "email": "{name}@example.com"}}"#
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout) == "201"
}

/// The gateway over TLS: `https://` with a throwaway CA's certificate, which curl trusts (and
/// another CA's client does not); SIGHUP loads another pair without a restart. Off loopback,
/// clear text is refused before anything starts.
#[test]
fn the_gateway_speaks_tls_and_reloads_its_certificate_on_sighup() {
    let (Some(openssl), Some(curl)) = (e2e::tool("openssl", "openssl"), e2e::tool("curl", "curl"))
    else {
        return;
    };
    let sb = Sandbox::new();
    let dir = sb.root();
    e2e::certificates(&openssl, dir, "one", "IP:127.0.0.1,DNS:localhost");
    e2e::certificates(&openssl, dir, "two", "IP:127.0.0.1,DNS:localhost");
    std::fs::copy(dir.join("one.pem"), dir.join("gateway.pem")).unwrap();
    std::fs::copy(dir.join("one.key"), dir.join("gateway.key")).unwrap();
    let https =
        "listen = \"https://127.0.0.1:0\"\ntls_cert = \"gateway.pem\"\ntls_key = \"gateway.key\"";
    let (up, gateway) = gateway_fleet_with(&sb, https, 1);
    let trusting = |ca: &str, name: &str| created_over_tls(&curl, &gateway, &dir.join(ca), name);
    assert!(trusting("one-ca.pem", "tls1"));
    assert!(!trusting("two-ca.pem", "tls2"));

    std::fs::copy(dir.join("two.pem"), dir.join("gateway.pem")).unwrap();
    std::fs::copy(dir.join("two.key"), dir.join("gateway.key")).unwrap();
    up.signal(rustix::process::Signal::HUP);
    up.wait(10, "the reload note", |l| {
        l.contains("SIGHUP: the gateway's TLS certificate and key were read again")
            .then_some(())
    });
    assert!(trusting("two-ca.pem", "tls3"));
    assert!(!trusting("one-ca.pem", "tls4"));
    drop(up);
    let users = e2e::sqlite_count(&sb.database("create-user"), "SELECT COUNT(*) FROM users");
    assert_eq!(users, 2, "the two requests a trusted certificate carried");

    // Off loopback: the token, and TLS unless the operator opts out; refused before binding.
    std::fs::write(dir.join("token"), "a-token-of-the-gateway-0123").unwrap();
    for (listen, says) in [
        (
            "http://0.0.0.0:0\"\ntoken_file = \"token",
            "gateway.allow_plaintext",
        ),
        ("https://0.0.0.0:0", "gateway.tls_cert"),
    ] {
        std::fs::write(
            dir.join("fleet.toml"),
            format!("[gateway]\nlisten = \"{listen}\"\n\n[services.create-user]\nexe = \"create-user\"\n"),
        )
        .unwrap();
        Run::of(sb.command("fleet", &["up"]), None)
            .code(78)
            .stderr_has(says);
    }
}
