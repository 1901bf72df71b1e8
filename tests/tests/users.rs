//! The `users` domain on SQLite, PostgreSQL and MariaDB: `create-user`, `get-user`,
//! `list-users`, `delete-user`, `set-password` and `login` share one database, its schema and
//! its backups, each with a role of its own on a server that holds only the rights its task
//! declares, and live their whole life through the same harness: setup, the tasks, the
//! self-test, backup and restore, `--serve` (GET for the read tasks), `runmany` on a fresh
//! database (the rows the samples need seeded first), cleanup.

use commondb::protocol::listen::HTTP;
use e2e::{Backend, BackendSandbox, Run, Sandbox, on_every_backend};

const CREATE: &str = "create-user";
const FAMILY: [&str; 5] = [
    "get-user",
    "list-users",
    "delete-user",
    "set-password",
    "login",
];

on_every_backend!(
    the_users_domain_lives_its_whole_life,
    many_rows_stream_and_a_service_answers_a_bounded_page,
);

fn users(sb: &BackendSandbox) -> i64 {
    sb.count(CREATE, "SELECT COUNT(*) FROM users")
}

fn sessions(sb: &BackendSandbox) -> i64 {
    sb.count(CREATE, "SELECT COUNT(*) FROM sessions")
}

fn login(sb: &BackendSandbox, name: &str, password: &str) -> Run {
    sb.run_with_input(
        "login",
        &["--login", "--username", name, "--password-stdin", "--json"],
        &format!("{password}\n"),
    )
}

/// The JSON objects of `text`, one per line.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// As `exe`'s own role, `sql` is refused for lack of a right.
fn refused_as(sb: &BackendSandbox, exe: &str, sql: &str) {
    let db = sb.server();
    let (user, pw) = sb.credentials(exe, "app");
    let e = db
        .exec_as(&user, &pw, &db.name, sql)
        .expect_err(&format!("{exe} may run {sql}"));
    assert!(e.contains("denied"), "{exe}: {sql}: {e}");
}

