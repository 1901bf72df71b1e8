//! What only the server backends have, on PostgreSQL and MariaDB over real connections: least
//! privilege, administrator credentials, what cleanup may drop, the setup lock, connection
//! errors, and many clients against the server's connection limit.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use e2e::{Backend, BackendSandbox, Run, ServerDb, concurrent_creates, on_every_server};

const EXE: &str = "create-user";

on_every_server!(
    the_app_role_has_exactly_the_rights_its_task_declares,
    the_backup_role_can_only_read,
    a_second_database_is_configured_beside_the_first,
    setup_and_cleanup_need_the_administrator_and_read_a_private_admin_file,
    the_administrators_password_never_shows,
    connection_errors_say_what_failed_and_exit_accordingly,
    a_schema_behind_the_binary_is_refused_with_the_way_out,
    a_migration_cut_off_part_way_is_a_configuration_error_with_the_way_out,
    cleanup_drops_only_what_setup_created,
    concurrent_setups_create_everything_exactly_once,
    two_hundred_concurrent_creates_all_succeed_past_the_connection_limit,
);

fn denied(result: Result<(), String>, what: &str) {
    let e = result.err().unwrap_or_else(|| panic!("{what} was allowed"));
    assert!(
        e.contains("denied") || e.contains("must be owner"),
        "{what} failed for another reason: {e}"
    );
}

fn the_app_role_has_exactly_the_rights_its_task_declares(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let db = sb.server();
    let (user, pw) = sb.credentials(EXE, "app");
    assert_eq!(user, format!("{}_create_user", db.name));
    let insert = "INSERT INTO users (username, email, created_at) VALUES ('zed', 'z@example.com', CURRENT_TIMESTAMP)";
    db.exec_as(&user, &pw, &db.name, insert).unwrap();
    db.exec_as(&user, &pw, &db.name, "SELECT * FROM users")
        .unwrap();
    // create-user declares SELECT and INSERT on users: nothing else.
    denied(
        db.exec_as(
            &user,
            &pw,
            &db.name,
            "DELETE FROM users WHERE username = 'zed'",
        ),
        "DELETE as create-user",
    );
    denied(
        db.exec_as(
            &user,
            &pw,
            &db.name,
            "UPDATE users SET email = 'x@example.com'",
        ),
        "UPDATE as create-user",
    );
    denied(
        db.exec_as(&user, &pw, &db.name, "CREATE TABLE sneaky (id INT)"),
        "CREATE TABLE",
    );
    denied(
        db.exec_as(&user, &pw, &db.name, "DROP TABLE users"),
        "DROP TABLE",
    );
    denied(
        db.exec_as(&user, &pw, &db.name, "ALTER TABLE users ADD COLUMN x INT"),
        "ALTER TABLE",
    );
    denied(
        db.exec_as(&user, &pw, &db.name, "DELETE FROM _sqlx_migrations"),
        "changing the migrations table",
    );

    // Another database on the same server, with data the app must not see.
    let other = ServerDb {
        backend,
        admin_url: db.admin_url.clone(),
        name: format!("{}_x", db.name),
    };
    let q = |n: &str| {
        if backend == Backend::Postgres {
            format!("\"{n}\"")
        } else {
            format!("`{n}`")
        }
    };
    other
        .admin_exec(None, &[format!("CREATE DATABASE {}", q(&other.name))])
        .unwrap();
    other
        .admin_exec(
            Some(&other.name),
            &[
                "CREATE TABLE secrets (v TEXT)".into(),
                "INSERT INTO secrets VALUES ('x')".into(),
            ],
        )
        .unwrap();
    let read_other = db.exec_as(&user, &pw, &other.name, "SELECT * FROM secrets");
    let e = read_other.expect_err("the app role read another database");
    assert!(e.contains("denied"), "{e}");
}

fn the_backup_role_can_only_read(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    sb.create_user("alice", "a@example.com").code(0);
    let db = sb.server();
    let (user, pw) = sb.credentials(EXE, "backup");
    assert_eq!(user, format!("{}_create_user_backup", db.name));
    db.exec_as(&user, &pw, &db.name, "SELECT * FROM users")
        .unwrap();
    db.exec_as(&user, &pw, &db.name, "SELECT * FROM _sqlx_migrations")
        .unwrap();
    let insert = "INSERT INTO users (username, email, created_at) VALUES ('zed', 'z@example.com', CURRENT_TIMESTAMP)";
    denied(db.exec_as(&user, &pw, &db.name, insert), "INSERT as backup");
    denied(
        db.exec_as(
            &user,
            &pw,
            &db.name,
            "UPDATE users SET email = 'x@example.com'",
        ),
        "UPDATE as backup",
    );
    denied(
        db.exec_as(&user, &pw, &db.name, "DELETE FROM users"),
        "DELETE as backup",
    );
    assert_eq!(sb.count(EXE, "SELECT COUNT(*) FROM users"), 1);
}

