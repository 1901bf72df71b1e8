//! The scenarios every backend shares, run on SQLite, PostgreSQL and MariaDB: the lifecycle,
//! `--json`, passwords, status, the self-test and concurrency. Each server test has its own
//! uniquely named database and roles, dropped afterwards whatever happened.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use e2e::{Backend, BackendSandbox, concurrent_creates, on_every_backend};

const EXE: &str = "create-user";

on_every_backend!(
    setup_create_duplicate_invalid_cleanup_lifecycle,
    json_output_is_one_document_for_results_and_for_errors,
    a_password_is_read_from_stdin_and_stored_only_as_an_argon2id_hash,
    status_reports_setup_needed_then_current_then_drift,
    cleanup_without_a_terminal_needs_yes_and_keeps_the_database,
    self_test_passes_on_its_own_scratch_database,
    fifty_concurrent_creates_all_succeed,
);

fn users(sb: &BackendSandbox) -> i64 {
    sb.count(EXE, "SELECT COUNT(*) FROM users")
}

fn mode_of(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn setup_create_duplicate_invalid_cleanup_lifecycle(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let setup = sb.run_admin(EXE, &["--self-setup"]);
    setup
        .code(0)
        .stdout_has("set up on")
        .stdout_has("(created)");
    match backend {
        Backend::Sqlite => {
            assert_eq!(mode_of(&sb.database(EXE)), 0o600);
            assert_eq!(mode_of(&sb.data_dir()), 0o700);
        }
        _ => {
            let name = &sb.server().name;
            setup
                .stdout_has(&format!("role:     {name}_create_user (created)"))
                .stdout_has(&format!("{name}_create_user_backup (created)"));
            let secrets = sb.secrets_dir().join("create-user.toml");
            assert_eq!(mode_of(&secrets), 0o600);
            assert_eq!(mode_of(&sb.secrets_dir()), 0o700);
            setup.never_shows(&sb.credentials(EXE, "app").1);
        }
    }
    sb.run_admin(EXE, &["--self-setup"])
        .code(0)
        .stdout_has("already set up");

    // The task needs no administrator: `run` passes no COMMONDB_ADMIN_URL.
    sb.create_user("alice", "alice@example.com")
        .code(0)
        .stdout_has("created user alice <alice@example.com>");
    sb.create_user("alice", "other@example.com")
        .code(73)
        .stderr_has("username \"alice\" is already taken")
        .stderr_has("hint:");
    sb.create_user("bob", "not-an-address")
        .code(65)
        .stderr_has("email \"not-an-address\" is not valid");
    sb.create_user("B", "b@example.com")
        .code(65)
        .stderr_has("3 to 32 characters");
    assert_eq!(users(&sb), 1, "refused requests wrote nothing");

    let cleanup = sb.run_admin(EXE, &["--self-cleanup", "--yes"]);
    cleanup.code(0).stdout_has("removed the database");
    match backend {
        Backend::Sqlite => {
            let left: Vec<_> = fs::read_dir(sb.data_dir())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "cleanup left {left:?}");
        }
        _ => {
            assert_eq!(sb.server().leftovers(), Vec::<String>::new());
            assert!(!sb.secrets_dir().join("create-user.toml").exists());
            cleanup
                .stdout_has("dropped database")
                .stdout_has("dropped role");
        }
    }
    sb.run_admin(EXE, &["--self-cleanup", "--yes"])
        .code(0)
        .stdout_has("nothing to clean up");
}

fn json_output_is_one_document_for_results_and_for_errors(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let doc = sb
        .run_admin(EXE, &["--self-setup", "--json"])
        .code(0)
        .json();
    assert_eq!(doc["created"], true);
    assert_eq!(doc["schema_version"], 3);
    assert_eq!(doc["applied"][0]["description"], "users");
    assert_eq!(doc["applied"][1]["description"], "sessions");
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::MySql => "mysql",
    };
    assert_eq!(doc["backend"], expected);
    if backend != Backend::Sqlite {
        assert_eq!(doc["roles"].as_array().unwrap().len(), 2);
        assert_eq!(doc["secrets_written"], true);
    }

    let user = sb
        .run(
            EXE,
            &[
                "--create",
                "--username",
                "alice",
                "--email",
                "a@example.com",
                "--json",
            ],
        )
        .code(0)
        .json();
    assert_eq!(user["id"], 1);
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "a@example.com");
    assert_eq!(user["has_password"], false);
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        user.as_object().unwrap().len(),
        5,
        "no hash or other field leaks: {user}"
    );

    let err = sb
        .run(
            EXE,
            &[
                "--create",
                "--username",
                "alice",
                "--email",
                "a@example.com",
                "--json",
            ],
        )
        .code(73)
        .json();
    assert_eq!(err["error"]["kind"], "conflict");
    assert_eq!(err["error"]["exit_code"], 73);
    assert!(err["error"]["message"].as_str().unwrap().contains("alice"));
    assert!(err["error"]["hint"].is_string());

    let status = sb.run(EXE, &["--self-status", "--json"]).code(0).json();
    assert_eq!(status["state"], "current");
    assert_eq!(status["reachable"], true);

    let cleanup = sb
        .run_admin(EXE, &["--self-cleanup", "--yes", "--json"])
        .code(0)
        .json();
    assert_eq!(cleanup["backend"], expected);
    assert!(!cleanup["removed"].as_array().unwrap().is_empty());
}

