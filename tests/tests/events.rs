//! The `events` domain on SQLite, PostgreSQL and MariaDB: `log-event` (an append-only log: no
//! unique key, a free-form JSON payload, a repeat that appends again) and `list-events` (a
//! read-only task returning pages of it) share one database, its credentials and its backups,
//! and live their whole life through the same harness: setup, the tasks, status, the
//! self-tests, backup and restore, `--serve`, `runmany`, cleanup.

use commondb::protocol::listen::{HTTP, TCP};
use e2e::{Backend, BackendSandbox, Run, on_every_backend};

const EXE: &str = "log-event";
const LIST: &str = "list-events";

on_every_backend!(the_events_domain_lives_its_whole_life);

fn events(sb: &BackendSandbox) -> i64 {
    sb.count(EXE, "SELECT COUNT(*) FROM events")
}

fn the_events_domain_lives_its_whole_life(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"])
        .code(0)
        .stdout_has("set up on");
    sb.run(EXE, &["--self-status"])
        .code(0)
        .stdout_has("current");

    // The task: an event and its payload; the same event again is a second entry.
    let payload = r#"{"user": "alice", "from": ["10.0.0.1"]}"#;
    sb.run(
        EXE,
        &["--log", "--kind", "user.login", "--payload", payload],
    )
    .code(0)
    .stdout_has("logged event 1 user.login (2 field(s))");
    let again = sb.run(
        EXE,
        &[
            "--log",
            "--kind",
            "user.login",
            "--payload",
            payload,
            "--json",
        ],
    );
    again.code(0);
    let doc = again.json();
    assert_eq!(doc["id"], 2);
    assert_eq!(doc["payload"]["from"][0], "10.0.0.1");
    sb.run(EXE, &["--log", "--kind", "user.login", "--payload", "[1]"])
        .code(65)
        .stderr_has("must be a JSON object, not an array");
    sb.run(EXE, &["--log", "--kind", "Bad Kind"])
        .code(65)
        .stderr_has("kind \"Bad Kind\" is not valid");
    assert_eq!(events(&sb), 2, "refused requests wrote nothing");
    assert_eq!(
        sb.count(
            EXE,
            "SELECT COUNT(*) FROM events WHERE payload = '{\"from\":[\"10.0.0.1\"],\"user\":\"alice\"}'"
        ),
        2,
        "the payload is stored as compact JSON"
    );

    sb.run_admin(EXE, &["--self-test"])
        .code(0)
        .stdout_has("0 failed");

    // list-events reads the same log. On a server it has a role of its own, made by its own
    // setup (the schema is already there), that may only read.
    let list_setup = sb.run_admin(LIST, &["--self-setup"]);
    list_setup.code(0).stdout_has("no pending migrations");
    if backend != Backend::Sqlite {
        let db = sb.server();
        list_setup.stdout_has(&format!("{}_list_events (created)", db.name));
        let (user, pw) = sb.credentials(LIST, "app");
        db.exec_as(&user, &pw, &db.name, "SELECT COUNT(*) FROM events")
            .unwrap();
        for forbidden in [
            "INSERT INTO events (kind, payload, created_at) VALUES ('x', '{}', CURRENT_TIMESTAMP)",
            "DELETE FROM events",
            "UPDATE events SET kind = 'y'",
            "CREATE TABLE sneaky (id INT)",
        ] {
            let e = db
                .exec_as(&user, &pw, &db.name, forbidden)
                .expect_err(forbidden);
            assert!(e.contains("denied"), "{forbidden}: {e}");
        }
    }
    // A page at a time, by kind.
    let page = sb.run(
        LIST,
        &["--list", "--kind", "user.login", "--limit", "1", "--json"],
    );
    page.code(0);
    let doc = page.json();
    assert_eq!(doc["events"][0]["id"], 1);
    assert_eq!(doc["events"][0]["payload"]["user"], "alice");
    assert_eq!(doc["next"], 1);
    let last = sb.run(
        LIST,
        &["--list", "--kind", "user.login", "--after", "1", "--json"],
    );
    last.code(0);
    let doc = last.json();
    assert_eq!(doc["events"][0]["id"], 2);
    assert!(doc["next"].is_null(), "{doc}");
    sb.run(LIST, &["--list"])
        .code(0)
        .stdout_has("user.login")
        .stdout_has("2 event(s)");
    sb.run(LIST, &["--list", "--limit", "0"])
        .code(65)
        .stderr_has("--limit 0 is out of range");
    sb.run_admin(LIST, &["--self-test"])
        .code(0)
        .stdout_has("the rows the samples need are seeded")
        .stdout_has("0 failed");
    assert_eq!(
        events(&sb),
        2,
        "listing and the self-test's scratch database wrote nothing here"
    );

    // Backup and restore: a third event goes away again with the restore.
    let backup = sb.run(EXE, &["--self-backup", "--json"]);
    backup.code(0);
    let file = backup.json()["file"].as_str().unwrap().to_string();
    // The domain's backups, named after it.
    assert!(file.contains("/events-"), "{file}");
    sb.run(EXE, &["--log", "--kind", "later"]).code(0);
    assert_eq!(events(&sb), 3);
    // Any executable of the domain restores its backups.
    sb.run_admin(LIST, &["--self-restore", "--yes", "--from", &file])
        .code(0)
        .stdout_has("restored 2 row(s)");
    assert_eq!(events(&sb), 2);
    // The log goes on after its restored ids.
    sb.run(EXE, &["--log", "--kind", "after.restore"])
        .code(0)
        .stdout_has("logged event 4 after.restore");

    // --serve: over the line protocol (words and JSON) and HTTP, with a 201 for an append.
    let served = sb.serve(
        EXE,
        &[
            "--listen",
            &format!("{TCP}127.0.0.1:0"),
            "--listen",
            &format!("{HTTP}127.0.0.1:0"),
        ],
    );
    let mut client = served.client();
    let answer = client.call("--kind served.line --payload '{\"n\": 1}'");
    assert!(answer.ok, "{answer:?}");
    let answer = client.call(r#"{"kind": "served.json", "payload": "{\"n\": 2}"}"#);
    assert!(answer.ok, "{answer:?}");
    let answer = client.call("--kind served.line --payload 'nope'");
    assert_eq!(answer.kind(), Some("invalid_input"), "{answer:?}");
    let (status, body) = e2e::http(
        &served.address(HTTP),
        "POST",
        "/log",
        &[],
        br#"{"kind": "served.http"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (code, _) = served.terminate();
    assert_eq!(code, Some(0));
    assert_eq!(events(&sb), 6);
    let listing = sb.serve(LIST, &["--listen", &format!("{HTTP}127.0.0.1:0")]);
    let (status, body) = e2e::http(
        &listing.address(HTTP),
        "POST",
        "/list",
        &[],
        br#"{"kind": "served.json"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let answer = e2e::answer(&body);
    assert_eq!(e2e::result(&answer)["events"][0]["kind"], "served.json");
    listing.terminate();

    // runmany: every instance appends its own sample event.
    Run::of(
        sb.command("runmany", &["-q", "-n", "30", "-j", "4", EXE]),
        None,
    )
    .code(0);
    assert_eq!(events(&sb), 36);
    // ... and every instance of list-events reads a page of the events runmany has it seed
    // first (as the owner: on a server, with the administrator's URL), and says so.
    Run::of(
        sb.command_admin("runmany", &["-n", "30", "-j", "4", LIST]),
        None,
    )
    .code(0)
    .stderr_has("seeded 3 row(s)");
    assert_eq!(
        events(&sb),
        39,
        "the seed's 3 events, and nothing else written"
    );

    let cleanup = sb.run_admin(EXE, &["--self-cleanup", "--yes"]);
    cleanup.code(0).stdout_has("removed the database");
    if backend == Backend::Sqlite {
        assert!(!sb.database(EXE).exists());
    } else {
        assert!(
            sb.server().leftovers().is_empty(),
            "{:?}",
            sb.server().leftovers()
        );
    }
}