/// Staging beside production: one executable set up on two databases keeps both credentials,
/// and cleaning one up leaves the other working.
fn a_second_database_is_configured_beside_the_first(backend: Backend) {
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let first = sb.server().url();
    let second = ServerDb {
        backend,
        admin_url: sb.server().admin_url.clone(),
        name: format!("{}_b", sb.server().name),
    };
    sb.set_env("COMMONDB_DATABASE_URL", second.url());
    sb.run_admin(EXE, &["--self-setup"])
        .code(0)
        .stdout_has(&format!("{}_create_user (created)", second.name));
    sb.create_user("bob", "b@example.com").code(0);
    sb.set_env("COMMONDB_DATABASE_URL", first.clone());
    sb.create_user("alice", "a@example.com").code(0);
    sb.create_user("bob", "b@example.com").code(0);
    let text = fs::read_to_string(sb.secrets_dir().join("create-user.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let entries = doc["databases"].as_table().unwrap();
    assert!(
        entries.contains_key(&first) && entries.contains_key(&second.url()),
        "{:?}",
        entries.keys().collect::<Vec<_>>()
    );
    // Cleaning the second up takes only its entry; the first still works.
    sb.set_env("COMMONDB_DATABASE_URL", second.url());
    sb.run_admin(EXE, &["--self-cleanup", "--yes"]).code(0);
    sb.set_env("COMMONDB_DATABASE_URL", first);
    sb.create_user("carol", "c@example.com").code(0);
    assert_eq!(second.leftovers(), Vec::<String>::new());
}

fn setup_and_cleanup_need_the_administrator_and_read_a_private_admin_file(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run(EXE, &["--self-setup"])
        .code(78)
        .stderr_has("COMMONDB_ADMIN_URL")
        .stderr_has("admin.toml");
    let admin = sb.secrets_dir().join("admin.toml");
    fs::create_dir_all(sb.secrets_dir()).unwrap();
    fs::write(&admin, format!("url = \"{}\"\n", sb.server().admin_url)).unwrap();
    fs::set_permissions(&admin, fs::Permissions::from_mode(0o644)).unwrap();
    sb.run(EXE, &["--self-setup"])
        .code(77)
        .stderr_has(&format!("chmod 600 {}", admin.display()));
    fs::set_permissions(&admin, fs::Permissions::from_mode(0o600)).unwrap();
    sb.run(EXE, &["--self-setup"])
        .code(0)
        .stdout_has("(created)");
    sb.create_user("alice", "a@example.com").code(0);
    fs::remove_file(&admin).unwrap();
    sb.run(EXE, &["--self-cleanup", "--yes"])
        .code(78)
        .stderr_has("administrator");
    assert_eq!(
        sb.count(EXE, "SELECT COUNT(*) FROM users"),
        1,
        "nothing was dropped"
    );
}

fn the_administrators_password_never_shows(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    // An administrator with a password, made for this test (and dropped with its database).
    let db = sb.server();
    let admin = format!("{}_adm", db.name);
    let create = match backend {
        Backend::Postgres => vec![format!(
            "CREATE ROLE \"{admin}\" LOGIN SUPERUSER PASSWORD 'hunter2'"
        )],
        _ => vec![
            format!("CREATE USER '{admin}'@'%' IDENTIFIED BY 'hunter2'"),
            format!("GRANT ALL PRIVILEGES ON *.* TO '{admin}'@'%' WITH GRANT OPTION"),
        ],
    };
    db.admin_exec(None, &create).unwrap();
    let scheme = db.admin_url.split_once("://").unwrap().0;
    let url = format!("{scheme}://{admin}:hunter2@{}/", db.host_port());
    let as_admin = |url: &str, args: &[&str]| {
        let mut cmd = sb.command(EXE, args);
        cmd.env("COMMONDB_ADMIN_URL", url);
        Run::of(cmd, None)
    };
    as_admin(&url, &["--self-setup", "-vv"])
        .code(0)
        .never_shows("hunter2");
    as_admin(&url, &["--self-test", "--json"])
        .code(0)
        .never_shows("hunter2");
    as_admin(&url, &["--self-cleanup", "--yes"])
        .code(0)
        .never_shows("hunter2");
    as_admin(&url.replace(&db.port(), ":1"), &["--self-setup"])
        .code(69)
        .never_shows("hunter2");
    if backend == Backend::MySql {
        // MariaDB checks passwords on loopback (the PostgreSQL here trusts it): a wrong one is 77.
        as_admin(&url.replace("hunter2", "hunter3"), &["--self-setup"])
            .code(77)
            .stderr_has("refused the credentials")
            .never_shows("hunter3");
    }
}

fn connection_errors_say_what_failed_and_exit_accordingly(backend: Backend) {
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let url = sb.server().url();
    let port = sb.server().port();
    let port = port.as_str();
    // Nothing listens on port 1: unavailable, naming host and port.
    sb.set_env("COMMONDB_DATABASE_URL", url.replace(port, ":1"));
    sb.run(EXE, &["--self-setup"]).code(78);
    let file = sb.secrets_dir().join("create-user.toml");
    let secrets = fs::read_to_string(&file).unwrap();
    fs::write(&file, secrets.replace(port, ":1")).unwrap();
    sb.create_user("alice", "a@example.com")
        .code(69)
        .stderr_has("127.0.0.1:1")
        .stderr_has("connection refused");
    // A role the server does not know: permission denied.
    fs::write(&file, secrets.replace("_create_user\"", "_nobody\"")).unwrap();
    sb.set_env("COMMONDB_DATABASE_URL", url.clone());
    let nobody = format!("{}_nobody", sb.server().name);
    sb.set_env("COMMONDB_APP_ROLE", nobody);
    sb.create_user("alice", "a@example.com")
        .code(77)
        .stderr_has("refused the credentials");
    // A bad URL: configuration.
    sb.set_env("COMMONDB_DATABASE_URL", url.replace(port, ":notaport"));
    sb.create_user("alice", "a@example.com")
        .code(78)
        .stderr_has("not valid");
    // A password in the URL setting: refused, pointing at the secrets file.
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        url.replacen("://", "://u:hunter2@", 1),
    );
    sb.create_user("alice", "a@example.com")
        .code(78)
        .stderr_has("carries a password")
        .never_shows("hunter2");
}

fn a_schema_behind_the_binary_is_refused_with_the_way_out(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let db = sb.server();
    db.admin_exec(Some(&db.name), &["DELETE FROM _sqlx_migrations".into()])
        .unwrap();
    sb.create_user("alice", "a@example.com")
        .code(78)
        .stderr_has("needs version 3")
        .stderr_has("--self-setup");
    let status = sb.run(EXE, &["--self-status", "--json"]).code(78).json();
    assert_eq!(status["state"], "not_set_up");
}

/// A setup killed in the middle of a migration's DDL on MySQL/MariaDB, which cannot roll DDL
/// back, leaves the migration marked as failed (the state made here by hand): the next setup
/// says what happened and both ways out, as a configuration problem, not as a bug.
fn a_migration_cut_off_part_way_is_a_configuration_error_with_the_way_out(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let db = sb.server();
    db.admin_exec(
        Some(&db.name),
        &["UPDATE _sqlx_migrations SET success = false WHERE version = 1".into()],
    )
    .unwrap();
    sb.run_admin(EXE, &["--self-setup"])
        .code(78)
        .stderr_has("migration 1 was cut off part way")
        .stderr_has("--self-cleanup")
        .stderr_has("DELETE FROM _sqlx_migrations WHERE version = 1");
}

fn cleanup_drops_only_what_setup_created(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let db = sb.server();
    let q = if backend == Backend::Postgres {
        format!("\"{}\"", db.name)
    } else {
        format!("`{}`", db.name)
    };
    // A database someone else made: cleanup does not touch it.
    db.admin_exec(None, &[format!("CREATE DATABASE {q}")])
        .unwrap();
    db.admin_exec(Some(&db.name), &["CREATE TABLE theirs (v INT)".into()])
        .unwrap();
    sb.run_admin(EXE, &["--self-cleanup", "--yes"])
        .code(78)
        .stderr_has("was not set up by commondb");
    assert_eq!(
        db.admin_count("SELECT COUNT(*) FROM theirs"),
        0,
        "their table is still there"
    );
    // Setup on it records that it found the database; cleanup then drops the roles it made
    // and keeps the database.
    sb.run_admin(EXE, &["--self-setup"])
        .code(0)
        .stdout_has("(exists)")
        .stdout_has("_create_user (created)");
    sb.run_admin("get-user", &["--self-setup"]).code(0);
    sb.run_admin(EXE, &["--self-cleanup", "--yes"])
        .code(0)
        .stdout_has("dropped role")
        .stdout_has("kept database");
    // A database that stays keeps the roles of the domain's other executables: they still work.
    sb.run("get-user", &["--get", "--username", "nobody"])
        .code(67);
    sb.run_admin("get-user", &["--self-cleanup", "--yes"])
        .code(0);
    assert_eq!(db.leftovers(), vec![format!("database {}", db.name)]);
    assert_eq!(db.admin_count("SELECT COUNT(*) FROM theirs"), 0);
}

fn concurrent_setups_create_everything_exactly_once(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let setup = vec!["--self-setup".to_string(), "--json".to_string()];
    let admin = [("COMMONDB_ADMIN_URL", sb.server().admin_url.as_str())];
    let runs = sb.run_concurrently(EXE, vec![setup; 20], &admin);
    let mut created = 0;
    for run in &runs {
        let doc = run.code(0).json();
        created += usize::from(doc["created"] == true);
        assert_eq!(doc["schema_version"], 3);
    }
    assert_eq!(created, 1, "exactly one setup created the database");
    sb.create_user("alice", "a@example.com").code(0);
}

fn two_hundred_concurrent_creates_all_succeed_past_the_connection_limit(backend: Backend) {
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let runs = concurrent_creates(&sb, 200);
    let failed: Vec<_> = runs.iter().filter(|r| r.code != 0).collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed; the first:\n{}",
        failed.len(),
        failed[0]
    );
    assert_eq!(sb.count(EXE, "SELECT COUNT(*) FROM users"), 200);
}

