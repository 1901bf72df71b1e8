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
    up.signal(rustix::process::Signal::KILL);
    for pid in [writer, reader] {
        assert!(gone_within(pid, 10), "instance {pid} outlived the fleet");
    }
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
