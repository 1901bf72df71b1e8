//! Request ids: the same id sent twice, over each transport, writes one row and gets the same
//! answer twice, on every backend; duplicates sent at the same moment too. `log-event` is the
//! executable here because sending its request again would append a second event: only the
//! id keeps it from doing so (create-user's own unique username would hide a missing one).

use commondb::protocol::listen::{HTTP, TCP};
use e2e::{Backend, BackendSandbox, on_every_backend};

const EXE: &str = "log-event";

on_every_backend!(
    the_same_id_twice_writes_once_and_answers_the_same,
    duplicates_at_the_same_moment_write_once,
);

fn events(sb: &BackendSandbox) -> i64 {
    sb.count(EXE, "SELECT COUNT(*) FROM events")
}

fn nats_server() -> Option<String> {
    let server = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let host_port = server.trim_start_matches("nats://").to_string();
    if std::net::TcpStream::connect(&host_port).is_ok() {
        return Some(host_port);
    }
    assert!(
        !e2e::ci(),
        "no NATS server at {host_port}, and CI=true requires it"
    );
    eprintln!("SKIPPED the NATS part: no server at {host_port}");
    None
}

fn the_same_id_twice_writes_once_and_answers_the_same(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let nats = nats_server();
    let prefix = format!("e2e_ids_{backend:?}_{}", std::process::id()).to_lowercase();
    let mut listen = vec![
        "--listen".to_string(),
        format!("{TCP}127.0.0.1:0"),
        "--listen".into(),
        format!("{HTTP}127.0.0.1:0"),
    ];
    if let Some(server) = &nats {
        listen.extend([
            "--listen".into(),
            format!("nats://{server}?prefix={prefix}"),
        ]);
    }
    let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
    let served = sb.serve(EXE, &listen);
    let mut line = served.client();
    let before = events(&sb);

    // The line protocol: a JSON field, or --request-id among the words.
    let json = r#"{"kind": "id.json", "payload": "{\"n\": 1}", "request_id": "line-json-1"}"#;
    let first = line.call(json);
    assert!(first.ok, "{first:?}");
    let again = line.call(json);
    assert_eq!(first, again, "the first answer, again");
    assert_eq!(events(&sb), before + 1, "one row for one id");

    let words = "--kind id.words --request-id line-words-1";
    let first = line.call(words);
    assert_eq!(line.call(words), first);
    assert_eq!(events(&sb), before + 2);
    // The id decides: other arguments under a seen id get the first answer, and write nothing.
    let changed = line.call("--kind id.other --request-id line-words-1");
    assert_eq!(changed, first);
    assert_eq!(events(&sb), before + 2);
    // An id is per executable and request; another id is another request.
    assert!(line.call("--kind id.words --request-id line-words-2").ok);
    assert_eq!(events(&sb), before + 3);

    // HTTP: the Idempotency-Key header; 201 both times, the same body.
    let http = served.address(HTTP);
    let post = |key: &str| {
        e2e::http(
            &http,
            "POST",
            "/log",
            &[
                ("Idempotency-Key", key),
                ("Content-Type", "application/json"),
            ],
            br#"{"kind": "id.http"}"#,
        )
    };
    let (status, body) = post("http-1");
    assert_eq!(status, 201, "{body}");
    assert_eq!(post("http-1"), (201, body.clone()));
    assert_eq!(events(&sb), before + 4);
    // A header and a field that disagree are refused; a malformed id too, and nothing is written.
    let (status, body) = e2e::http(
        &http,
        "POST",
        "/log",
        &[("Idempotency-Key", "http-2")],
        br#"{"kind": "id.http", "request_id": "http-3"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("differs"), "{body}");
    let bad = line.call(r#"{"kind": "id.bad", "request_id": "has space"}"#);
    assert_eq!(bad.kind(), Some("usage"), "{bad:?}");
    assert_eq!(events(&sb), before + 4);
    // A refused request records nothing: corrected, the same id goes through.
    let refused = line.call(r#"{"kind": "9bad", "request_id": "fixed-1"}"#);
    assert_eq!(refused.kind(), Some("invalid_input"), "{refused:?}");
    assert!(
        line.call(r#"{"kind": "id.fixed", "request_id": "fixed-1"}"#)
            .ok
    );
    assert_eq!(events(&sb), before + 5);

    // NATS: the Nats-Msg-Id header.
    if let Some(server) = nats {
        let subject = format!("{prefix}.{EXE}");
        let answers: Vec<Vec<u8>> = e2e::block_on(async move {
            let client = async_nats::connect(server.as_str()).await.unwrap();
            let mut answers = Vec::new();
            for _ in 0..2 {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", "nats-1");
                let request = async_nats::Request::new()
                    .headers(headers)
                    .payload(br#"{"kind": "id.nats"}"#.to_vec().into());
                let reply = client.send_request(subject.clone(), request).await.unwrap();
                answers.push(reply.payload.to_vec());
            }
            answers
        });
        assert_eq!(answers[0], answers[1]);
        assert!(String::from_utf8_lossy(&answers[0]).contains(r#""ok":true"#));
        assert_eq!(events(&sb), before + 6);
    }
    let replayed = served
        .metric(&format!(
            "commondb_requests_replayed_total{{executable=\"{EXE}\"}}"
        ))
        .unwrap_or(-1.0);
    assert!(replayed >= 4.0, "{replayed}");
    let (code, _) = served.terminate();
    assert_eq!(code, Some(0));
}

fn duplicates_at_the_same_moment_write_once(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let served = sb.serve(EXE, &["--listen", &format!("{TCP}127.0.0.1:0")]);
    let before = events(&sb);
    // Eight clients send the same three ids at once, each on its own connection.
    let answers: Vec<Vec<commondb::protocol::Answer>> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut client = served.client();
                    (0..3)
                        .map(|i| client.call(&format!("--kind id.race --request-id race-{i}")))
                        .collect()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for i in 0..3 {
        let first = &answers[0][i];
        assert!(first.ok, "{first:?}");
        for other in &answers {
            assert_eq!(&other[i], first, "every client gets the first answer");
        }
    }
    assert_eq!(events(&sb), before + 3, "one row per id");
    let (code, _) = served.terminate();
    assert_eq!(code, Some(0));
}