fn a_password_is_read_from_stdin_and_stored_only_as_an_argon2id_hash(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let secret = "tr0ub4dor&3 horse";
    let run = sb.run_with_input(
        EXE,
        &[
            "--create",
            "--username",
            "alice",
            "--email",
            "a@example.com",
            "--password-stdin",
            "--json",
        ],
        &format!("{secret}\n"),
    );
    run.code(0).never_shows(secret);
    assert_eq!(run.json()["has_password"], true);
    let hashed = "SELECT COUNT(*) FROM users WHERE password_hash LIKE '$argon2id$v=19$m=19456,t=2,p=1$%' \
                  AND password_hash NOT LIKE '%horse%'";
    assert_eq!(sb.count(EXE, hashed), 1);
    sb.create_user_with_password("bob", "b@example.com", "")
        .code(65)
        .stderr_has("password read from standard input is empty");
    assert_eq!(users(&sb), 1);
}

fn status_reports_setup_needed_then_current_then_drift(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let before = sb.run(EXE, &["--self-status", "--json"]);
    let doc = before.code(78).json();
    assert_eq!(doc["state"], "not_set_up");
    assert_eq!(doc["binary_version"], 3);
    before.stderr_has("run --self-setup");
    if backend == Backend::Sqlite {
        assert!(!sb.database(EXE).exists(), "status created nothing");
    } else {
        sb.create_user("alice", "a@example.com")
            .code(78)
            .stderr_has("run --self-setup");
    }

    sb.run_admin(EXE, &["--self-setup"]).code(0);
    sb.run(EXE, &["--self-status"])
        .code(0)
        .stdout_has("version 3, binary has 3: current");

    // Someone changes an applied migration's checksum behind the binary's back.
    let drift = "UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 1";
    match &sb.server {
        Some(db) => db
            .admin_exec(
                Some(&db.name),
                &[drift.replace(
                    "X'00'",
                    match backend {
                        Backend::Postgres => "'\\x00'::bytea",
                        _ => "X'00'",
                    },
                )],
            )
            .unwrap(),
        None => {
            let db = sb.database(EXE);
            e2e::block_on(async {
                let mut c = e2e::AnyConn::Sqlite(e2e::open_sqlite(&db).await);
                c.exec(drift).await
            })
            .unwrap();
        }
    }
    let drifted = sb.run(EXE, &["--self-status", "--json"]);
    let doc = drifted.code(78).json();
    assert_eq!(doc["state"], "drifted");
    assert_eq!(doc["drifted"][0], 1);
    sb.run_admin(EXE, &["--self-setup"])
        .code(78)
        .stderr_has("different contents");
}

fn cleanup_without_a_terminal_needs_yes_and_keeps_the_database(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    sb.create_user("alice", "a@example.com").code(0);
    sb.run_admin(EXE, &["--self-cleanup"])
        .code(2)
        .stderr_has("--yes");
    assert_eq!(users(&sb), 1);
}

fn self_test_passes_on_its_own_scratch_database(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    sb.create_user("alice", "a@example.com").code(0);
    let run = sb.run_admin(EXE, &["--self-test"]);
    run.code(0).stdout_has(" passed, 0 failed");
    let lines: Vec<_> = run.stdout.lines().collect();
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("ok ")),
        "{run}"
    );
    if backend != Backend::Sqlite {
        run.stdout_has("the app role can neither create nor drop a table");
        run.stdout_has("the backup role can read the tables but not change them");
    }
    // The configured database is as it was.
    assert_eq!(users(&sb), 1);
    sb.run(EXE, &["--self-status"]).code(0);
}

fn fifty_concurrent_creates_all_succeed(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    for run in concurrent_creates(&sb, 50) {
        run.code(0);
    }
    assert_eq!(users(&sb), 50);
    assert_eq!(sb.count(EXE, "SELECT COUNT(DISTINCT id) FROM users"), 50);
}
