//! The end-to-end test harness: runs the real binaries as separate processes, each test in a
//! private sandbox (its own HOME and XDG directories, an environment with no `COMMONDB_*`
//! variables of the developer's), and prints everything about a run that did not go as
//! expected.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

pub use commondb::protocol::Answer;
use tempfile::TempDir;

/// The domain of executable `exe` (its `Task::DOMAIN`): what names its embedded database.
pub fn domain(exe: &str) -> &str {
    match exe {
        "log-event" | "list-events" => "events",
        "create-user" | "get-user" | "list-users" | "delete-user" | "set-password" | "login" => {
            "users"
        }
        other => other,
    }
}

/// The path of a workspace binary, built on first use.
///
/// Cargo builds only a package's own binaries for its tests, and these live in other packages,
/// so the harness asks cargo to build them once per test process (a no-op when they are fresh)
/// and finds them beside the test executable's `deps` directory, as ripgrep's tests do.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "executables",
            "-p",
            "runner",
        ]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
    });
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with cargo build --bins",
        path.display()
    );
    path
}

/// A private world for one test: HOME, XDG_DATA_HOME and XDG_CONFIG_HOME in a temporary
/// directory, removed afterwards unless the test failed (then its path is printed).
pub struct Sandbox {
    dir: Option<TempDir>,
    env: BTreeMap<String, String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A fresh sandbox.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("e2e-")
            .tempdir()
            .expect("a temporary directory");
        let root = dir.path();
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        env.insert("HOME".into(), root.join("home").display().to_string());
        env.insert(
            "XDG_DATA_HOME".into(),
            root.join("home/.local/share").display().to_string(),
        );
        env.insert(
            "XDG_CONFIG_HOME".into(),
            root.join("home/.config").display().to_string(),
        );
        Sandbox {
            dir: Some(dir),
            env,
        }
    }

    /// The sandbox's root directory.
    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("the sandbox exists").path()
    }

    /// Sets an environment variable for every later run.
    pub fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.insert(key.into(), value.into());
    }

    /// The environment every run gets.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The default data directory of the executables.
    pub fn data_dir(&self) -> PathBuf {
        self.root().join("home/.local/share/commondb")
    }

    /// The default secrets directory.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root().join("home/.config/commondb/secrets")
    }

    /// The user configuration directory.
    pub fn config_dir(&self) -> PathBuf {
        self.root().join("home/.config/commondb")
    }

    /// The embedded database of executable `exe`: its domain's.
    pub fn database(&self, exe: &str) -> PathBuf {
        self.data_dir().join(format!("{}.sqlite3", domain(exe)))
    }

    /// A command for binary `exe` in this sandbox, with no stdin.
    pub fn command(&self, exe: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin(exe));
        cmd.args(args)
            .env_clear()
            .envs(&self.env)
            .current_dir(self.root())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `exe` with `args` and no input.
    pub fn run(&self, exe: &str, args: &[&str]) -> Run {
        Run::of(self.command(exe, args), None)
    }

    /// Runs `create-user --create --username USERNAME --email EMAIL`.
    pub fn create_user(&self, username: &str, email: &str) -> Run {
        self.run(
            "create-user",
            &["--create", "--username", username, "--email", email],
        )
    }

    /// Runs `create-user --create --username USERNAME --email EMAIL --password-stdin` with
    /// `password` and a line ending on its stdin.
    pub fn create_user_with_password(&self, username: &str, email: &str, password: &str) -> Run {
        self.run_with_input(
            "create-user",
            &[
                "--create",
                "--username",
                username,
                "--email",
                email,
                "--password-stdin",
            ],
            &format!("{password}\n"),
        )
    }

    /// Starts one `exe` process per argument list, all at once, with `env` added to the
    /// sandbox's environment, and waits for them all.
    pub fn run_concurrently(
        &self,
        exe: &str,
        runs: Vec<Vec<String>>,
        env: &[(&str, &str)],
    ) -> Vec<Run> {
        let children: Vec<_> = runs
            .iter()
            .map(|args| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut cmd = self.command(exe, &args);
                cmd.envs(env.iter().copied());
                let command = format!("{cmd:?}");
                let child = cmd
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (command, child)
            })
            .collect();
        children
            .into_iter()
            .map(|(command, child)| Run::from_output(command, child.wait_with_output().unwrap()))
            .collect()
    }

    /// Runs `exe` with `args`, writing `input` to its stdin.
    pub fn run_with_input(&self, exe: &str, args: &[&str], input: &str) -> Run {
        Run::of(self.command(exe, args), Some(input))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "the failed test's sandbox is kept at {}",
                dir.keep().display()
            );
        }
    }
}

