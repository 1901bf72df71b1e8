//! TLS to the database: a private PostgreSQL and a private MariaDB that the test starts with a
//! throwaway CA's certificate (for `localhost` only), each refusing every connection without
//! TLS, so that whatever works here went over TLS. Every mode runs with the strictest mode
//! (`sslmode=verify-full`, `ssl-mode=verify_identity`); a wrong CA and a host name the
//! certificate does not carry are refused with a hint; the CA-only and encrypt-only modes work
//! as the servers' own clients define them. A role that must show a client certificate
//! (signed by a second CA) gets in with `sslcert`/`sslkey`, not without, and a key file that
//! others can read is refused before anything is sent.

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

/// The spelling of one server's URLs, and where its throwaway certificates are.
struct Server {
    scheme: &'static str,
    /// The administrator and the database it connects to.
    admin: &'static str,
    admin_db: &'static str,
    port: u16,
    /// The names of the TLS parameters and modes, in this server's own words.
    mode: &'static str,
    ca: &'static str,
    strict: &'static str,
    by_ca: &'static str,
    encrypt: &'static str,
    plain: &'static str,
    /// `server-ca.pem` (signed the server's certificate), `other-ca.pem` (did not).
    certs: PathBuf,
    /// `client.pem` and `client.key`, signed by the CA the server checks clients against.
    clients: PathBuf,
}

impl Server {
    fn ca_file(&self, name: &str) -> String {
        self.certs.join(format!("{name}.pem")).display().to_string()
    }

    fn url(&self, user: &str, host: &str, db: &str, mode: &str, ca: &str) -> String {
        let (scheme, port) = (self.scheme, self.port);
        let user = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        format!(
            "{scheme}://{user}{host}:{port}/{db}?{}={mode}&{}={ca}",
            self.mode, self.ca
        )
    }

    fn admin_url(&self, host: &str, mode: &str, ca: &str) -> String {
        self.url(self.admin, host, self.admin_db, mode, ca)
    }
}