fn the_users_domain_lives_its_whole_life(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(CREATE, &["--self-setup"]).code(0);
    // The others find the schema there; on a server each gets a role of its own.
    for exe in FAMILY {
        let setup = sb.run_admin(exe, &["--self-setup"]);
        setup.code(0).stdout_has("no pending migrations");
        if backend != Backend::Sqlite {
            let role = format!("{}_{} (created)", sb.server().name, exe.replace('-', "_"));
            setup.stdout_has(&role);
        }
    }
    sb.create_user("alice", "alice@example.com").code(0);
    sb.create_user_with_password("bob", "bob@example.com", "correct horse")
        .code(0);

    // get-user: one user, or not_found.
    let got = sb.run("get-user", &["--get", "--username", "bob", "--json"]);
    let doc = got.code(0).json();
    assert_eq!(doc["email"], "bob@example.com");
    assert_eq!(doc["has_password"], true);
    got.never_shows("argon2");
    sb.run("get-user", &["--get", "--username", "nobody"])
        .code(67)
        .stderr_has("there is no user \"nobody\"");

    // list-users: rows streamed to stdout, one JSON object per line with --json; the count and
    // the next page's cursor on stderr.
    let page = sb.run("list-users", &["--list", "--limit", "1", "--json"]);
    page.code(0);
    let rows = json_lines(&page.stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["username"], "alice");
    let summary: serde_json::Value = serde_json::from_str(page.stderr.trim()).unwrap();
    assert_eq!(summary["count"], 1);
    let next = summary["next"].as_i64().expect("a next page");
    let rest = sb.run(
        "list-users",
        &["--list", "--after", &next.to_string(), "--json"],
    );
    rest.code(0);
    let rows = json_lines(&rest.stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["username"], "bob");
    assert!(rest.stderr.contains(r#""next":null"#), "{}", rest.stderr);
    // Without --json and not on a terminal: tab-separated lines, as psql -At prints them.
    let plain = sb.run("list-users", &["--list", "--prefix", "bo"]);
    plain.code(0).stderr_has("1 user(s)");
    assert!(
        plain
            .stdout
            .starts_with(&format!("{}\tbob\tbob@example.com\tyes\t", next + 1)),
        "{}",
        plain.stdout
    );

    // login: the token is printed once and only its hash is stored; a wrong password and an
    // unknown user get the same answer.
    let ok = login(&sb, "bob", "correct horse");
    let token = ok.code(0).json()["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64);
    assert_eq!(sessions(&sb), 1);
    assert_eq!(
        sb.count(
            CREATE,
            &format!("SELECT COUNT(*) FROM sessions WHERE token_hash = '{token}'")
        ),
        0,
        "the token itself is not stored"
    );
    let wrong = login(&sb, "bob", "wrong horse");
    let unknown = login(&sb, "nobody", "correct horse");
    let no_password = login(&sb, "alice", "anything");
    for refused in [&wrong, &unknown, &no_password] {
        refused.code(77);
    }
    assert_eq!(wrong.json()["error"], unknown.json()["error"]);
    assert_eq!(wrong.json()["error"], no_password.json()["error"]);
    assert_eq!(sessions(&sb), 1, "a refused login opens no session");

    // set-password: the new password works, the old one no longer does.
    sb.run_with_input(
        "set-password",
        &["--set", "--username", "bob", "--password-stdin"],
        "battery staple\n",
    )
    .code(0)
    .stdout_has("set a new password for user bob");
    login(&sb, "bob", "correct horse").code(77);
    login(&sb, "bob", "battery staple").code(0);
    sb.run_with_input(
        "set-password",
        &["--set", "--username", "nobody", "--password-stdin"],
        "x\n",
    )
    .code(67);

    // Least privilege: each role is refused what its task does not declare.
    if backend != Backend::Sqlite {
        let insert = "INSERT INTO users (username, email, created_at) \
                      VALUES ('eve', 'e@example.com', CURRENT_TIMESTAMP)";
        let update = "UPDATE users SET email = 'x@example.com'";
        let delete = "DELETE FROM users";
        let sneaky = "CREATE TABLE sneaky (id INT)";
        for sql in [insert, delete, update, "DELETE FROM sessions", sneaky] {
            refused_as(&sb, "list-users", sql);
            refused_as(&sb, "get-user", sql);
        }
        for sql in [insert, update, "UPDATE sessions SET user_id = 0", sneaky] {
            refused_as(&sb, "delete-user", sql);
        }
        for sql in [delete, update, "SELECT * FROM sessions", sneaky] {
            refused_as(&sb, "login", sql);
        }
        for sql in [insert, delete, "SELECT * FROM sessions", sneaky] {
            refused_as(&sb, "set-password", sql);
        }
        refused_as(&sb, CREATE, sneaky);
    }

    // Each takes a backup of the domain's tables; any of them restores any of them.
    for exe in FAMILY {
        let backup = sb.run(exe, &["--self-backup", "--json"]);
        let doc = backup.code(0).json();
        assert_eq!(doc["tables"].as_array().map(Vec::len), Some(2), "{exe}");
    }
    let backup = sb.run("get-user", &["--self-backup", "--json"]);
    let file = backup.code(0).json()["file"].as_str().unwrap().to_string();
    assert!(file.contains("/users-"), "{file}");

    // delete-user: the user and their sessions go; again, not_found.
    sb.run("delete-user", &["--delete", "--username", "bob"])
        .code(0)
        .stdout_has("deleted user bob")
        .stdout_has("2 session(s)");
    assert_eq!((users(&sb), sessions(&sb)), (1, 0));
    sb.run("delete-user", &["--delete", "--username", "bob"])
        .code(67);
    sb.run_admin("delete-user", &["--self-restore", "--yes", "--from", &file])
        .code(0);
    assert_eq!((users(&sb), sessions(&sb)), (2, 2), "bob is back");

    // --serve: a read task answers GET with a query string as well as POST.
    let served = sb.serve("get-user", &["--listen", &format!("{HTTP}127.0.0.1:0")]);
    let addr = served.address(HTTP);
    let (status, body) = e2e::http(&addr, "GET", "/get?username=bob", &[], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("bob@example.com"), "{body}");
    let (status, body) = e2e::http(&addr, "GET", "/get?username=nobody", &[], b"");
    assert_eq!(status, 404, "{body}");
    let (status, _) = e2e::http(&addr, "POST", "/get", &[], br#"{"username": "alice"}"#);
    assert_eq!(status, 200);
    let (code, _) = served.terminate();
    assert_eq!(code, Some(0));
    // A listing served: one document with the rows and the next cursor.
    let served = sb.serve("list-users", &["--listen", &format!("{HTTP}127.0.0.1:0")]);
    let (status, body) = e2e::http(&served.address(HTTP), "GET", "/list?limit=1", &[], b"");
    assert_eq!(status, 200, "{body}");
    let result = e2e::result(&e2e::answer(&body)).clone();
    assert_eq!(result["rows"][0]["username"], "alice", "{body}");
    assert_eq!(result["count"], 1);
    assert!(result["next"].is_i64(), "{body}");
    served.terminate();
    let served = sb.serve("delete-user", &["--listen", &format!("{HTTP}127.0.0.1:0")]);
    let (status, _) = e2e::http(
        &served.address(HTTP),
        "GET",
        "/delete?username=bob",
        &[],
        b"",
    );
    assert_eq!(status, 405, "a task that writes takes no GET");
    served.terminate();

    // runmany on each: the rows the samples need are seeded first, and it says so.
    for exe in FAMILY {
        Run::of(
            sb.command_admin("runmany", &["-n", "12", "-j", "4", exe]),
            None,
        )
        .code(0)
        .stderr_has("seeded 12 row(s)");
    }

    // Every one reports the domain's schema, and passes its own self-test on a scratch
    // database (its role refused every right it does not declare, on a server).
    for exe in FAMILY {
        sb.run(exe, &["--self-status"])
            .code(0)
            .stdout_has("version 3, binary has 3: current");
        let selftest = sb.run_admin(exe, &["--self-test"]);
        selftest
            .code(0)
            .stdout_has("the rows the samples need are seeded")
            .stdout_has("0 failed");
        if backend != Backend::Sqlite {
            selftest.stdout_has("the app role is refused every right");
        }
    }

    let cleanup = sb.run_admin("list-users", &["--self-cleanup", "--yes"]);
    cleanup.code(0).stdout_has("removed the database");
    if backend != Backend::Sqlite {
        // Every role of the domain went with the database.
        assert_eq!(sb.server().leftovers(), Vec::<String>::new());
    }
}

/// A `create-user.sqlite3` of an earlier version is never hidden behind a new, empty
/// `users.sqlite3`: every mode says how to move it.
#[test]
fn an_earlier_versions_database_file_is_moved_by_hand_never_replaced() {
    let sb = Sandbox::new();
    sb.create_user("alice", "alice@example.com").code(0);
    let data = sb.database(CREATE).parent().unwrap().to_path_buf();
    std::fs::rename(data.join("users.sqlite3"), data.join("create-user.sqlite3")).unwrap();
    for args in [
        &["--create", "--username", "bob", "--email", "b@example.com"][..],
        &["--self-setup"],
        &["--self-status"],
    ] {
        sb.run(CREATE, args)
            .code(78)
            .stderr_has("create-user.sqlite3 holds this executable's data")
            .stderr_has("mv ");
    }
    // Nor do the domain's other executables start one.
    sb.run("list-users", &["--list"])
        .code(78)
        .stderr_has("create-user.sqlite3 holds this executable's data");
    assert!(
        !data.join("users.sqlite3").exists(),
        "no new, empty database"
    );
    std::fs::rename(data.join("create-user.sqlite3"), data.join("users.sqlite3")).unwrap();
    sb.run("get-user", &["--get", "--username", "alice"])
        .code(0);
}

/// More rows than a service holds in one answer stream in process mode; a service refuses a
/// page that large and says how to page instead.
fn many_rows_stream_and_a_service_answers_a_bounded_page(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(CREATE, &["--self-setup"]).code(0);
    sb.run_admin("list-users", &["--self-setup"]).code(0);
    let n = commondb::MAX_SERVED_ROWS as u32 + 500;
    sb.fill_users(n);
    let all = sb.run("list-users", &["--list", "--limit", "20000", "--json"]);
    all.code(0);
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(lines.len(), n as usize);
    let ids: Vec<i64> = json_lines(&all.stdout)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order");
    assert!(all.stderr.contains(r#""next":null"#), "{}", all.stderr);

    let served = sb.serve("list-users", &["--listen", &format!("{HTTP}127.0.0.1:0")]);
    let (status, body) = e2e::http(&served.address(HTTP), "GET", "/list?limit=20000", &[], b"");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("at most 10000 rows"), "{body}");
    let (status, body) = e2e::http(&served.address(HTTP), "GET", "/list?limit=10000", &[], b"");
    assert_eq!(status, 200);
    let result = e2e::result(&e2e::answer(&body)).clone();
    assert_eq!(result["rows"].as_array().unwrap().len(), 10_000);
    assert!(result["next"].is_i64(), "a next page");
    served.terminate();
}
