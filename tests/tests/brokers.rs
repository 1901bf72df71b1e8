//! Executables as workers on a broker: `--serve --listen nats://…` answers the requests of
//! `<prefix>.<exe>` in queue group `<exe>` on the machine's NATS server (started by
//! scripts/test in CI), and `runmany --serve nats://…` sends them, on every backend. Each test
//! has a subject prefix of its own, so tests running at once never answer each other.

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

on_every_backend!(workers_on_nats_answer_runmany_once_each);

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
    // the other one, and every request is applied once.
    let load = sb
        .command("runmany", &["-n", "600", "-j", "8", "--serve", &url, EXE])
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
