//! Setup and cleanup stopped at any point, on PostgreSQL and MariaDB: by SIGKILL, by Ctrl-C,
//! and by SIGKILL at a spread of moments. Whatever the moment, the next `--self-setup` finishes
//! the work (the task then runs with the recorded password) and `--self-cleanup` leaves
//! nothing behind.
//!
//! To stop a mode at an exact statement, the test holds a lock on the server's catalog of
//! roles (PostgreSQL's `pg_authid`, MariaDB's `mysql.global_priv`) that reads pass and writes
//! wait for: the mode then waits inside its `CREATE`/`DROP` of a role, where the test kills or
//! interrupts it. The server finishes that statement once the lock is released, as it would
//! for any client that died after sending it. The tests of this file run one at a time: the
//! orphaned statement of one test holds the server-wide setup lock until the lock of another
//! test is released.

use std::process::{Child, Stdio};
use std::time::Duration;

use e2e::{AnyConn, Backend, BackendSandbox, ServerDb, on_every_server};

const EXE: &str = "create-user";

on_every_server!(
    a_setup_killed_inside_create_role_is_finished_by_the_next_setup,
    a_setup_interrupted_by_ctrl_c_stops_after_the_step_with_130,
    a_cleanup_killed_inside_drop_role_is_finished_by_the_next_cleanup,
    a_self_test_killed_outright_is_cleaned_up_by_the_next,
);

/// Taken by every test of this file, so that they run one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A held lock on the server's table of roles, and the runtime its connection lives on.
struct RolesLocked {
    runtime: tokio::runtime::Runtime,
    conn: AnyConn,
    backend: Backend,
}

impl RolesLocked {
    fn take(db: &ServerDb) -> RolesLocked {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let statements: &[&str] = match db.backend {
            Backend::Postgres => &["BEGIN", "LOCK TABLE pg_authid IN SHARE MODE"],
            _ => &["LOCK TABLES mysql.global_priv READ"],
        };
        let conn = runtime.block_on(async {
            let mut conn = db.admin_connect(None).await.unwrap();
            for sql in statements {
                conn.exec(sql).await.unwrap();
            }
            conn
        });
        RolesLocked {
            runtime,
            conn,
            backend: db.backend,
        }
    }

    fn release(mut self) {
        let sql = match self.backend {
            Backend::Postgres => "COMMIT",
            _ => "UNLOCK TABLES",
        };
        self.runtime.block_on(self.conn.exec(sql)).unwrap();
    }
}

/// Waits (up to 30 s) until a statement starting with `verb` (`CREATE`, `DROP`) on one of this
/// test's roles waits for the lock on the roles (other tests hold it too).
fn wait_for_blocked(db: &ServerDb, verb: &str) {
    let name = &db.name;
    let sql = match db.backend {
        Backend::Postgres => format!(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '{verb} %{name}_%'"
        ),
        _ => format!(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE '{verb} USER%{name}_%' AND state LIKE 'Waiting%'"
        ),
    };
    poll(db, &sql, |n| n > 0, &format!("a blocked {verb}"));
}

