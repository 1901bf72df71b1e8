//! TLS to the database: a private PostgreSQL the test starts with a throwaway CA's certificate
//! (for `localhost` only) and a `pg_hba.conf` that refuses every connection without TLS, so
//! that whatever works here went over TLS. Every mode runs with `sslmode=verify-full`; a wrong
//! CA and a host name the certificate does not carry are refused with a hint; `require` and
//! `verify-ca` work as the servers' own clients define them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use commondb::protocol::listen::TCP;
use e2e::{Run, Sandbox};

const EXE: &str = "create-user";

/// The newest PostgreSQL server binaries of this machine's packages.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// A PostgreSQL cluster of the test's own, TLS only; stopped when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    /// `runuser`, which waits for the server.
    child: std::process::Child,
}

impl PrivatePostgres {
    fn start(openssl: &Path) -> Option<PrivatePostgres> {
        let Some(bin) = postgres_bin() else {
            assert!(
                !e2e::ci(),
                "no PostgreSQL server binaries, and CI=true requires them"
            );
            eprintln!("SKIPPED: no PostgreSQL server binaries");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The certificate names localhost only: 127.0.0.1 is a name it does not carry.
        e2e::certificates(openssl, d, "server", "DNS:localhost");
        e2e::certificates(openssl, d, "other", "DNS:localhost");
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let owned = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(d)
            .status()
            .unwrap();
        assert!(owned.success());
        let as_postgres = |program: &Path| {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        };
        let init = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(d.join("data"))
            .args(["-A", "trust", "-U", "postgres"])
            .output()
            .unwrap();
        assert!(init.status.success(), "initdb: {init:?}");
        std::fs::write(
            d.join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        let port = e2e::free_port();
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(d.join("data"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(d)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", d.join("server.pem").display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", d.join("server.key").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let address = format!("127.0.0.1:{port}");
        e2e::wait_for("the private PostgreSQL", 30, || {
            std::net::TcpStream::connect(&address).ok()
        })
        .unwrap();
        // Listening is not yet accepting: give it the moment it takes to open.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Some(PrivatePostgres { dir, port, child })
    }

    fn ca(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.pem"))
            .display()
            .to_string()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // The postmaster's pid is the first line of postmaster.pid; SIGINT is a fast shutdown.
        if let Ok(text) = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            && let Some(pid) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u32>().ok())
        {
            e2e::signal(pid, rustix::process::Signal::INT);
            let gone = format!("/proc/{pid}");
            let _ = e2e::wait_for("PostgreSQL to stop", 20, || {
                (!Path::new(&gone).exists()).then_some(())
            });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_mode_runs_over_tls_to_postgresql_and_bad_certificates_are_refused() {
    let Some(openssl) = e2e::tool("openssl", "openssl") else {
        return;
    };
    let Some(pg) = PrivatePostgres::start(&openssl) else {
        return;
    };
    let mut sb = Sandbox::new();
    let port = pg.port;
    let ca = pg.ca("server-ca");
    let url = |host: &str, mode: &str, ca: &str| {
        format!("postgres://{host}:{port}/e2e_tls?sslmode={mode}&sslrootcert={ca}")
    };
    let admin = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        url("localhost", "verify-full", &ca),
    );
    let admin_run = |sb: &Sandbox, args: &[&str]| {
        let mut cmd = sb.command(EXE, args);
        cmd.env("COMMONDB_ADMIN_URL", &admin);
        Run::of(cmd, None)
    };
    admin_run(&sb, &["--self-setup"]).code(0);
    sb.run(
        EXE,
        &[
            "--create",
            "--username",
            "alice",
            "--email",
            "a@example.com",
        ],
    )
    .code(0);
    sb.run(EXE, &["--self-status"])
        .code(0)
        .stdout_has("encryption: TLS");
    admin_run(&sb, &["--self-test"]).code(0);
    sb.run(EXE, &["--self-backup"]).code(0);
    admin_run(&sb, &["--self-restore", "--yes"]).code(0);
    let served = sb.serve(EXE, &["--listen", &format!("{TCP}127.0.0.1:0")]);
    Run::of(
        sb.command(
            "runmany",
            &[
                "-n",
                "200",
                "-j",
                "4",
                "--serve",
                &format!("{TCP}{}", served.address(TCP)),
                EXE,
            ],
        ),
        None,
    )
    .code(0)
    .stdout_has("succeeded   200   failed 0");
    let (code, said) = served.terminate();
    assert_eq!(code, Some(0), "{said}");

    // A CA that did not sign the server's certificate: refused, saying what to check.
    let task = ["--create", "--username", "bob", "--email", "b@example.com"];
    let mut wrong = sb.command(EXE, &task);
    wrong.env(
        "COMMONDB_DATABASE_URL",
        url("localhost", "verify-full", &pg.ca("other-ca")),
    );
    Run::of(wrong, None)
        .code(69)
        .stderr_has("TLS handshake")
        .stderr_has("sslrootcert");
    // A host name the certificate does not carry (127.0.0.1; it names localhost): refused by
    // verify-full, not by verify-ca, which checks the CA only; require encrypts without
    // checking. (Tried on the administrator's connection: the app's credentials are kept by the
    // database's URL, host included.)
    let as_admin = |admin: String| {
        let mut cmd = sb.command(EXE, &["--self-setup"]);
        cmd.env("COMMONDB_ADMIN_URL", admin);
        Run::of(cmd, None)
    };
    let on_ip = |mode: &str, ca: &str| {
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode={mode}&sslrootcert={ca}")
    };
    as_admin(on_ip("verify-full", &ca))
        .code(69)
        .stderr_has("host name");
    as_admin(on_ip("verify-ca", &ca))
        .code(0)
        .stdout_has("already set up");
    as_admin(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"
    ))
    .code(0)
    .stdout_has("already set up");
    // Without TLS this server refuses the connection: all of the above was encrypted.
    as_admin(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ))
    .code(77)
    .stderr_has("no encryption");

    admin_run(&sb, &["--self-cleanup", "--yes"]).code(0);
}