/// Refused before any connection, so no server is needed: credentials in a URL's query string
/// (never echoed), and parameters that would override the URL's host or database.
#[test]
fn url_parameters_with_credentials_or_another_host_are_refused() {
    let mut sb = e2e::Sandbox::new();
    for url in [
        "postgres://127.0.0.1/shop?password=hunter2",
        "postgres://127.0.0.1/shop?user=u&password=hunter2",
        "mysql://127.0.0.1/shop?sslpassword=hunter2",
    ] {
        sb.set_env("COMMONDB_DATABASE_URL", url);
        sb.create_user("alice", "a@example.com")
            .code(78)
            .stderr_has("carries a password")
            .stderr_has("create-user.toml")
            .never_shows("hunter2");
    }
    for (url, key) in [
        ("postgres://127.0.0.1:5432/shop?host=db.example.com", "host"),
        ("postgres://127.0.0.1:5432/shop?dbname=postgres", "dbname"),
        (
            "mysql://127.0.0.1:3306/shop?socket=/tmp/other.sock",
            "socket",
        ),
        ("mysql://127.0.0.1:3306/shop?database=other", "database"),
    ] {
        sb.set_env("COMMONDB_DATABASE_URL", url);
        sb.create_user("alice", "a@example.com")
            .code(78)
            .stderr_has(&format!("parameter \"{key}\" is not accepted"));
    }
}