/// A finished run: what was run, its exit code and its output.
pub struct Run {
    /// The command line, for failure messages.
    pub command: String,
    /// The exit code (128 + N for signal N).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to completion, feeding it `input`.
    pub fn of(mut cmd: Command, input: Option<&str>) -> Run {
        let command = format!("{cmd:?}");
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            stdin
                .write_all(input.as_bytes())
                .expect("the child reads its input");
        }
        let output = child.wait_with_output().expect("the child finishes");
        Run::from_output(command, output)
    }

    /// Runs `cmd` (no input) like [`Run::of`], but kills it and fails the test if it has not
    /// finished within `secs` seconds: for what must not wait on a FIFO or a device.
    pub fn within(mut cmd: Command, secs: u64) -> Run {
        let command = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        if let Err(e) = wait_for(&format!("{command} to finish"), secs, || {
            child.try_wait().expect("wait works")
        }) {
            let _ = child.kill();
            panic!("{e}");
        }
        let output = child.wait_with_output().expect("the child finishes");
        Run::from_output(command, output)
    }

    /// A run from a finished process's output.
    pub fn from_output(command: String, output: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let code = output
            .status
            .code()
            .unwrap_or_else(|| 128 + output.status.signal().unwrap_or(0));
        Run {
            command,
            code,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, printing everything about the run if it differs.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(self.code, expected, "unexpected exit code\n{self}");
        self
    }

    /// Asserts that stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Run {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}\n{self}");
        self
    }

    /// Asserts that stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Run {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}\n{self}");
        self
    }

    /// Asserts that neither stdout nor stderr contains `text`.
    #[track_caller]
    pub fn never_shows(&self, text: &str) -> &Run {
        assert!(
            !self.stdout.contains(text) && !self.stderr.contains(text),
            "the output shows {text:?}\n{self}"
        );
        self
    }

    /// Parses stdout as exactly one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// Opens a SQLite database file directly (to check what the binaries wrote).
pub async fn open_sqlite(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// Runs one `SELECT COUNT(*) …` against a SQLite file.
pub fn sqlite_count(path: &Path, sql: &'static str) -> i64 {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            use sqlx::Connection;
            let mut conn = open_sqlite(path).await;
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(&mut conn)
                .await
                .expect("the query runs");
            conn.close().await.expect("the connection closes");
            n
        })
}

/// The backends the scenarios run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// PostgreSQL, found through `TEST_POSTGRES_ADMIN_URL`.
    Postgres,
    /// MariaDB or MySQL, found through `TEST_MYSQL_ADMIN_URL`.
    MySql,
}

