//! `create-user` end to end on what only the embedded SQLite default has: first-use setup, file
//! modes, busy locks, configuration layers, secrets files, the exit codes, and the terminal
//! confirmation. The scenarios every backend shares are in `lifecycle.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use e2e::concurrent_creates;
use e2e::{Run, Sandbox, sqlite_count};

const EXE: &str = "create-user";

fn mode_of(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn users(sb: &Sandbox) -> i64 {
    sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users")
}

#[test]
fn no_arguments_print_the_usage_with_every_mode_and_exit_2() {
    let sb = Sandbox::new();
    let run = sb.run(EXE, &[]);
    run.code(2);
    for mode in ["--create", "--self-setup", "--self-test", "--self-cleanup"] {
        run.stderr_has(mode);
    }
    assert!(run.stdout.is_empty(), "usage goes to stderr\n{run}");
}

#[test]
fn help_and_version_succeed_without_touching_anything() {
    let sb = Sandbox::new();
    sb.run(EXE, &["--help"])
        .code(0)
        .stdout_has("Exit codes:")
        .stdout_has("--password-stdin");
    sb.run(EXE, &["--version"])
        .code(0)
        .stdout_has("create-user 0.1.0");
    assert!(!sb.data_dir().exists());
}

#[test]
fn the_first_create_on_a_fresh_machine_sets_itself_up_and_says_so() {
    let sb = Sandbox::new();
    sb.create_user("alice", "alice@example.com")
        .code(0)
        .stderr_has("first use: created the database")
        .stdout_has("created user alice");
    sb.create_user("bob", "bob@example.com").code(0);
    let second = sb.create_user("carol", "carol@example.com");
    assert!(
        second.stderr.is_empty(),
        "only the first run talks about setup\n{second}"
    );
    assert_eq!(mode_of(&sb.database(EXE)), 0o600);
    assert_eq!(users(&sb), 3);
}

#[test]
fn quiet_silences_the_setup_note_but_not_errors() {
    let sb = Sandbox::new();
    let run = sb.run(
        EXE,
        &[
            "-q",
            "--create",
            "--username",
            "alice",
            "--email",
            "a@example.com",
        ],
    );
    run.code(0);
    assert!(run.stderr.is_empty(), "{run}");
    sb.run(
        EXE,
        &[
            "-q",
            "--create",
            "--username",
            "alice",
            "--email",
            "a@example.com",
        ],
    )
    .code(73)
    .stderr_has("already taken");
}

#[test]
fn argon2_costs_come_from_the_task_settings() {
    let mut sb = Sandbox::new();
    sb.set_env("COMMONDB_TASK__ARGON2_MEMORY_KIB", "64");
    sb.set_env("COMMONDB_TASK__ARGON2_ITERATIONS", "1");
    sb.create_user_with_password("alice", "a@example.com", "pw")
        .code(0);
    assert_eq!(
        sqlite_count(
            &sb.database(EXE),
            "SELECT COUNT(*) FROM users WHERE password_hash LIKE '$argon2id$v=19$m=64,t=1,p=1$%'"
        ),
        1
    );
}

const WITH_PASSWORD: [&str; 6] = [
    "--create",
    "--username",
    "alice",
    "--email",
    "a@example.com",
    "--password-stdin",
];

/// Runs `create-user` with a password on stdin, fed by `feed` in a thread of its own (it may be
/// endless: it must stop at a write error); returns the run and what `feed` returned.
fn with_password_input<R: Send + 'static>(
    sb: &Sandbox,
    feed: impl FnOnce(std::process::ChildStdin) -> R + Send + 'static,
) -> (Run, R) {
    use std::process::Stdio;
    let mut cmd = sb.command(EXE, &WITH_PASSWORD);
    let command = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || feed(stdin));
    let run = Run::from_output(command, child.wait_with_output().unwrap());
    (run, feeder.join().unwrap())
}