/// libpq's variables that sqlx reads behind the URL's back: a password in the environment, or
/// session options that would change what the task's SQL means, are refused.
#[test]
fn a_password_or_session_options_in_the_pg_environment_are_refused() {
    for (var, value) in [
        ("PGPASSWORD", "hunter2"),
        ("PGOPTIONS", "-c search_path=evil"),
    ] {
        let mut sb = e2e::Sandbox::new();
        sb.set_env("COMMONDB_DATABASE_URL", "postgres://127.0.0.1:5432/shop");
        sb.set_env(var, value);
        sb.create_user("alice", "a@example.com")
            .code(78)
            .stderr_has(&format!("{var} is set"))
            .stderr_has(&format!("unset {var}"))
            .never_shows("hunter2");
        sb.run(EXE, &["--self-status"]).code(78);
    }
}

/// An administrator's URL that does not parse is blamed on the administrator's URL, with where
/// it comes from, and never echoed.
#[test]
fn an_invalid_administrator_url_is_named_as_such() {
    let mut sb = e2e::Sandbox::new();
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        "postgres://127.0.0.1:5432/e2e_never",
    );
    for admin in [
        "ftp://postgres:hunter2@127.0.0.1/x",
        "postgres://postgres:hunter2@127.0.0.1:notaport/postgres",
    ] {
        let mut cmd = sb.command(EXE, &["--self-setup"]);
        cmd.env("COMMONDB_ADMIN_URL", admin);
        Run::of(cmd, None)
            .code(78)
            .stderr_has("administrator's URL")
            .stderr_has("hint: fix COMMONDB_ADMIN_URL")
            .never_shows("hunter2")
            .never_shows("COMMONDB_DATABASE_URL");
    }
}