/// Defines one `#[test]` per backend for each scenario `fn name(backend: Backend)`, in modules
/// `sqlite`, `postgres` and `mysql`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[test] fn $name() { super::$name($crate::Backend::Sqlite) } )* }
        mod postgres { $( #[test] fn $name() { super::$name($crate::Backend::Postgres) } )* }
        mod mysql { $( #[test] fn $name() { super::$name($crate::Backend::MySql) } )* }
    };
}

/// Defines one `#[test]` per server backend for each scenario `fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_every_server {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[test] fn $name() { super::$name($crate::Backend::Postgres) } )* }
        mod mysql { $( #[test] fn $name() { super::$name($crate::Backend::MySql) } )* }
    };
}

impl Backend {
    /// The environment variable naming the server's admin URL, and its default.
    fn admin_var(self) -> (&'static str, &'static str) {
        match self {
            Backend::Postgres => (
                "TEST_POSTGRES_ADMIN_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            Backend::MySql => ("TEST_MYSQL_ADMIN_URL", "mysql://root@127.0.0.1:3306/"),
            Backend::Sqlite => ("", ""),
        }
    }

    /// The server's admin URL, if the server answers. Without one the test is skipped with a
    /// loud line, except with `CI=true`, where a missing server fails the test.
    pub fn admin_url(self) -> Option<String> {
        let (var, default) = self.admin_var();
        let url = std::env::var(var).unwrap_or_else(|_| default.to_string());
        let authority = url
            .split_once("://")
            .map_or("", |(_, r)| r)
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let answers = std::net::ToSocketAddrs::to_socket_addrs(host_port)
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|addr| {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
                    .is_ok()
            });
        if answers {
            return Some(url);
        }
        let msg = format!(
            "no {self:?} server answers at {host_port}: set {var} to an admin URL, or start one with scripts/dev-servers start"
        );
        if ci() {
            panic!("{msg} (CI=true requires every server)");
        }
        eprintln!("SKIPPED: {msg}");
        None
    }
}

/// A uniquely named database (and its roles) on a server, dropped when the test ends.
pub struct ServerDb {
    /// The backend.
    pub backend: Backend,
    /// The administrator's URL.
    pub admin_url: String,
    /// The database's name; the roles are `<name>_<executable>`, `<name>_<executable>_backup`
    /// and, where a test makes one, the administrator `<name>_adm`.
    pub name: String,
}

impl ServerDb {
    fn new(backend: Backend, admin_url: String) -> ServerDb {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("e2e_{:x}_{n}", std::process::id());
        ServerDb {
            backend,
            admin_url,
            name,
        }
    }

    /// The server's `host:port`.
    pub fn host_port(&self) -> &str {
        let authority = self
            .admin_url
            .split_once("://")
            .map_or("", |(_, r)| r)
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        authority.rsplit_once('@').map_or(authority, |(_, hp)| hp)
    }

    /// The server's port, as `:PORT`.
    pub fn port(&self) -> String {
        format!(
            ":{}",
            self.host_port().rsplit_once(':').map_or("", |(_, p)| p)
        )
    }

    /// The database's URL, without credentials.
    pub fn url(&self) -> String {
        let scheme = if self.backend == Backend::Postgres {
            "postgres"
        } else {
            "mysql"
        };
        format!("{scheme}://{}/{}", self.host_port(), self.name)
    }

    /// Runs statements as the administrator, in database `db` (or the admin URL's own).
    pub fn admin_exec(&self, db: Option<&str>, statements: &[String]) -> Result<(), String> {
        block_on(async {
            let mut conn = self.admin_connect(db).await?;
            for sql in statements {
                conn.exec(sql).await?;
            }
            Ok(())
        })
    }

    /// Runs a `SELECT COUNT(*) …` as the administrator in this database.
    pub fn admin_count(&self, sql: &str) -> i64 {
        block_on(async {
            let mut conn = self.admin_connect(Some(&self.name)).await?;
            conn.count(sql).await
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Connects as the administrator to database `db` (or the admin URL's own).
    pub async fn admin_connect(&self, db: Option<&str>) -> Result<AnyConn, String> {
        AnyConn::connect(self.backend, &self.admin_url, None, db).await
    }

    /// Connects as `user`/`password` to database `db` and runs `sql`.
    pub fn exec_as(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<(), String> {
        block_on(async {
            let mut conn = AnyConn::connect(
                self.backend,
                &self.admin_url,
                Some((user, password)),
                Some(db),
            )
            .await?;
            conn.exec(sql).await
        })
    }

    /// The roles on the server whose names start with this database's name (every role setup
    /// derives from it, and the test's administrator).
    pub fn roles(&self) -> Vec<String> {
        let sql = match self.backend {
            Backend::Postgres => "SELECT rolname::TEXT FROM pg_roles WHERE rolname LIKE '{}\\_%'",
            _ => "SELECT CAST(user AS CHAR) FROM mysql.user WHERE user LIKE '{}\\_%'",
        }
        .replace("{}", &self.name);
        block_on(async { self.admin_connect(None).await?.strings(&sql).await })
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The database or roles of this name still on the server.
    pub fn leftovers(&self) -> Vec<String> {
        let dbs = match self.backend {
            Backend::Postgres => "SELECT COUNT(*) FROM pg_database WHERE datname = '{}'",
            _ => "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{}'",
        };
        let sql = dbs.replace("{}", &self.name);
        let count =
            block_on(async { self.admin_connect(None).await?.count(&sql).await }).unwrap_or(-1);
        let mut left = Vec::new();
        if count != 0 {
            left.push(format!("database {}", self.name));
        }
        left.extend(self.roles().into_iter().map(|r| format!("role {r}")));
        left
    }

    /// Drops the database and roles whatever state they are in.
    pub fn drop_all(&self) {
        let n = &self.name;
        let mut statements = match self.backend {
            Backend::Postgres => vec![format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)")],
            _ => vec![format!("DROP DATABASE IF EXISTS `{n}`")],
        };
        let roles = std::panic::catch_unwind(|| self.roles()).unwrap_or_default();
        for role in roles {
            statements.push(match self.backend {
                Backend::Postgres => format!("DROP ROLE IF EXISTS \"{role}\""),
                _ => format!("DROP USER IF EXISTS '{role}'@'%'"),
            });
        }
        if let Err(e) = self.admin_exec(None, &statements) {
            eprintln!("could not drop the test database {n}: {e}");
        }
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        self.drop_all();
    }
}

/// A connection to any backend, for the tests' own checks.
pub enum AnyConn {
    /// SQLite.
    Sqlite(sqlx::SqliteConnection),
    /// PostgreSQL.
    Postgres(sqlx::PgConnection),
    /// MySQL or MariaDB.
    MySql(sqlx::MySqlConnection),
}

impl AnyConn {
    /// Connects to a server with the admin URL's address, as `creds` (or the admin), to `db`.
    pub async fn connect(
        backend: Backend,
        admin_url: &str,
        creds: Option<(&str, &str)>,
        db: Option<&str>,
    ) -> Result<AnyConn, String> {
        use sqlx::ConnectOptions;
        use std::str::FromStr;
        let e = |e: sqlx::Error| e.to_string();
        Ok(match backend {
            Backend::Postgres => {
                let mut o = sqlx::postgres::PgConnectOptions::from_str(admin_url).map_err(e)?;
                if let Some((u, p)) = creds {
                    o = o.username(u).password(p);
                }
                if let Some(db) = db {
                    o = o.database(db);
                }
                AnyConn::Postgres(o.connect().await.map_err(e)?)
            }
            Backend::MySql => {
                let mut o = sqlx::mysql::MySqlConnectOptions::from_str(admin_url).map_err(e)?;
                if let Some((u, p)) = creds {
                    o = o.username(u).password(p);
                }
                if let Some(db) = db {
                    o = o.database(db);
                }
                AnyConn::MySql(o.connect().await.map_err(e)?)
            }
            Backend::Sqlite => {
                AnyConn::Sqlite(open_sqlite(Path::new(db.unwrap_or(admin_url))).await)
            }
        })
    }

    /// Runs one statement.
    pub async fn exec(&mut self, sql: &str) -> Result<(), String> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let r = match self {
            AnyConn::Sqlite(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
            AnyConn::Postgres(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
            AnyConn::MySql(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
        };
        r.map_err(|e| e.to_string())
    }

    /// Runs a query returning one text column.
    pub async fn strings(&mut self, sql: &str) -> Result<Vec<String>, String> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let r = match self {
            AnyConn::Sqlite(c) => sqlx::query_scalar(sql).fetch_all(c).await,
            AnyConn::Postgres(c) => sqlx::query_scalar(sql).fetch_all(c).await,
            AnyConn::MySql(c) => sqlx::query_scalar(sql).fetch_all(c).await,
        };
        r.map_err(|e| e.to_string())
    }

    /// Runs a query returning one `BIGINT`.
    pub async fn count(&mut self, sql: &str) -> Result<i64, String> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let r = match self {
            AnyConn::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await,
            AnyConn::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await,
            AnyConn::MySql(c) => sqlx::query_scalar(sql).fetch_one(c).await,
        };
        r.map_err(|e| e.to_string())
    }
}

/// Polls `check` every 10 ms until it gives a value, for up to `secs` seconds; then an error
/// saying what did not happen.
pub fn wait_for<T>(
    what: &str,
    secs: u64,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("timed out after {secs} s waiting for {what}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether this is CI (`CI=true`), where whatever a test needs must be there: a missing server
/// or tool fails the test instead of skipping it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The path of the program `tool` on `PATH`. Without it, the test is skipped with a loud line
/// that says to install `package`, except with `CI=true`, where it fails (scripts/test installs
/// what the tests need in CI).
pub fn tool(tool: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!("{tool} is not installed (apt-get install {package})");
        assert!(!ci(), "{msg}, and CI=true requires it");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// Makes a FIFO at `path` (as `mkfifo` does).
pub fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", path.display());
}

/// Runs a future on a fresh current-thread runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// A sandbox whose executables use `backend`: for a server, a fresh uniquely named database
/// (`COMMONDB_DATABASE_URL`), with the administrator's URL kept apart for [`Sandbox::run_admin`].
pub struct BackendSandbox {
    /// The sandbox.
    pub sb: Sandbox,
    /// The backend.
    pub backend: Backend,
    /// The server database, for server backends.
    pub server: Option<ServerDb>,
}

impl std::ops::Deref for BackendSandbox {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

impl std::ops::DerefMut for BackendSandbox {
    fn deref_mut(&mut self) -> &mut Sandbox {
        &mut self.sb
    }
}

impl BackendSandbox {
    /// A sandbox on `backend`, or `None` (after a loud line) if its server does not answer.
    pub fn new(backend: Backend) -> Option<BackendSandbox> {
        let mut sb = Sandbox::new();
        let server = match backend {
            Backend::Sqlite => None,
            _ => {
                let db = ServerDb::new(backend, backend.admin_url()?);
                sb.set_env("COMMONDB_DATABASE_URL", db.url());
                Some(db)
            }
        };
        Some(BackendSandbox {
            sb,
            backend,
            server,
        })
    }

    /// The server database; panics on SQLite.
    pub fn server(&self) -> &ServerDb {
        self.server.as_ref().expect("a server backend")
    }

    /// Runs `exe` with the administrator's URL in `COMMONDB_ADMIN_URL` (servers only).
    pub fn run_admin(&self, exe: &str, args: &[&str]) -> Run {
        Run::of(self.command_admin(exe, args), None)
    }

    /// The command of `exe` with the administrator's URL in `COMMONDB_ADMIN_URL` (servers
    /// only): what setup, restore and a seed need.
    pub fn command_admin(&self, exe: &str, args: &[&str]) -> Command {
        let mut cmd = self.sb.command(exe, args);
        if let Some(db) = &self.server {
            cmd.env("COMMONDB_ADMIN_URL", &db.admin_url);
        }
        cmd
    }

    /// Runs a `SELECT COUNT(*) …` in the executable's database, whatever the backend.
    pub fn count(&self, exe: &str, sql: &str) -> i64 {
        match &self.server {
            Some(db) => db.admin_count(sql),
            None => block_on(async {
                let mut conn = AnyConn::Sqlite(open_sqlite(&self.sb.database(exe)).await);
                conn.count(sql).await
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// A connection to the executable's database as the administrator (the file's owner on
    /// SQLite).
    pub async fn admin_conn(&self, exe: &str) -> AnyConn {
        match &self.server {
            Some(db) => db
                .admin_connect(Some(&db.name))
                .await
                .expect("an admin connection"),
            None => AnyConn::Sqlite(open_sqlite(&self.sb.database(exe)).await),
        }
    }

    /// Runs statements in the executable's database as the administrator.
    pub fn exec(&self, exe: &str, statements: &[&str]) {
        block_on(async {
            let mut conn = self.admin_conn(exe).await;
            for sql in statements {
                conn.exec(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        })
    }

    /// Every row of `create-user`'s table, one string each in id order, in the backend's own
    /// rendering (to compare states of one database).
    pub fn user_rows(&self) -> Vec<String> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT id || '|' || username || '|' || email || '|' || COALESCE(password_hash, '-') || '|' || created_at FROM users ORDER BY id"
            }
            Backend::Postgres => {
                "SELECT id || '|' || username || '|' || email || '|' || COALESCE(password_hash, '-') || '|' || created_at::text FROM users ORDER BY id"
            }
            Backend::MySql => {
                "SELECT CONCAT_WS('|', id, username, email, COALESCE(password_hash, '-'), CAST(created_at AS CHAR)) FROM users ORDER BY id"
            }
        };
        block_on(async { self.admin_conn("create-user").await.strings(sql).await })
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Adds `n` users named `bulk1` … straight into `create-user`'s table, in one statement.
    pub fn fill_users(&self, n: u32) {
        let sql = match self.backend {
            Backend::Sqlite => format!(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
                 INSERT INTO users (username, email, created_at) \
                 SELECT 'bulk' || i, 'b' || i || '@example.com', '2026-01-01T00:00:00.000001+00:00' FROM s"
            ),
            Backend::Postgres => format!(
                "INSERT INTO users (username, email, created_at) \
                 SELECT 'bulk' || i, 'b' || i || '@example.com', now() FROM generate_series(1, {n}) i"
            ),
            Backend::MySql => {
                let digits = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                     UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
                format!(
                    "INSERT INTO users (username, email, created_at) \
                     SELECT CONCAT('bulk', i), CONCAT('b', i, '@example.com'), NOW(6) FROM \
                     (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * g.d + 1 AS i \
                      FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f, {digits} g) s WHERE i <= {n}"
                )
            }
        };
        self.exec("create-user", &[&sql]);
    }

    /// The backup directory (the default one, in the data directory).
    pub fn backup_dir(&self) -> PathBuf {
        self.sb.data_dir().join("backups")
    }

    /// The file names in the backup directory, sorted.
    pub fn backup_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.backup_dir())
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The credentials setup wrote for `exe`'s `role` (`app` or `backup`) on this database.
    pub fn credentials(&self, exe: &str, role: &str) -> (String, String) {
        let file = self.sb.secrets_dir().join(format!("{exe}.toml"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let doc: toml::Table = text.parse().expect("the secrets file is TOML");
        let entry = &doc["databases"][&self.server().url()];
        let table = entry[role].as_table().expect("a role table");
        (
            table["user"].as_str().unwrap().to_string(),
            table["password"].as_str().unwrap().to_string(),
        )
    }
}

/// Starts `n` `create-user --create` processes at once (user0 … user{n-1}) and waits for them.
pub fn concurrent_creates(sb: &Sandbox, n: usize) -> Vec<Run> {
    let runs = (0..n)
        .map(|i| {
            [
                "--create",
                "--username",
                &format!("user{i}"),
                "--email",
                "u@example.com",
            ]
            .map(String::from)
            .to_vec()
        })
        .collect();
    sb.run_concurrently("create-user", runs, &[])
}

/// What a child process writes on stderr, read line by line by a thread of its own (so that the
/// child never blocks on a full pipe), for a test to wait on what the process says rather than
/// on time.
#[derive(Clone)]
pub struct StderrLog {
    shared: std::sync::Arc<(std::sync::Mutex<LogState>, std::sync::Condvar)>,
}

#[derive(Default)]
struct LogState {
    text: String,
    /// The pipe reached its end: the process, and whatever inherited its stderr, closed it.
    ended: bool,
}

impl StderrLog {
    /// Starts reading `pipe`.
    pub fn read(pipe: impl std::io::Read + Send + 'static) -> StderrLog {
        use std::io::BufRead;
        let log = StderrLog {
            shared: std::sync::Arc::default(),
        };
        let writer = log.clone();
        std::thread::spawn(move || {
            let (state, changed) = &*writer.shared;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut state = state.lock().unwrap();
                state.text.push_str(&line);
                state.text.push('\n');
                changed.notify_all();
            }
            state.lock().unwrap().ended = true;
            changed.notify_all();
        });
        log
    }

    /// Waits up to `secs` seconds for a line for which `found` gives a value; `None` if stderr
    /// ended or the time ran out first.
    pub fn wait_for_line<T>(
        &self,
        secs: u64,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let (state, changed) = &*self.shared;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut seen = 0;
        let mut state = state.lock().unwrap();
        loop {
            // Only whole lines are in the text; each is looked at once.
            for line in state.text[seen..].lines() {
                if let Some(value) = found(line) {
                    return Some(value);
                }
            }
            seen = state.text.len();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if state.ended || left.is_zero() {
                return None;
            }
            state = changed.wait_timeout(state, left).unwrap().0;
        }
    }

    /// What was read so far.
    pub fn text(&self) -> String {
        self.shared.0.lock().unwrap().text.clone()
    }

    /// Waits (up to `secs` seconds) for the end of stderr, so that the last lines of a process
    /// that exited are read too; then everything it said.
    pub fn finish(&self, secs: u64) -> String {
        let (state, changed) = &*self.shared;
        let state = state.lock().unwrap();
        let wait = std::time::Duration::from_secs(secs);
        let (state, _) = changed
            .wait_timeout_while(state, wait, |s| !s.ended)
            .unwrap();
        state.text.clone()
    }
}

/// A `--serve` process, stopped (SIGKILL) when dropped unless [`Served::terminate`] stopped it.
pub struct Served {
    child: std::process::Child,
    /// The addresses its ready line named, e.g. `tcp://127.0.0.1:40123`.
    pub addresses: Vec<String>,
    stderr: StderrLog,
}

impl Sandbox {
    /// Starts `exe --serve ARGS…` and waits (up to 30 s) for its ready line.
    pub fn serve(&self, exe: &str, args: &[&str]) -> Served {
        self.serve_command(self.command(exe, &[&["--serve"], args].concat()))
    }

    /// Starts a prepared `--serve` command and waits (up to 30 s) for its ready line.
    pub fn serve_command(&self, mut cmd: Command) -> Served {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        let mut child = cmd.spawn().expect("the server starts");
        let stderr = StderrLog::read(child.stderr.take().expect("stderr is piped"));
        let ready = stderr.wait_for_line(30, |line| {
            commondb::protocol::parse_ready_line(line).map(|r| r.addresses)
        });
        match ready {
            Some(addresses) => Served {
                child,
                addresses,
                stderr,
            },
            None => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "the server did not say it was ready ({status:?}); stderr:\n{}",
                    stderr.finish(5)
                );
            }
        }
    }
}

impl Served {
    /// The first address with scheme `prefix` (`tcp://`, `http://`, `unix:`), without it.
    pub fn address(&self, prefix: &str) -> String {
        self.addresses
            .iter()
            .find_map(|a| a.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} address in {:?}", self.addresses))
            .to_string()
    }

    /// A line-protocol client on the first `tcp://` address.
    pub fn client(&self) -> LineClient {
        LineClient::tcp(&self.address(commondb::protocol::listen::TCP))
    }

    /// The value of one series of the metrics (`name{labels}` exactly as the service writes
    /// it), from the first `http://` address.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let addr = self.address(commondb::protocol::listen::HTTP);
        let (status, text) = http(&addr, "GET", commondb::protocol::METRICS_PATH, &[], b"");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits (up to 30 s) until the metrics' `series` has `value`.
    pub fn wait_for_metric(&self, series: &str, value: f64) {
        wait_for(&format!("{series} to be {value}"), 30, || {
            (self.metric(series) == Some(value)).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", self.stderr()));
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        signal(self.child.id(), rustix::process::Signal::TERM);
    }

    /// Waits (up to 60 s) for the process to exit; returns its exit code and stderr.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let exited = wait_for("the server to exit", 60, || {
            self.child.try_wait().expect("wait works")
        });
        match exited {
            // Its last lines are read once the pipe ends.
            Ok(status) => (status.code(), self.stderr.finish(10)),
            Err(e) => panic!("{e}; stderr:\n{}", self.stderr()),
        }
    }

    /// SIGTERM, then [`Served::wait`].
    pub fn terminate(self) -> (Option<i32>, String) {
        self.signal_term();
        self.wait()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A line-protocol client: one request per line, one [`Answer`] per line.
pub struct LineClient {
    reader: std::io::BufReader<Box<dyn std::io::Read + Send>>,
    writer: Box<dyn Write + Send>,
}

impl LineClient {
    /// Connects to `host:port`.
    pub fn tcp(addr: &str) -> LineClient {
        let stream = std::net::TcpStream::connect(addr)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        LineClient::over_tcp(stream)
    }

    /// Connects to `host:port` as soon as something listens there, trying for up to 30 s: the
    /// first connection to a socket that is still being set up (by `systemd-socket-activate`,
    /// say).
    pub fn tcp_once_listening(addr: &str) -> LineClient {
        let stream = wait_for(&format!("something to listen on {addr}"), 30, || {
            std::net::TcpStream::connect(addr).ok()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        LineClient::over_tcp(stream)
    }

    fn over_tcp(stream: std::net::TcpStream) -> LineClient {
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let reader = stream.try_clone().unwrap();
        LineClient {
            reader: std::io::BufReader::new(Box::new(reader)),
            writer: Box::new(stream),
        }
    }

    /// Connects to the unix socket at `path`.
    pub fn unix(path: &str) -> LineClient {
        let stream = std::os::unix::net::UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connecting to {path}: {e}"));
        let reader = stream.try_clone().unwrap();
        LineClient {
            reader: std::io::BufReader::new(Box::new(reader)),
            writer: Box::new(stream),
        }
    }

    /// Sends raw bytes (several lines, or a broken one).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Reads one answer; `None` when the server closed the connection. An answer that is not
    /// the protocol's fails the test.
    pub fn recv(&mut self) -> Option<Answer> {
        use std::io::BufRead;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(answer(&line)),
        }
    }

    /// Sends one request line and reads its answer.
    pub fn call(&mut self, line: &str) -> Answer {
        self.send(format!("{line}\n").as_bytes())
            .expect("the request is sent");
        self.recv()
            .unwrap_or_else(|| panic!("no answer to {line:?}"))
    }
}

/// The answer `text` (a line, or an HTTP body), which must be the protocol's.
pub fn answer(text: &str) -> Answer {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the answer {text:?} is not the protocol's JSON: {e}"))
}

/// The result of an answer that succeeded; JSON `null` for one that did not.
pub fn result(answer: &Answer) -> &serde_json::Value {
    answer.result.as_ref().unwrap_or(&serde_json::Value::Null)
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // A server may answer (413) before reading the whole body, and close.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// Sends `signal` to process `pid`, which must exist.
pub fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a process id");
    rustix::process::kill_process(pid, signal).expect("the signal was sent");
}

/// A TCP port nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Makes, with `openssl`, a throwaway CA named `name` in `dir` and a certificate it signs for
/// the names `san` (`IP:127.0.0.1,DNS:localhost`): `<name>-ca.pem`, `<name>.pem` and
/// `<name>.key` (mode 0600).
pub fn certificates(openssl: &Path, dir: &Path, name: &str, san: &str) {
    use std::os::unix::fs::PermissionsExt;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    let (cert, key, csr) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=e2e test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &format!("{name}.ext"),
    ]);
    std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
}