#[test]
fn an_endless_password_on_stdin_is_refused_without_reading_it_all() {
    use std::io::Write;
    const CAP: usize = 64 << 20;
    let sb = Sandbox::new();
    let started = std::time::Instant::now();
    // 64 MiB of 'a' and no newline: the process must stop reading long before the end.
    let (run, sent) = with_password_input(&sb, |mut stdin| {
        let chunk = [b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < CAP && stdin.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    run.code(65).stderr_has("longer than 1024 bytes");
    assert!(sent < CAP, "all {sent} bytes were read\n{run}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(!sb.database(EXE).exists() || users(&sb) == 0);
}

#[test]
fn a_password_that_is_not_utf8_is_refused() {
    use std::io::Write;
    let sb = Sandbox::new();
    let (run, ()) = with_password_input(&sb, |mut stdin| {
        let _ = stdin.write_all(b"pass\xffword\n");
    });
    run.code(65).stderr_has("not UTF-8");
}

#[test]
fn argon2_costs_out_of_range_are_a_configuration_error_naming_the_range() {
    let mut sb = Sandbox::new();
    sb.set_env("COMMONDB_TASK__ARGON2_MEMORY_KIB", "4294967295");
    sb.create_user_with_password("alice", "a@example.com", "pw")
        .code(78)
        .stderr_has("argon2_memory_kib = 4294967295 is out of range: it must be 8 to 1048576");
}

#[test]
fn numeric_settings_out_of_range_are_a_configuration_error_naming_the_range() {
    for (var, value, says) in [
        (
            "COMMONDB_SERVE__POOL_SIZE",
            "0",
            "serve.pool_size = 0 is out of range: it must be 1 to 1024",
        ),
        (
            "COMMONDB_SERVE__POOL_SIZE",
            "4294967295",
            "it must be 1 to 1024",
        ),
        (
            "COMMONDB_CONNECT_TIMEOUT_MS",
            "0",
            "connect_timeout_ms = 0 is out of range",
        ),
        (
            "COMMONDB_SERVE__REQUEST_TIMEOUT_MS",
            "18446744073709551615",
            "it must be 1 to 86400000",
        ),
    ] {
        let mut sb = Sandbox::new();
        sb.set_env(var, value);
        sb.create_user("alice", "a@example.com")
            .code(78)
            .stderr_has(says)
            .stderr_has(var);
    }
}

#[test]
fn a_secrets_file_readable_by_others_is_refused_with_the_chmod_fix() {
    let sb = Sandbox::new();
    let file = sb.secrets_dir().join("create-user.toml");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let url = format!(
        "sqlite://{}/elsewhere.sqlite3?pw=hunter2",
        sb.root().display()
    );
    fs::write(&file, format!("database_url = \"{url}\"\n")).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    sb.create_user("alice", "a@example.com")
        .code(77)
        .stderr_has(&file.display().to_string())
        .stderr_has(&format!("chmod 600 {}", file.display()))
        .never_shows("hunter2");
    sb.run(EXE, &["--self-setup"]).code(77);
    assert!(!sb.data_dir().exists(), "nothing was created");

    // Once private, the file is read; its URL's error still hides the secret.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    sb.create_user("alice", "a@example.com")
        .code(78)
        .stderr_has("take no options")
        .never_shows("hunter2");
}

#[test]
fn the_app_secrets_file_can_point_at_the_database() {
    let sb = Sandbox::new();
    let file = sb.secrets_dir().join("create-user.toml");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let db = sb.root().join("elsewhere.sqlite3");
    fs::write(
        &file,
        format!("database_url = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    sb.create_user("alice", "a@example.com").code(0);
    assert_eq!(sqlite_count(&db, "SELECT COUNT(*) FROM users"), 1);
    assert!(!sb.database(EXE).exists());
}

#[test]
fn a_misspelled_or_non_utf8_environment_variable_is_refused_naming_it() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let create = [
        "--create",
        "--username",
        "alice",
        "--email",
        "a@example.com",
    ];
    let mut misspelled = sb.command(EXE, &create);
    misspelled.env("COMMONDB_DATABSE_URL", "sqlite:///tmp/elsewhere.sqlite3");
    Run::of(misspelled, None)
        .code(78)
        .stderr_has("COMMONDB_DATABSE_URL is not a setting")
        .stderr_has("COMMONDB_DATABASE_URL");
    let mut not_utf8 = sb.command(EXE, &create);
    not_utf8.env(
        "COMMONDB_DATA_DIR",
        std::ffi::OsStr::from_bytes(b"/tmp/data-\xff"),
    );
    Run::of(not_utf8, None)
        .code(78)
        .stderr_has("COMMONDB_DATA_DIR is not UTF-8");
    assert!(!sb.database(EXE).exists(), "nothing is created");
    // What is read apart from the settings still passes, and so do task settings.
    let mut apart = sb.command(EXE, &create);
    apart
        .env("COMMONDB_ADMIN_URL", "postgres://admin@127.0.0.1/postgres")
        .env(commondb::protocol::SPAWNED_AT_VAR, "1")
        .env("COMMONDB_TASK__ARGON2_ITERATIONS", "1")
        .env("COMMONDB_SERVE__POOL_SIZE", "1");
    Run::of(apart, None).code(0);
}

#[test]
fn configuration_and_secrets_files_must_be_small_regular_files() {
    let sb = Sandbox::new();
    let big = sb.root().join("big.toml");
    // 2 MiB of comments: valid TOML, but no configuration is that large.
    fs::write(&big, "#".repeat(2 << 20)).unwrap();
    let big = big.display().to_string();
    sb.run(EXE, &["--config", &big, "--self-status"])
        .code(78)
        .stderr_has(&format!(
            "configuration file {big} is larger than 1048576 bytes"
        ));
    sb.run(EXE, &["--config", "/dev/zero", "--self-status"])
        .code(78)
        .stderr_has("configuration file /dev/zero is not a regular file");
    // An unknown key's hint names it and where the valid ones are, not a home directory.
    let typo = sb.root().join("typo.toml");
    fs::write(&typo, "databse_url = \"x\"\n").unwrap();
    sb.run(
        EXE,
        &["--config", &typo.display().to_string(), "--self-status"],
    )
    .code(78)
    .stderr_has("hint: remove `databse_url`")
    .never_shows("home directory");

    // A FIFO as the app secrets file is refused at once, not waited on.
    let secrets = sb.secrets_dir().join("create-user.toml");
    fs::create_dir_all(secrets.parent().unwrap()).unwrap();
    e2e::mkfifo(&secrets);
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).unwrap();
    let create = sb.command(
        EXE,
        &[
            "--create",
            "--username",
            "alice",
            "--email",
            "a@example.com",
        ],
    );
    Run::within(create, 20)
        .code(78)
        .stderr_has("is not a regular file");
    // One over the limit is refused too.
    fs::remove_file(&secrets).unwrap();
    fs::write(&secrets, "#".repeat(64 * 1024 + 1)).unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).unwrap();
    sb.create_user("alice", "a@example.com")
        .code(78)
        .stderr_has("larger than 65536 bytes");
}

#[test]
fn configuration_layers_user_file_then_config_flag_then_environment() {
    let mut sb = Sandbox::new();
    let user_db = sb.root().join("user.sqlite3");
    let flag_db = sb.root().join("flag.sqlite3");
    let env_db = sb.root().join("env.sqlite3");
    fs::create_dir_all(sb.config_dir()).unwrap();
    fs::write(
        sb.config_dir().join("config.toml"),
        format!("database_url = \"sqlite://{}\"\n", user_db.display()),
    )
    .unwrap();
    sb.create_user("user1", "a@example.com").code(0);
    assert!(user_db.exists());

    let flag_file = sb.root().join("flag.toml");
    fs::write(
        &flag_file,
        format!("database_url = \"sqlite://{}\"\n", flag_db.display()),
    )
    .unwrap();
    let flag = flag_file.display().to_string();
    sb.run(
        EXE,
        &[
            "--config",
            &flag,
            "--create",
            "--username",
            "user2",
            "--email",
            "a@example.com",
        ],
    )
    .code(0);
    assert!(flag_db.exists());

    sb.set_env(
        "COMMONDB_DATABASE_URL",
        format!("sqlite://{}", env_db.display()),
    );
    sb.run(
        EXE,
        &[
            "--config",
            &flag,
            "--create",
            "--username",
            "user3",
            "--email",
            "a@example.com",
        ],
    )
    .code(0);
    assert!(env_db.exists());
    for db in [&user_db, &flag_db, &env_db] {
        assert_eq!(
            sqlite_count(db, "SELECT COUNT(*) FROM users"),
            1,
            "{}",
            db.display()
        );
    }
}

#[test]
fn the_per_executable_file_overrides_the_shared_one_and_data_dir_moves_the_database() {
    let mut sb = Sandbox::new();
    let data = sb.root().join("moved");
    sb.set_env("COMMONDB_DATA_DIR", data.display().to_string());
    fs::create_dir_all(sb.config_dir()).unwrap();
    fs::write(
        sb.config_dir().join("config.toml"),
        "busy_timeout_ms = \"not a number\"\n",
    )
    .unwrap();
    sb.create_user("alice", "a@example.com")
        .code(78)
        .stderr_has("busy_timeout_ms");
    fs::write(
        sb.config_dir().join("create-user.toml"),
        "busy_timeout_ms = 2000\n",
    )
    .unwrap();
    sb.create_user("alice", "a@example.com").code(0);
    assert!(data.join("users.sqlite3").exists());
}

#[test]
fn every_documented_exit_code_is_reachable() {
    let mut sb = Sandbox::new();
    // 0 and 73 and 65 are covered by the lifecycle; here the rest.
    // 2: usage.
    sb.run(EXE, &["--create", "--self-test"]).code(2);
    // 78: configuration (an unknown setting, and a bad URL).
    fs::create_dir_all(sb.config_dir()).unwrap();
    let bad = sb.root().join("bad.toml");
    fs::write(&bad, "databse_url = \"x\"\n").unwrap();
    sb.run(
        EXE,
        &["--config", &bad.display().to_string(), "--self-setup"],
    )
    .code(78)
    .stderr_has("databse_url");
    let mut url_sb = Sandbox::new();
    url_sb.set_env("COMMONDB_DATABASE_URL", "redis://127.0.0.1");
    url_sb
        .create_user("alice", "a@example.com")
        .code(78)
        .stderr_has("must start with sqlite:");
    // 69: the database path is a directory, which cannot be opened as a database.
    let dir_db = sb.root().join("a-directory");
    fs::create_dir(&dir_db).unwrap();
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        format!("sqlite://{}", dir_db.display()),
    );
    sb.create_user("alice", "a@example.com")
        .code(69)
        .stderr_has("cannot open database");
    // 70: the database file is damaged.
    let damaged = sb.root().join("damaged.sqlite3");
    fs::write(&damaged, vec![b'x'; 8192]).unwrap();
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        format!("sqlite://{}", damaged.display()),
    );
    sb.create_user("alice", "a@example.com")
        .code(70)
        .stderr_has("not a database");
    // 77: a secrets file others can read (also in its own test).
    let perm = Sandbox::new();
    let file = perm.secrets_dir().join("create-user.toml");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    perm.create_user("alice", "a@example.com").code(77);
    // 1: a self-test case fails (argon2 costs too low to be valid make the password case fail).
    let mut failing = Sandbox::new();
    failing.set_env("COMMONDB_TASK__ARGON2_MEMORY_KIB", "1");
    failing
        .run(EXE, &["--self-test"])
        .code(1)
        .stdout_has("FAIL")
        .stdout_has("1 failed");
}

#[test]
fn a_busy_database_is_a_temporary_failure() {
    let mut sb = Sandbox::new();
    sb.create_user("alice", "a@example.com").code(0);
    let db = sb.database(EXE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut holder = e2e::open_sqlite(&db).await;
        let tx = holder.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sb.set_env("COMMONDB_BUSY_TIMEOUT_MS", "100");
        sb.create_user("bob", "b@example.com")
            .code(75)
            .stderr_has("busy")
            .stderr_has("try again");
        tx.rollback().await.unwrap();
    });
    sb.create_user("bob", "b@example.com").code(0);
}