/// Polls `sql` (a count, as the administrator) until `done` holds, for up to 30 s.
fn poll(db: &ServerDb, sql: &str, done: impl Fn(i64) -> bool, what: &str) {
    e2e::wait_for(what, 30, || {
        let n = e2e::block_on(async { db.admin_connect(None).await?.count(sql).await })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        done(n).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

fn roles_of(db: &ServerDb) -> String {
    match db.backend {
        Backend::Postgres => format!(
            "SELECT COUNT(*) FROM pg_roles WHERE rolname IN ('{0}_create_user', '{0}_create_user_backup')",
            db.name
        ),
        _ => format!(
            "SELECT COUNT(*) FROM mysql.user WHERE user IN ('{0}_create_user', '{0}_create_user_backup')",
            db.name
        ),
    }
}

fn spawn_admin(sb: &BackendSandbox, args: &[&str]) -> Child {
    let mut cmd = sb.command(EXE, args);
    cmd.env("COMMONDB_ADMIN_URL", &sb.server().admin_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("the executable starts")
}

/// After any interruption: setup finishes, the task runs with the recorded password, and
/// cleanup leaves nothing.
fn finish_and_clean_up(sb: &BackendSandbox) {
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    sb.run_admin(EXE, &["--self-setup"])
        .code(0)
        .stdout_has("already set up");
    sb.create_user("alice", "alice@example.com").code(0);
    sb.run_admin(EXE, &["--self-cleanup", "--yes"])
        .code(0)
        .stdout_has("removed the database")
        .stdout_has("dropped database");
    assert_eq!(sb.server().leftovers(), Vec::<String>::new());
}

fn a_setup_killed_inside_create_role_is_finished_by_the_next_setup(backend: Backend) {
    let _serial = one_at_a_time();
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let db = sb.server();
    let lock = RolesLocked::take(db);
    let mut setup = spawn_admin(&sb, &["--self-setup"]);
    wait_for_blocked(db, "CREATE");
    setup.kill().unwrap();
    setup.wait().unwrap();
    lock.release();
    // The server finishes the dead client's CREATE: a role exists that no setup recorded.
    poll(db, &roles_of(db), |n| n == 1, "the orphaned role");
    finish_and_clean_up(&sb);
}

fn a_setup_interrupted_by_ctrl_c_stops_after_the_step_with_130(backend: Backend) {
    let _serial = one_at_a_time();
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let db = sb.server();
    let lock = RolesLocked::take(db);
    let mut setup = spawn_admin(&sb, &["--self-setup"]);
    let log = e2e::StderrLog::read(setup.stderr.take().expect("stderr is piped"));
    wait_for_blocked(db, "CREATE");
    e2e::signal(setup.id(), rustix::process::Signal::INT);
    // The step goes on only once setup has taken the signal in, which it says (if it never
    // does, the checks below fail).
    let _ = log.wait_for_line(30, |l| {
        l.contains("stopping after the current step").then_some(())
    });
    lock.release();
    let out = setup.wait_with_output().unwrap();
    let stderr = log.finish(10);
    assert_eq!(out.status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("interrupted"), "stderr: {stderr}");
    assert!(
        stderr.contains("--self-setup again") && stderr.contains("--self-cleanup"),
        "the hint says how to go on: {stderr}"
    );
    // It stopped after the step it was in: one role made, the other not.
    poll(
        db,
        &roles_of(db),
        |n| n == 1,
        "the role of the finished step",
    );
    finish_and_clean_up(&sb);
}

fn a_cleanup_killed_inside_drop_role_is_finished_by_the_next_cleanup(backend: Backend) {
    let _serial = one_at_a_time();
    let Some(sb) = BackendSandbox::new(backend) else {
        return;
    };
    let db = sb.server();
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let lock = RolesLocked::take(db);
    let mut cleanup = spawn_admin(&sb, &["--self-cleanup", "--yes"]);
    wait_for_blocked(db, "DROP");
    cleanup.kill().unwrap();
    cleanup.wait().unwrap();
    lock.release();
    sb.run_admin(EXE, &["--self-cleanup", "--yes"])
        .code(0)
        .stdout_has("dropped database");
    assert_eq!(db.leftovers(), Vec::<String>::new());
}

/// SIGKILL at a spread of moments of a setup: wherever it lands, setup then cleanup (or
/// cleanup alone) leaves the server as it was. PostgreSQL only: a MariaDB migration is DDL,
/// which its server cannot roll back, so a kill inside one leaves it half-applied (reported
/// as such by the next setup).
#[test]
fn setups_killed_at_any_moment_are_finished_or_undone_on_postgres() {
    let _serial = one_at_a_time();
    for (i, delay_ms) in [0u64, 10, 25, 40, 60, 90, 130, 180, 250, 400]
        .into_iter()
        .enumerate()
    {
        let Some(sb) = BackendSandbox::new(Backend::Postgres) else {
            return;
        };
        let mut setup = spawn_admin(&sb, &["--self-setup"]);
        // This sleep is the test: the kill lands at a moment chosen by time, not by what setup
        // says, so that over the spread it falls between, and inside, every kind of step.
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = setup.kill();
        setup.wait().unwrap();
        if i % 2 == 0 {
            finish_and_clean_up(&sb);
        } else {
            let cleanup = sb.run_admin(EXE, &["--self-cleanup", "--yes"]);
            cleanup.code(0);
            assert_eq!(
                sb.server().leftovers(),
                Vec::<String>::new(),
                "after a kill at {delay_ms} ms: {cleanup}"
            );
        }
    }
}

/// The scratch directory (in the sandbox's TMPDIR) of a running self-test, once it has named
/// its scratch database: (directory, database name).
fn scratch_of_running_self_test(tmp: &std::path::Path) -> (std::path::PathBuf, String) {
    e2e::wait_for("a self-test to name its scratch database", 30, || {
        std::fs::read_dir(tmp).unwrap().flatten().find_map(|entry| {
            let url = std::fs::read_to_string(entry.path().join("scratch-database")).ok()?;
            let name = url.trim().rsplit('/').next()?.to_string();
            Some((entry.path(), name))
        })
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn a_self_test_killed_outright_is_cleaned_up_by_the_next(backend: Backend) {
    let _serial = one_at_a_time();
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    let tmp = sb.root().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    sb.set_env("TMPDIR", tmp.display().to_string());
    let db = sb.server();
    let mut first = spawn_admin(&sb, &["--self-test"]);
    let (dir, name) = scratch_of_running_self_test(&tmp);
    let (databases, roles) = match backend {
        Backend::Postgres => (
            format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{name}'"),
            format!("SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE '{name}%'"),
        ),
        _ => (
            format!(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{name}'"
            ),
            format!("SELECT COUNT(*) FROM mysql.user WHERE user LIKE '{name}%'"),
        ),
    };
    poll(db, &roles, |n| n == 2, "the scratch roles");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        dir.exists(),
        "a killed self-test cannot remove its directory"
    );
    assert_eq!(
        e2e::block_on(async { db.admin_connect(None).await?.count(&databases).await }),
        Ok(1)
    );

    sb.run_admin(EXE, &["--self-test"])
        .code(0)
        .stderr_has("removed what an interrupted self-test left")
        .stderr_has(&name);
    poll(
        db,
        &databases,
        |n| n == 0,
        "the stale scratch database to go",
    );
    poll(db, &roles, |n| n == 0, "the stale scratch roles to go");
    assert!(!dir.exists(), "the stale scratch directory is still there");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}