/// Client certificates for a role that must show one: made before the server starts (it checks
/// them against `client-ca.pem`), kept in a directory of the test's user (the key must be ours).
fn client_certificates(openssl: &Path, server_dir: &Path) -> tempfile::TempDir {
    let clients = tempfile::tempdir().unwrap();
    e2e::certificates(openssl, clients.path(), "client", "DNS:localhost");
    std::fs::set_permissions(
        clients.path().join("client.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::copy(
        clients.path().join("client-ca.pem"),
        server_dir.join("client-ca.pem"),
    )
    .unwrap();
    clients
}

/// A PostgreSQL cluster of the test's own, TLS only; stopped when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    clients: tempfile::TempDir,
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
        let clients = client_certificates(openssl, d);
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
        // TLS only; `certuser` must also show a certificate signed by client-ca.pem.
        std::fs::write(
            d.join("data/pg_hba.conf"),
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 trust clientcert=verify-ca\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n",
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
            .arg("-c")
            .arg(format!("ssl_ca_file={}", d.join("client-ca.pem").display()))
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
        let made = as_postgres(&bin.join("psql"))
            .args(["-X", "-q", "-h"])
            .arg(d)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-c", "CREATE ROLE certuser SUPERUSER LOGIN"])
            .output()
            .unwrap();
        assert!(made.status.success(), "psql: {made:?}");
        Some(PrivatePostgres {
            dir,
            clients,
            port,
            child,
        })
    }

    fn server(&self) -> Server {
        Server {
            scheme: "postgres",
            admin: "postgres",
            admin_db: "postgres",
            port: self.port,
            mode: "sslmode",
            ca: "sslrootcert",
            strict: "verify-full",
            by_ca: "verify-ca",
            encrypt: "require",
            plain: "disable",
            certs: self.dir.path().to_path_buf(),
            clients: self.clients.path().to_path_buf(),
        }
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

/// A MariaDB server of the test's own (`mariadb-install-db` into a temporary directory, run as
/// root with `--user=root`), with `require_secure_transport`; stopped when dropped.
struct PrivateMariaDb {
    dir: tempfile::TempDir,
    clients: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl PrivateMariaDb {
    fn start(openssl: &Path) -> Option<PrivateMariaDb> {
        let (Some(install), Some(server)) = (
            e2e::tool("mariadb-install-db", "mariadb-server"),
            e2e::tool("mariadbd", "mariadb-server"),
        ) else {
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        e2e::certificates(openssl, d, "server", "DNS:localhost");
        e2e::certificates(openssl, d, "other", "DNS:localhost");
        let clients = client_certificates(openssl, d);
        let data = d.join("data");
        let init = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .unwrap();
        assert!(init.status.success(), "mariadb-install-db: {init:?}");
        let port = e2e::free_port();
        let socket = d.join("mariadb.sock");
        let file = |name: &str| d.join(name).display().to_string();
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", file("mariadb.pid")))
            .args(["--user=root", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--port={port}"))
            .arg(format!("--ssl-cert={}", file("server.pem")))
            .arg(format!("--ssl-key={}", file("server.key")))
            .arg(format!("--ssl-ca={}", file("client-ca.pem")))
            .arg("--require-secure-transport=ON")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let address = format!("127.0.0.1:{port}");
        e2e::wait_for("the private MariaDB", 30, || {
            std::net::TcpStream::connect(&address).ok()
        })
        .unwrap();
        let client = e2e::tool("mariadb", "mariadb-client").unwrap();
        let made = Command::new(client)
            .arg(format!("--socket={}", socket.display()))
            .args(["-uroot", "-e"])
            .arg(
                "CREATE USER certuser@'%' REQUIRE X509; \
                 GRANT ALL PRIVILEGES ON *.* TO certuser@'%' WITH GRANT OPTION",
            )
            .output()
            .unwrap();
        assert!(made.status.success(), "mariadb: {made:?}");
        Some(PrivateMariaDb {
            dir,
            clients,
            port,
            child,
        })
    }

    fn server(&self) -> Server {
        Server {
            scheme: "mysql",
            admin: "root",
            admin_db: "",
            port: self.port,
            mode: "ssl-mode",
            ca: "ssl-ca",
            strict: "verify_identity",
            by_ca: "verify_ca",
            encrypt: "required",
            plain: "disabled",
            certs: self.dir.path().to_path_buf(),
            clients: self.clients.path().to_path_buf(),
        }
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        e2e::signal(self.child.id(), rustix::process::Signal::TERM);
        let _ = e2e::wait_for("MariaDB to stop", 20, || {
            self.child.try_wait().ok().flatten()
        });
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
    every_mode_over_tls(&pg.server());
}

#[test]
fn every_mode_runs_over_tls_to_mariadb_and_bad_certificates_are_refused() {
    let Some(openssl) = e2e::tool("openssl", "openssl") else {
        return;
    };
    let Some(mariadb) = PrivateMariaDb::start(&openssl) else {
        return;
    };
    every_mode_over_tls(&mariadb.server());
}

/// Every mode with the strictest TLS mode, then what must be refused, then client certificates.
fn every_mode_over_tls(server: &Server) {
    let mut sb = Sandbox::new();
    let ca = server.ca_file("server-ca");
    let admin = server.admin_url("localhost", server.strict, &ca);
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        server.url("", "localhost", "e2e_tls", server.strict, &ca),
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
    // The certificate as the server shows it: the throwaway CA's, two days to live.
    sb.run(EXE, &["--self-status"])
        .code(0)
        .stdout_has("encryption: TLS")
        .stdout_has("certificate: CN=localhost (issued by CN=e2e test CA), expires ")
        .stdout_has("(in 1 day: renew it soon)");
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
        server.url(
            "",
            "localhost",
            "e2e_tls",
            server.strict,
            &server.ca_file("other-ca"),
        ),
    );
    Run::of(wrong, None)
        .code(69)
        .stderr_has("TLS handshake")
        .stderr_has(&format!("point {} at the CA", server.ca));
    // A host name the certificate does not carry (127.0.0.1; it names localhost): refused by
    // the strict mode, not by the CA-only mode; the encrypt-only mode checks nothing. (Tried on
    // the administrator's connection: the app's credentials are kept by the database's URL,
    // host included.)
    let as_admin = |admin: String| {
        let mut cmd = sb.command(EXE, &["--self-setup"]);
        cmd.env("COMMONDB_ADMIN_URL", admin);
        Run::of(cmd, None)
    };
    as_admin(server.admin_url("127.0.0.1", server.strict, &ca))
        .code(69)
        .stderr_has("host name")
        .stderr_has(server.by_ca);
    as_admin(server.admin_url("127.0.0.1", server.by_ca, &ca))
        .code(0)
        .stdout_has("already set up");
    as_admin(server.admin_url("127.0.0.1", server.encrypt, &ca))
        .code(0)
        .stdout_has("already set up");
    // Without TLS this server refuses the connection: all of the above was encrypted.
    as_admin(server.admin_url("127.0.0.1", server.plain, &ca)).code(77);

    // A role that must show a client certificate: in with one, refused without.
    let cert = server.clients.join("client.pem").display().to_string();
    let key = server.clients.join("client.key");
    let as_certuser = |key: Option<&Path>| {
        let url = server.url("certuser", "localhost", server.admin_db, server.strict, &ca);
        match key {
            Some(key) => format!("{url}&sslcert={cert}&sslkey={}", key.display()),
            None => url,
        }
    };
    as_admin(as_certuser(Some(&key)))
        .code(0)
        .stdout_has("already set up");
    as_admin(as_certuser(None)).code(77);
    // A key that others can read is a secret no longer: refused before connecting.
    let loose = server.clients.join("loose.key");
    std::fs::copy(&key, &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    as_admin(as_certuser(Some(&loose)))
        .code(77)
        .stderr_has("chmod 600");
    let missing = server.clients.join("missing.key");
    as_admin(as_certuser(Some(&missing)))
        .code(78)
        .stderr_has("sslkey");

    admin_run(&sb, &["--self-cleanup", "--yes"]).code(0);
}