#[test]
fn cleanup_asks_on_a_terminal_and_a_no_keeps_everything() {
    let sb = Sandbox::new();
    sb.create_user("alice", "a@example.com").code(0);
    // `script` gives the program a terminal; the answer is typed on it.
    let bin = e2e::bin(EXE).display().to_string();
    let run_on_tty = |answer: &str| {
        let mut script = std::process::Command::new("script");
        script
            .args(["-qec", &format!("{bin} --self-cleanup"), "/dev/null"])
            .env_clear()
            .envs(sb.env())
            .current_dir(sb.root());
        Run::of(script, Some(answer))
    };
    let no = run_on_tty("n\n");
    no.code(1)
        .stdout_has("Remove them? [y/N]")
        .stdout_has("cleanup cancelled");
    assert_eq!(users(&sb), 1);
    let yes = run_on_tty("y\n");
    yes.code(0).stdout_has("removed the database");
    assert!(!sb.database(EXE).exists());
}

#[test]
fn cleanup_refuses_to_remove_a_file_that_is_not_a_sqlite_database() {
    let mut sb = Sandbox::new();
    let precious = sb.root().join("precious.txt");
    fs::write(&precious, "not a database").unwrap();
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        format!("sqlite://{}", precious.display()),
    );
    sb.run(EXE, &["--self-cleanup", "--yes"])
        .code(78)
        .stderr_has("not a SQLite database");
    assert_eq!(fs::read_to_string(&precious).unwrap(), "not a database");
}

