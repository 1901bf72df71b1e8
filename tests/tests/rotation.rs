//! `--self-setup --rotate-credentials`: new passwords for the app and backup roles while a
//! `--serve` is under load, with no failed request: its open connections keep working, and the
//! connections it opens after the rotation read the new passwords (at their connect, or on
//! SIGHUP).

use commondb::protocol::listen::TCP;
use e2e::{Backend, BackendSandbox, Run, on_every_server};

const EXE: &str = "create-user";

on_every_server!(credentials_rotate_under_serve_load_without_a_failed_request);

/// runmany against `address`, `n` requests over `j` connections.
fn load(sb: &BackendSandbox, address: &str, n: &str, j: &str) -> std::process::Command {
    let mut cmd = sb.command("runmany", &["-n", n, "-j", j, "--serve", address, EXE]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

fn credentials_rotate_under_serve_load_without_a_failed_request(backend: Backend) {
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let (app, old_app) = sb.credentials(EXE, "app");
    let (backup, old_backup) = sb.credentials(EXE, "backup");
    // A pool that can grow: two connections are opened before the rotation, the rest after.
    sb.set_env("COMMONDB_SERVE__POOL_SIZE", "8");
    let served = sb.serve(EXE, &["--listen", &format!("{TCP}127.0.0.1:0")]);
    let address = format!("{TCP}{}", served.address(TCP));
    Run::of(load(&sb, &address, "200", "2"), None)
        .code(0)
        .stdout_has("succeeded   200   failed 0");

    // Rotation in the middle of a run on the open connections.
    let running = load(&sb, &address, "3000", "2").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    sb.run_admin(EXE, &["--self-setup", "--rotate-credentials"])
        .code(0)
        .stdout_has(&format!("role:     {app} (exists, new password)"))
        .stdout_has(&format!("role:     {backup} (exists, new password)"))
        .never_shows(&old_app);
    let out = running.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("succeeded   3000   failed 0"), "{text}");

    // The old passwords are refused now; the new ones, in the secrets file, work.
    let (_, new_app) = sb.credentials(EXE, "app");
    let (_, new_backup) = sb.credentials(EXE, "backup");
    assert_ne!(new_app, old_app);
    assert_ne!(new_backup, old_backup);
    let db = sb.server();
    db.exec_as(&app, &new_app, &db.name, "SELECT 1").unwrap();
    // (This machine's PostgreSQL trusts loopback connections whatever the password: there the
    // refusal cannot be seen, and MySQL/MariaDB's test shows it.)
    let checks_passwords = db
        .exec_as(&app, "not-the-password", &db.name, "SELECT 1")
        .is_err();
    if checks_passwords {
        assert!(db.exec_as(&app, &old_app, &db.name, "SELECT 1").is_err());
        assert!(
            db.exec_as(&backup, &old_backup, &db.name, "SELECT 1")
                .is_err()
        );
    } else {
        eprintln!("{backend:?} trusts loopback: the old passwords' refusal is not checked here");
    }

    // Six more connections, each opened after the rotation: the service reads the new
    // passwords when the old ones are refused, and no request fails.
    Run::of(load(&sb, &address, "1000", "8"), None)
        .code(0)
        .stdout_has("succeeded   1000   failed 0");
    // SIGHUP reads them at once, and says so without a secret.
    e2e::signal(served.pid(), rustix::process::Signal::HUP);
    e2e::wait_for("the reload note", 10, || {
        served
            .stderr()
            .contains("SIGHUP: read the secrets again")
            .then_some(())
    })
    .unwrap();
    assert_eq!(sb.count(EXE, "SELECT COUNT(*) FROM users"), 4200);
    let (code, said) = served.terminate();
    assert_eq!(code, Some(0), "{said}");
    assert!(!said.contains(&new_app) && !said.contains(&old_app));

    // The one-shot modes use the new passwords too; SQLite has none to rotate.
    sb.run(EXE, &["--self-backup"]).code(0);
    sb.run(
        EXE,
        &[
            "--create",
            "--username",
            "after",
            "--email",
            "a@example.com",
        ],
    )
    .code(0);
    sb.run_admin(EXE, &["--self-cleanup", "--yes"]).code(0);
}

#[test]
fn sqlite_has_no_credentials_to_rotate() {
    let sb = e2e::Sandbox::new();
    sb.run(EXE, &["--self-setup", "--rotate-credentials"])
        .code(2)
        .stderr_has("no credentials to rotate");
    sb.run(EXE, &["--self-status", "--rotate-credentials"])
        .code(2);
}