#[test]
fn self_test_passes_and_leaves_the_configured_database_byte_for_byte_untouched() {
    let sb = Sandbox::new();
    sb.create_user("alice", "a@example.com").code(0);
    let snapshot = |sb: &Sandbox| {
        let mut files: Vec<_> = fs::read_dir(sb.data_dir())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name(),
                    fs::read(e.path()).unwrap(),
                    e.metadata().unwrap().modified().unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot(&sb);
    let run = sb.run(EXE, &["--self-test"]);
    run.code(0).stdout_has("0 failed");
    let lines: Vec<_> = run.stdout.lines().collect();
    assert!(lines.len() >= 10, "{run}");
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("ok ")),
        "{run}"
    );
    assert!(
        lines.last().unwrap().ends_with(" passed, 0 failed"),
        "{run}"
    );
    assert_eq!(
        before,
        snapshot(&sb),
        "the self-test touched the configured database"
    );
}

#[test]
fn self_test_json_lists_every_case() {
    let sb = Sandbox::new();
    let doc = sb.run(EXE, &["--self-test", "--json"]).code(0).json();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(doc["failed"], 0);
    assert_eq!(doc["passed"], cases.len());
    let names: Vec<_> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for expected in [
        "setup creates the database, private to its owner",
        "setup run again changes nothing",
        "sample request 1 succeeds",
        "repeating sample request 1 is refused as a conflict and writes nothing",
        "an invalid request is refused as invalid input and writes nothing",
        "a password from stdin is stored only as its argon2id hash",
        "cleanup removes the database and leaves nothing behind",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn fifty_concurrent_first_creates_set_the_database_up_exactly_once() {
    let sb = Sandbox::new();
    let runs = concurrent_creates(&sb, 50);
    for run in &runs {
        run.code(0);
    }
    let notes = runs
        .iter()
        .filter(|r| r.stderr.contains("first use: created"))
        .count();
    assert_eq!(notes, 1, "exactly one process created the database");
    assert_eq!(users(&sb), 50);
}

#[test]
fn a_data_or_backup_directory_others_could_write_to_is_refused_with_the_fix() {
    let sb = Sandbox::new();
    let data = sb.data_dir();
    fs::create_dir_all(&data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o775)).unwrap();
    sb.run(EXE, &["--self-setup"])
        .code(77)
        .stderr_has(&format!("{} is writable by its group", data.display()))
        .stderr_has(&format!("chmod go-w {}", data.display()));
    assert!(!sb.database(EXE).exists(), "nothing was created");
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    sb.run(EXE, &["--self-setup"]).code(0);

    // A backup directory that is a symlink to a world-writable, non-sticky directory.
    let open = sb.root().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&open, sb.root().join("backups")).unwrap();
    let mut backup = sb.command(EXE, &["--self-backup"]);
    backup.env("COMMONDB_BACKUP_DIR", sb.root().join("backups"));
    Run::of(backup, None)
        .code(77)
        .stderr_has(&format!("chmod go-w {}", open.display()));
    assert_eq!(
        fs::read_dir(&open).unwrap().count(),
        0,
        "nothing was written"
    );
}

/// Not only setup: every run checks the database file and its directory before opening them,
/// since whoever can write there can replace the file or plant a `-wal` file SQLite replays.
#[test]
fn every_run_refuses_a_database_file_or_directory_others_could_write() {
    let sb = Sandbox::new();
    sb.create_user("alice", "a@example.com").code(0);
    let data = sb.data_dir();
    let db = sb.database(EXE);
    fs::set_permissions(&data, fs::Permissions::from_mode(0o775)).unwrap();
    sb.create_user("bob", "b@example.com")
        .code(77)
        .stderr_has(&format!("{} is writable by its group", data.display()));
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    for (mode, says) in [
        (0o664, "writable by its group"),
        (0o646, "writable by others"),
    ] {
        fs::set_permissions(&db, fs::Permissions::from_mode(mode)).unwrap();
        sb.create_user("bob", "b@example.com")
            .code(77)
            .stderr_has(&format!("database {} is {says}", db.display()))
            .stderr_has(&format!("chmod go-w {}", db.display()));
        sb.run(EXE, &["--self-backup"]).code(77);
    }
    fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).unwrap();
    // Only root may give a file away.
    if std::os::unix::fs::chown(&db, Some(65534), None).is_ok() {
        sb.create_user("bob", "b@example.com")
            .code(77)
            .stderr_has("belongs to user id 65534");
        std::os::unix::fs::chown(&db, Some(0), None).unwrap();
    }
    assert_eq!(users(&sb), 1, "a refused run wrote");
    sb.create_user("bob", "b@example.com").code(0);
}

#[test]
fn a_restore_from_a_fifo_is_refused_at_once() {
    let sb = Sandbox::new();
    sb.create_user("alice", "a@example.com").code(0);
    let fifo = sb.root().join("fifo");
    e2e::mkfifo(&fifo);
    // Without the check this waits for a writer forever.
    let restore = sb.command(
        EXE,
        &["--self-restore", "--yes", "--from", fifo.to_str().unwrap()],
    );
    Run::within(restore, 20)
        .code(66)
        .stderr_has("is not a regular file");
    assert_eq!(users(&sb), 1);
}

#[test]
fn cleanup_never_removes_a_device_a_fifo_or_a_symlink_named_as_the_database() {
    let sb = Sandbox::new();
    let dir = sb.root().join("odd");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let null = dir.join("null");
    let fifo = dir.join("fifo");
    let link = dir.join("link");
    // A copy of /dev/null: it reads as empty, like the empty file setup creates.
    let made = std::process::Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    e2e::mkfifo(&fifo);
    std::os::unix::fs::symlink(sb.root().join("elsewhere"), &link).unwrap();
    fs::write(sb.root().join("elsewhere"), "").unwrap();
    for path in [&null, &fifo, &link] {
        let mut cmd = sb.command(EXE, &["--self-cleanup", "--yes"]);
        cmd.env(
            "COMMONDB_DATABASE_URL",
            format!("sqlite:{}", path.display()),
        );
        Run::within(cmd, 20)
            .code(78)
            .stderr_has("is not a SQLite database");
        assert!(
            fs::symlink_metadata(path).is_ok(),
            "{} was removed",
            path.display()
        );
    }
}

#[test]
fn a_performance_report_to_a_fifo_nobody_reads_does_not_hang_the_exit() {
    let sb = Sandbox::new();
    let fifo = sb.root().join("report");
    e2e::mkfifo(&fifo);
    let mut cmd = sb.command(
        EXE,
        &[
            "--create",
            "--username",
            "alice",
            "--email",
            "a@example.com",
        ],
    );
    cmd.env(commondb::protocol::PERFORMANCE_REPORT_VAR, &fifo);
    // Without the fix this hangs after the commit.
    Run::within(cmd, 20).code(0);
    assert_eq!(users(&sb), 1);
}

/// With `--json`, a usage error writes the JSON error object on stdout too, as every other
/// error does; without it, stdout stays empty.
#[test]
fn a_usage_error_with_json_is_reported_in_json_too() {
    let sb = Sandbox::new();
    let run = sb.run(EXE, &["--json", "--create", "--username", "a", "--bogus"]);
    run.code(2).stderr_has("unexpected argument '--bogus'");
    let error = &run.json()["error"];
    assert_eq!(error["kind"], "usage", "{run}");
    assert_eq!(error["exit_code"], 2, "{run}");
    assert!(
        error["message"].as_str().unwrap().contains("--bogus"),
        "{run}"
    );
    let run = sb.run(EXE, &["--create", "--bogus"]);
    run.code(2);
    assert!(run.stdout.is_empty(), "{run}");
}
