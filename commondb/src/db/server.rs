//! Database servers: PostgreSQL and MySQL/MariaDB. Where a database is, how to connect (with
//! retries for failures that pass), and setup and cleanup with an administrator's rights.
//!
//! Setup and cleanup are written once here; what differs between the servers is SQL text in
//! [`super::dialect`]. Both run under a server-wide lock, so any number of copies started at
//! once set a database up exactly once.
//!
//! How cleanup knows what setup created: setup records it in the `_commondb_setup` table of the
//! database (`database` created or found, `role:<name>` created or found). Cleanup drops a
//! database only if it is recorded as created, a role only if recorded as created, and refuses a
//! database without that table.
//!
//! How a kill at any point is survived: before a step creates the database or a role (or gives
//! a role a password), setup writes it to its journal, the `pending` list of the app secrets
//! file, with the password; the list is emptied once `_commondb_setup` records the step. The
//! next setup takes what the journal names as its own and makes the server match the file;
//! cleanup drops it too. Cleanup drops the roles before the database, whose table names them.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;

use super::cleanup::CleanupReport;
use super::dialect::{self, Dialect, MARKER_TABLE};
use super::schema::{self, MigrationInfo, SchemaState};
use super::setup::{RoleReport, SetupReport};
use super::{Backend, Conn, Location, Migrations, Target, classify};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result, shown};
use crate::interrupt;
use crate::secrets::{self, AppSecrets, Credentials};

/// How to reach a database on a server. Its `Debug` and `Display` never show credentials.
#[derive(Clone)]
pub(crate) enum ServerOptions {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
}

impl ServerOptions {
    /// Parses a `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URL.
    /// The query string may only say how to connect, never where or as whom (see
    /// [`check_query`]).
    pub(crate) fn parse(url: &str, backend: Backend) -> Result<ServerOptions> {
        check_query(url, backend)?;
        if backend == Backend::Postgres {
            refuse_pg_environment()?;
        }
        let parsed = match backend {
            Backend::Postgres => PgConnectOptions::from_str(url).map(ServerOptions::Postgres),
            _ => {
                // sqlx knows only mysql://; MariaDB speaks the same protocol.
                let url = url
                    .strip_prefix("mariadb:")
                    .map_or(url.to_string(), |rest| format!("mysql:{rest}"));
                MySqlConnectOptions::from_str(&url).map(ServerOptions::MySql)
            }
        };
        // sqlx's messages describe the fault without repeating the URL.
        parsed.map_err(|e| {
            Error::config(format!(
                "the {} database URL is not valid: {e}",
                backend.name()
            ))
            .hint("e.g. postgres://127.0.0.1:5432/shop or mysql://127.0.0.1:3306/shop")
        })
    }

    /// The backend.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            ServerOptions::Postgres(_) => Backend::Postgres,
            ServerOptions::MySql(_) => Backend::MySql,
        }
    }

    /// The SQL dialect.
    pub(crate) fn dialect(&self) -> &'static dyn Dialect {
        match self {
            ServerOptions::Postgres(_) => &dialect::Postgres,
            ServerOptions::MySql(_) => &dialect::MySql,
        }
    }

    /// The database name, if the URL gives one.
    pub(crate) fn database(&self) -> Option<&str> {
        match self {
            ServerOptions::Postgres(o) => o.get_database(),
            ServerOptions::MySql(o) => o.get_database(),
        }
    }

    /// The user it connects as.
    pub(crate) fn user(&self) -> &str {
        match self {
            ServerOptions::Postgres(o) => o.get_username(),
            ServerOptions::MySql(o) => o.get_username(),
        }
    }

    /// `host:port`, or the unix socket's path.
    pub(crate) fn endpoint(&self) -> String {
        let (socket, host, port) = match self {
            ServerOptions::Postgres(o) => (o.get_socket(), o.get_host(), o.get_port()),
            ServerOptions::MySql(o) => (o.get_socket(), o.get_host(), o.get_port()),
        };
        match socket {
            Some(path) => path.display().to_string(),
            None => format!("{host}:{port}"),
        }
    }

    /// The database as a URL without credentials: what setup records the app's credentials for.
    pub(crate) fn display(&self) -> String {
        let scheme = match self {
            ServerOptions::Postgres(_) => "postgres",
            ServerOptions::MySql(_) => "mysql",
        };
        let db = self.database().unwrap_or("");
        let (socket, host, port) = match self {
            ServerOptions::Postgres(o) => (o.get_socket(), o.get_host(), o.get_port()),
            ServerOptions::MySql(o) => (o.get_socket(), o.get_host(), o.get_port()),
        };
        // The same spelling sqlx reads: PostgreSQL's socket directory is `host`, MySQL's socket
        // file `socket`.
        match (socket, self) {
            (Some(path), ServerOptions::Postgres(_)) => {
                format!("{scheme}:///{db}?host={}&port={port}", path.display())
            }
            (Some(path), ServerOptions::MySql(_)) => {
                format!("{scheme}:///{db}?socket={}", path.display())
            }
            (None, _) => format!("{scheme}://{host}:{port}/{db}"),
        }
    }

    /// The same server and database, as `creds`.
    pub(crate) fn with_credentials(&self, creds: &Credentials) -> ServerOptions {
        let (user, password) = (&creds.user, creds.password.expose_secret());
        match self {
            ServerOptions::Postgres(o) => {
                ServerOptions::Postgres(o.clone().username(user).password(password))
            }
            ServerOptions::MySql(o) => {
                ServerOptions::MySql(o.clone().username(user).password(password))
            }
        }
    }

    /// The same server and credentials, another database.
    pub(crate) fn with_database(&self, db: &str) -> ServerOptions {
        match self {
            ServerOptions::Postgres(o) => ServerOptions::Postgres(o.clone().database(db)),
            ServerOptions::MySql(o) => ServerOptions::MySql(o.clone().database(db)),
        }
    }

    async fn connect_once(&self) -> std::result::Result<Conn, sqlx::Error> {
        Ok(match self {
            ServerOptions::Postgres(o) => Conn::Postgres(o.connect().await?),
            ServerOptions::MySql(o) => Conn::MySql(o.connect().await?),
        })
    }

    /// Connects, retrying failures that pass (server starting up, too many connections,
    /// connection reset) with jittered exponential backoff until `connect_retry_ms` is spent.
    pub(crate) async fn connect(&self, settings: &Settings) -> Result<Conn> {
        let started = Instant::now();
        let budget = Duration::from_millis(settings.connect_retry_ms);
        let attempt_limit = Duration::from_millis(settings.connect_timeout_ms);
        let mut backoff = Duration::from_millis(10);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match tokio::time::timeout(attempt_limit, self.connect_once()).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => classify::connect_error(e, self),
                Err(_) => Error::unavailable(format!(
                    "connecting to {} timed out after {} ms",
                    self.endpoint(),
                    attempt_limit.as_millis()
                ))
                .hint("check the host and port, and that a firewall lets the connection through"),
            };
            // Equal jitter: half the backoff, plus a random part of the other half.
            let wait = backoff / 2 + backoff.mul_f64(jitter() / 2.0);
            if error.kind() != ErrorKind::Temporary || started.elapsed() + wait > budget {
                if error.kind() == ErrorKind::Temporary && attempts > 1 {
                    return Err(Error::temporary(format!(
                        "{} (gave up after {attempts} attempts in {} ms)",
                        error.message(),
                        started.elapsed().as_millis()
                    ))
                    .hint("the server is overloaded or restarting; try again, or raise connect_retry_ms"));
                }
                return Err(error);
            }
            crate::output::detail(format_args!(
                "attempt {attempts} failed ({}); retrying in {} ms",
                error.message(),
                wait.as_millis()
            ));
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// A random number in [0, 1).
fn jitter() -> f64 {
    getrandom::u64().map_or(0.5, |n| (n >> 11) as f64 / (1u64 << 53) as f64)
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerOptions({})", self.display())
    }
}

/// Whether a database URL carries a password: `scheme://user:password@…`, or a credential
/// among its query parameters (`?password=…`).
pub(crate) fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    in_userinfo
        || url::Url::parse(url).is_ok_and(|u| u.query_pairs().any(|(key, _)| is_credential(&key)))
}

/// A query parameter that carries a secret (sqlx reads `password`; libpq knows `sslpassword`
/// and `passfile` too, which sqlx would ignore).
fn is_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("passfile")
}

/// The query parameters a server URL may carry: those sqlx reads that say how to connect (TLS,
/// caches, session options), not where, to which database or as whom.
const POSTGRES_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "application_name",
    "options",
];
const MYSQL_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslca",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "charset",
    "collation",
    "timezone",
    "time-zone",
];

/// Refuses a query parameter that would carry a credential, override what the URL itself says
/// (sqlx lets `?host=`, `?hostaddr=`, `?port=`, `?dbname=` and `?user=` win over the authority
/// and path), or that sqlx would silently ignore (`?database=` on MySQL). The one exception is
/// the unix-socket form, which has no host in the URL: `postgres:///db?host=/dir&port=N` and
/// `mysql:///db?socket=/path`. Errors name the parameter, never its value.
fn check_query(url: &str, backend: Backend) -> Result<()> {
    // A URL that does not parse is sqlx's to report.
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    // Credentials first: that error's hint matters more than the others'.
    if let Some((key, _)) = parsed.query_pairs().find(|(key, _)| is_credential(key)) {
        return Err(Error::config(format!(
            "the {} database URL carries a credential in its query string ({})",
            backend.name(),
            shown(&key, 32)
        ))
        .hint("credentials belong in the secrets files, never in a URL's parameters: setup writes the app's to <secrets_dir>/<executable>.toml (see Secrets in the README)"));
    }
    let no_host = parsed.host_str().is_none_or(str::is_empty) && parsed.port().is_none();
    for (key, value) in parsed.query_pairs() {
        let accepted = match (backend, &*key) {
            (Backend::Postgres, "host") => no_host && value.starts_with('/'),
            (Backend::Postgres, "port") => no_host,
            (Backend::Postgres, key) => {
                POSTGRES_PARAMS.contains(&key) || key.starts_with("options[") && key.ends_with(']')
            }
            (_, "socket") => no_host,
            (_, key) => MYSQL_PARAMS.contains(&key),
        };
        if !accepted {
            let socket = match backend {
                Backend::Postgres => "postgres:///DB?host=/SOCKET/DIR&port=PORT",
                _ => "mysql:///DB?socket=/SOCKET/FILE",
            };
            let params = match backend {
                Backend::Postgres => POSTGRES_PARAMS,
                _ => MYSQL_PARAMS,
            };
            return Err(Error::config(format!(
                "the {} database URL's parameter {} is not accepted: it would override the URL's host, port, user or database, or it would be ignored",
                backend.name(),
                shown(&key, 32)
            ))
            .hint(format!(
                "say host, port, user and database in the URL itself (scheme://user@host:port/database), or use the unix-socket form {socket}; other parameters accepted: {}",
                params.join(", ")
            )));
        }
    }
    Ok(())
}

/// The validated names setup and cleanup work with.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub database: String,
    pub app: String,
    pub backup: String,
}

impl Names {
    pub(crate) fn new(server: &ServerOptions, settings: &Settings) -> Result<Names> {
        let database = server.database().ok_or_else(|| {
            Error::config("the database URL names no database")
                .hint("end it with the database's name, e.g. postgres://127.0.0.1:5432/shop")
        })?;
        schema::quote_identifier(database)?;
        let app = settings
            .app_role
            .clone()
            .unwrap_or_else(|| format!("{database}_app"));
        let backup = settings
            .backup_role
            .clone()
            .unwrap_or_else(|| format!("{database}_backup"));
        let max = server.dialect().max_role_len();
        for role in [&app, &backup] {
            schema::quote_identifier(role)?;
            if role.len() > max {
                return Err(Error::config(format!(
                    "role name {role} is longer than {} allows ({max} characters)",
                    server.backend().name()
                ))
                .hint(
                    "set app_role and backup_role to shorter names, or use a shorter database name",
                ));
            }
        }
        if app == backup {
            return Err(
                Error::config(format!("app_role and backup_role are both {app}"))
                    .hint("the backup role must be a different, read-only role"),
            );
        }
        Ok(Names {
            database: database.to_string(),
            app,
            backup,
        })
    }
}

/// The administrator's connection options, from `COMMONDB_ADMIN_URL` or the admin secrets file.
pub(crate) fn admin_options(settings: &Settings, server: &ServerOptions) -> Result<ServerOptions> {
    let file = secrets::admin_file(settings);
    let Some(url) = secrets::admin_url(settings)? else {
        return Err(Error::config(format!(
            "setup and cleanup on {} need the administrator's credentials",
            server.backend().name()
        ))
        .hint(format!(
            "set {} (e.g. {}) or write url = \"…\" to {} (chmod 600)",
            secrets::ADMIN_URL_VAR,
            match server.backend() {
                Backend::Postgres => "postgres://postgres@127.0.0.1:5432/postgres",
                _ => "mysql://root@127.0.0.1:3306/",
            },
            file.display()
        )));
    };
    // Location::parse speaks of the database URL; this one is the administrator's.
    let admin = Location::parse(url.expose_secret()).map_err(|e| {
        Error::config(
            e.message()
                .replacen("database URL", "administrator's URL", 1)
                .replacen("database_url", "the administrator's URL", 1),
        )
        .hint(format!(
            "fix {} or the url in {} (chmod 600), e.g. postgres://postgres@127.0.0.1:5432/postgres",
            secrets::ADMIN_URL_VAR,
            file.display()
        ))
    })?;
    match admin {
        // Without a database PostgreSQL would look for one named after the user; the
        // maintenance database is what an administrator means.
        Location::Server(admin)
            if admin.backend() == Backend::Postgres
                && admin.database().is_none()
                && server.backend() == Backend::Postgres =>
        {
            Ok(admin.with_database("postgres"))
        }
        Location::Server(admin) if admin.backend() == server.backend() => Ok(*admin),
        other => Err(Error::config(format!(
            "the administrator's URL is for {}, but the database is on {}",
            other.backend().name(),
            server.backend().name()
        ))
        .hint(format!(
            "check {} or {}",
            secrets::ADMIN_URL_VAR,
            file.display()
        ))),
    }
}

/// The server-wide setup lock, taken by polling so that `lock_timeout_ms` is honoured.
async fn lock(admin: &mut Conn, dialect: &dyn Dialect, settings: &Settings) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(settings.lock_timeout_ms);
    loop {
        if admin.scalar(dialect.try_lock()).await? == 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::temporary(format!(
                "another setup or cleanup kept the server's setup lock for over {} ms",
                settings.lock_timeout_ms
            ))
            .hint("wait for it to finish, or raise lock_timeout_ms"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `work` with an administrator's connection to the server, under the setup lock.
async fn as_admin<T>(
    target: &Target,
    server: &ServerOptions,
    work: impl AsyncFnOnce(&mut Conn, &ServerOptions) -> Result<T>,
) -> Result<T> {
    let settings = &target.settings;
    let admin_options = admin_options(settings, server)?;
    let dialect = server.dialect();
    let mut admin = admin_options.connect(settings).await?;
    lock(&mut admin, dialect, settings).await?;
    let result = work(&mut admin, &admin_options).await;
    // Ending the session releases the lock too; unlocking first is only tidier.
    let _ = admin.scalar(dialect.unlock()).await;
    let _ = admin.close().await;
    result
}

/// Runs `work` with an administrator's connection to the task's own database, under the setup
/// lock (restore replaces every row and resets sequences, which the app role may not).
pub(crate) async fn as_admin_on_database<T>(
    target: &Target,
    server: &ServerOptions,
    work: impl AsyncFnOnce(&mut Conn) -> Result<T>,
) -> Result<T> {
    let names = Names::new(server, &target.settings)?;
    as_admin(target, server, async |_, admin_options| {
        let mut db = admin_options
            .with_database(&names.database)
            .connect(&target.settings)
            .await?;
        let result = work(&mut db).await;
        let _ = db.close().await;
        result
    })
    .await
}

/// `--self-setup` on a server.
pub(crate) async fn setup(
    target: &Target,
    server: &ServerOptions,
    migrations: &Migrations,
) -> Result<SetupReport> {
    let names = Names::new(server, &target.settings)?;
    as_admin(target, server, async |admin, admin_options| {
        setup_locked(target, server, &names, admin, admin_options, migrations).await
    })
    .await
}

async fn setup_locked(
    target: &Target,
    server: &ServerOptions,
    names: &Names,
    admin: &mut Conn,
    admin_options: &ServerOptions,
    migrations: &Migrations,
) -> Result<SetupReport> {
    let settings = &target.settings;
    let d = server.dialect();
    let db_q = d.quote(&names.database);
    let display = server.display();
    let mut journal = Journal::open(secrets::app_file(settings, target.exe), &display)?;

    interrupt::check()?;
    let created = admin
        .count_named(d.database_exists(), &names.database)
        .await?
        == 0;
    if created {
        journal.begin("database")?;
        if let Err(e) = admin.exec(d.create_database(&db_q)).await {
            // Not ours after all (made meanwhile by someone else, or refused): say so.
            journal.forget("database")?;
            return Err(e);
        }
    }
    let mut db = admin_options
        .with_database(&names.database)
        .connect(settings)
        .await?;
    db.exec(d.marker_table().to_string()).await?;
    // A database the journal names was created by a setup interrupted before it could say so.
    db.exec(d.mark("database", created || journal.is_pending("database")))
        .await?;
    let ours = db.marker("database").await? == Some(true);

    let app = ensure_role(admin, &mut db, d, &names.app, false, &mut journal).await?;
    let backup = ensure_role(admin, &mut db, d, &names.backup, true, &mut journal).await?;

    interrupt::check()?;
    let applied: Vec<MigrationInfo> = schema::migrate(&mut db, migrations).await?;
    let tables: Vec<String> = db
        .strings(d.tables())
        .await?
        .into_iter()
        .filter(|t| t != MARKER_TABLE && t != "_sqlx_migrations")
        .map(|t| schema::quote_identifier(&t).map(|_| d.quote(&t)))
        .collect::<Result<_>>()?;
    for grant in d.grants(
        &db_q,
        &tables,
        &d.quote(&names.app),
        &d.quote(&names.backup),
        ours,
    ) {
        db.exec(grant).await?;
    }
    let SchemaState::Current { version } = schema::check(&mut db, migrations).await? else {
        return Err(Error::internal(
            "after applying the migrations the schema still differs from this program's",
        ));
    };
    db.close().await?;
    // Everything is recorded in the database now: the journal is done.
    journal.finish()?;
    Ok(SetupReport {
        backend: server.backend(),
        database: display,
        created,
        applied,
        schema_version: version,
        secrets_dir: settings.secrets_dir.clone(),
        roles: vec![app, backup],
        secrets_file: Some(journal.file),
        secrets_written: journal.written,
    })
}

/// Setup's journal, kept in the app secrets file beside the credentials it is about: each step
/// that creates or changes something on the server is written down (with the password it will
/// set) before it acts, and the list is emptied once the database records everything. A setup
/// killed between two statements thus leaves a file saying what may exist and is ours.
struct Journal {
    file: std::path::PathBuf,
    secrets: AppSecrets,
    /// Whether the file on disk is missing or holds another database's credentials.
    stale: bool,
    /// Whether this run wrote the file.
    written: bool,
}

impl Journal {
    /// The journal for `database`; credentials recorded for another database are of no use
    /// here (setup replaces them, as it always has), a `serve_token` is kept.
    fn open(file: std::path::PathBuf, database: &str) -> Result<Journal> {
        let mut secrets = secrets::load::<AppSecrets>(&file)?.unwrap_or_default();
        let stale = secrets.database.as_deref() != Some(database);
        if stale {
            secrets = AppSecrets {
                database: Some(database.to_string()),
                serve_token: secrets.serve_token.take(),
                ..AppSecrets::default()
            };
        }
        Ok(Journal {
            file,
            secrets,
            stale,
            written: false,
        })
    }

    fn is_pending(&self, item: &str) -> bool {
        self.secrets.is_pending(item)
    }

    fn save(&mut self) -> Result<()> {
        secrets::write(&self.file, &self.secrets.to_toml())?;
        self.written = true;
        Ok(())
    }

    /// Writes down that `item` is about to be created or changed.
    fn begin(&mut self, item: &str) -> Result<()> {
        if !self.is_pending(item) {
            self.secrets.pending.push(item.to_string());
        }
        self.save()
    }

    /// Takes `item` off the list (it was not created after all).
    fn forget(&mut self, item: &str) -> Result<()> {
        self.secrets.pending.retain(|p| p != item);
        self.save()
    }

    /// Empties the list; writes the file if anything is to change in it (what is on disk is
    /// what `open` read, or what `save` last wrote).
    fn finish(&mut self) -> Result<()> {
        let changes = self.stale || !self.secrets.pending.is_empty();
        self.secrets.pending.clear();
        if changes {
            self.stale = false;
            self.save()?;
        }
        Ok(())
    }
}

/// Makes sure login role `name` exists, is marked as ours if setup made it, and has the
/// password the secrets file holds. The file's password is written (with the role on the
/// journal) before the server is told it, so no kill can leave a role whose password no one
/// knows.
async fn ensure_role(
    admin: &mut Conn,
    db: &mut Conn,
    d: &dyn Dialect,
    name: &str,
    backup: bool,
    journal: &mut Journal,
) -> Result<RoleReport> {
    interrupt::check()?;
    let quoted = d.quote(name);
    let item = format!("role:{name}");
    let exists = admin.count_named(d.role_exists(), name).await? > 0;
    let database = journal.secrets.database.clone().unwrap_or_default();
    let known = journal
        .secrets
        .for_role(&database, name, backup)
        .map(|c| c.password.clone());
    let report = RoleReport {
        name: name.to_string(),
        created: !exists,
    };
    if exists && !journal.is_pending(&item) {
        db.exec(d.mark(&item, false)).await?;
        if known.is_some() {
            return Ok(report);
        }
        // The role is there but its password is not in the secrets file: if setup made the
        // role, it may give it a new one; a role someone else made is not ours to change.
        if db.marker(&item).await? != Some(true) {
            return Err(Error::config(format!(
                "role {name} already exists, setup did not create it, and its password is not in {}",
                journal.file.display()
            ))
            .hint("write its user and password to that file ([app] or [backup] table), or set app_role / backup_role to a new name"));
        }
    }
    // From here the file's password is the one the server must have: record it first.
    let password = match known {
        Some(p) => p,
        None => dialect::generate_password()?,
    };
    let creds = Some(Credentials {
        user: name.to_string(),
        password: password.clone(),
    });
    if backup {
        journal.secrets.backup = creds;
    } else {
        journal.secrets.app = creds;
    }
    journal.begin(&item)?;
    let verifier = d.verifier(&password)?;
    if exists {
        admin.exec(d.set_password(&quoted, &verifier)).await?;
    } else {
        admin.exec(d.create_role(&quoted, &verifier)).await?;
    }
    // On the journal means setup made it (or was giving its own role a new password).
    db.exec(d.mark(&item, true)).await?;
    Ok(report)
}

/// `--self-cleanup` on a server: drops what setup recorded as created, and nothing else.
pub(crate) async fn cleanup(target: &Target, server: &ServerOptions) -> Result<CleanupReport> {
    let names = Names::new(server, &target.settings)?;
    let secrets_file = secrets::app_file(&target.settings, target.exe);
    let display = server.display();
    let known = secrets::load::<AppSecrets>(&secrets_file)?
        .filter(|k| k.database.as_deref() == Some(&display))
        .unwrap_or_default();
    let mut report = as_admin(target, server, async |admin, admin_options| {
        cleanup_locked(target, server, &names, &known, admin, admin_options).await
    })
    .await?;
    // The app's credentials for this database are of no use once its roles are gone.
    interrupt::check()?;
    if known.database.is_some() && std::fs::remove_file(&secrets_file).is_ok() {
        report.removed.push(secrets_file);
    }
    Ok(report)
}

/// Drops the roles first and the database last: while the database stands, its
/// `_commondb_setup` table still says which roles are ours, so a cleanup killed at any point is
/// finished by the next one.
async fn cleanup_locked(
    target: &Target,
    server: &ServerOptions,
    names: &Names,
    journal: &AppSecrets,
    admin: &mut Conn,
    admin_options: &ServerOptions,
) -> Result<CleanupReport> {
    let d = server.dialect();
    let mut report = CleanupReport {
        backend: server.backend(),
        database: server.display(),
        removed: Vec::new(),
        dropped: Vec::new(),
        kept: Vec::new(),
    };
    let db_exists = admin
        .count_named(d.database_exists(), &names.database)
        .await?
        > 0;
    let items = [
        "database".to_string(),
        format!("role:{}", names.app),
        format!("role:{}", names.backup),
    ];
    let mut db = None;
    // What _commondb_setup records as created.
    let mut recorded = Vec::new();
    if db_exists {
        let mut conn = admin_options
            .with_database(&names.database)
            .connect(&target.settings)
            .await?;
        if schema::table_exists(&mut conn, MARKER_TABLE).await? {
            for item in &items {
                if conn.marker(item).await? == Some(true) {
                    recorded.push(item.as_str());
                }
            }
        } else if !journal.is_pending("database") {
            let _ = conn.close().await;
            return Err(Error::config(format!(
                "database {} was not set up by commondb (it has no {MARKER_TABLE} table), so cleanup leaves it alone",
                names.database
            ))
            .hint("check database_url; cleanup drops only what --self-setup created"));
        }
        db = Some(conn);
    }
    // Ours: recorded as created in the database, or on the journal of an interrupted setup.
    let ours = |item: &str| journal.is_pending(item) || recorded.contains(&item);
    let database_ours = db_exists && ours("database");
    for role in [&names.app, &names.backup] {
        interrupt::check()?;
        let item = format!("role:{role}");
        if !ours(&item) {
            report
                .kept
                .push(format!("role {role} (setup did not create it)"));
            continue;
        }
        if admin.count_named(d.role_exists(), role).await? == 0 {
            continue;
        }
        if let (Some(conn), Some(revoke)) = (db.as_mut(), d.revoke_in_database(&d.quote(role))) {
            // What the role was granted in the database must go before the role can.
            conn.exec(revoke).await?;
        }
        admin.exec(d.drop_role(&d.quote(role))).await?;
        report.dropped.push(format!("role {role}"));
    }
    if let Some(conn) = db {
        conn.close().await?;
    }
    interrupt::check()?;
    if database_ours {
        drop_database(admin, d, &names.database).await?;
        report.dropped.push(format!("database {}", names.database));
    } else if db_exists {
        report.kept.push(format!(
            "database {} (setup did not create it)",
            names.database
        ));
    }
    Ok(report)
}

async fn drop_database(admin: &mut Conn, d: &dyn Dialect, name: &str) -> Result<()> {
    if let Some(sessions) = d.other_sessions() {
        for id in admin.ids_named(sessions, name).await? {
            // A session may end by itself meanwhile; that is what we want anyway.
            let _ = admin.exec(d.kill_session(id)).await;
        }
    }
    admin.exec(d.drop_database(&d.quote(name))).await
}

/// Drops a scratch database and roles whatever their records say: the self-test made them, with
/// names no one else uses.
pub(crate) async fn drop_scratch(target: &Target, server: &ServerOptions) -> Result<()> {
    let names = Names::new(server, &target.settings)?;
    as_admin(target, server, async |admin, _| {
        let d = server.dialect();
        drop_database(admin, d, &names.database).await?;
        for role in [&names.app, &names.backup] {
            admin.exec(d.drop_role(&d.quote(role))).await?;
        }
        Ok(())
    })
    .await
}

/// Whether the database and the roles of `target` exist on the server (self-test checks).
pub(crate) async fn leftovers(target: &Target, server: &ServerOptions) -> Result<Vec<String>> {
    let names = Names::new(server, &target.settings)?;
    let admin_options = admin_options(&target.settings, server)?;
    let mut admin = admin_options.connect(&target.settings).await?;
    let d = server.dialect();
    let mut left = Vec::new();
    if admin
        .count_named(d.database_exists(), &names.database)
        .await?
        > 0
    {
        left.push(format!("database {}", names.database));
    }
    for role in [&names.app, &names.backup] {
        if admin.count_named(d.role_exists(), role).await? > 0 {
            left.push(format!("role {role}"));
        }
    }
    admin.close().await?;
    Ok(left)
}

/// The options the task connects with: the app role's (or the backup role's), from the app
/// secrets file as read when the target was resolved, or as it is now if setup has written it
/// since (the self-test sets up and runs tasks in one process).
pub(crate) fn app_options(
    target: &Target,
    server: &ServerOptions,
    backup: bool,
) -> Result<ServerOptions> {
    if target.secrets.database_url.is_some() {
        // A whole URL written by hand into the secrets file carries its own credentials.
        return Ok(server.clone());
    }
    let names = Names::new(server, &target.settings)?;
    let role = if backup { &names.backup } else { &names.app };
    let display = server.display();
    if let Some(creds) = target.secrets.for_role(&display, role, backup) {
        return Ok(server.with_credentials(creds));
    }
    let file = secrets::app_file(&target.settings, target.exe);
    let now = secrets::load::<AppSecrets>(&file)?.unwrap_or_default();
    match now.for_role(&display, role, backup) {
        Some(creds) => Ok(server.with_credentials(creds)),
        None => Err(Error::config(format!(
            "no credentials for role {role} on {display} in {}",
            file.display()
        ))
        .hint("run --self-setup with the administrator's credentials (COMMONDB_ADMIN_URL); it creates the role and writes them")),
    }
}

/// Refuses the libpq variables that sqlx would read behind the URL's back: `PGPASSWORD` puts a
/// password in the environment (every process of the user can read it, and so can
/// `/proc/PID/environ` readers of the same user), against the rule that secrets come only from
/// owner-only files (`~/.pgpass` stays allowed: sqlx refuses one that group or others can
/// read); `PGOPTIONS` would change every session's settings (a `search_path`, say) and so what
/// the task's SQL means.
fn refuse_pg_environment() -> Result<()> {
    for (name, why) in [
        (
            "PGPASSWORD",
            "a password in the environment; commondb reads passwords only from owner-only files",
        ),
        (
            "PGOPTIONS",
            "session options for every connection, which would change what the task's SQL means",
        ),
    ] {
        if std::env::var_os(name).is_some() {
            return Err(Error::config(format!("{name} is set: {why}")).hint(format!(
                "unset {name}; put the password in the secrets files (or ~/.pgpass, mode 0600)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_spotted() {
        assert!(url_has_password("postgres://u:pw@h/d"));
        assert!(url_has_password("mysql://u:p%40w@h:3306/d?x=y"));
        assert!(url_has_password("postgres://127.0.0.1/shop?password=x"));
        assert!(url_has_password("postgres://h/d?user=u&pass%77ord=x"));
        assert!(url_has_password("postgres://h/d?sslpassword=x"));
        assert!(url_has_password("mysql://h/d?PASSWORD="));
        assert!(!url_has_password("postgres://u@h/d"));
        assert!(!url_has_password("postgres://h:5432/d"));
        assert!(!url_has_password("postgres:///d?host=/run/postgresql"));
    }

    #[test]
    fn query_parameters_carry_no_credentials_and_override_nothing() {
        let refused = |url: &str, backend| {
            let e = ServerOptions::parse(url, backend).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{url}");
            assert!(!e.message().contains("hunter2"), "{}", e.message());
            e.message().to_string()
        };
        for url in [
            "postgres://127.0.0.1/shop?password=hunter2",
            "postgres://127.0.0.1/shop?user=u&password=hunter2",
            "postgres://127.0.0.1/shop?sslpassword=hunter2",
            "postgres://127.0.0.1/shop?passfile=hunter2",
        ] {
            assert!(
                refused(url, Backend::Postgres).contains("credential"),
                "{url}"
            );
        }
        assert!(refused("mysql://h/shop?password=hunter2", Backend::MySql).contains("credential"));
        for (url, key) in [
            ("postgres://127.0.0.1/shop?host=evil", "host"),
            ("postgres://127.0.0.1/shop?host=/tmp", "host"),
            ("postgres:///shop?host=evil", "host"),
            ("postgres://127.0.0.1/shop?hostaddr=10.0.0.1", "hostaddr"),
            ("postgres://127.0.0.1:5432/shop?port=1", "port"),
            ("postgres://127.0.0.1/shop?dbname=other", "dbname"),
            ("postgres://127.0.0.1/shop?user=postgres", "user"),
            ("postgres://127.0.0.1/shop?bogus=1", "bogus"),
            ("mysql://127.0.0.1/shop?socket=/tmp/s", "socket"),
            ("mysql://127.0.0.1/shop?database=other", "database"),
            ("mysql://127.0.0.1/shop?user=root", "user"),
            ("mariadb://127.0.0.1/shop?host=evil", "host"),
        ] {
            let backend = if url.starts_with("postgres") {
                Backend::Postgres
            } else {
                Backend::MySql
            };
            assert!(refused(url, backend).contains(key), "{url}");
        }
        // The unix-socket forms display() writes, and how-to-connect parameters, pass.
        for (url, backend) in [
            (
                "postgres:///shop?host=/run/postgresql&port=5432",
                Backend::Postgres,
            ),
            (
                "postgres:///shop?host=%2Frun%2Fpostgresql",
                Backend::Postgres,
            ),
            (
                "postgres://127.0.0.1:5432/shop?sslmode=disable&application_name=x&options[search_path]=a",
                Backend::Postgres,
            ),
            (
                "mysql:///shop?socket=/run/mysqld/mysqld.sock",
                Backend::MySql,
            ),
            (
                "mysql://127.0.0.1:3306/shop?charset=utf8mb4&ssl-mode=disabled",
                Backend::MySql,
            ),
        ] {
            let o = ServerOptions::parse(url, backend).unwrap();
            assert_eq!(
                ServerOptions::parse(&o.display(), backend)
                    .unwrap()
                    .display(),
                o.display()
            );
        }
    }

    #[test]
    fn names_default_from_the_database_and_are_validated() {
        let settings = crate::testing::settings_in(std::path::Path::new("/tmp"));
        let pg = ServerOptions::parse("postgres://127.0.0.1:5432/shop", Backend::Postgres).unwrap();
        let n = Names::new(&pg, &settings).unwrap();
        assert_eq!(
            (n.database.as_str(), n.app.as_str(), n.backup.as_str()),
            ("shop", "shop_app", "shop_backup")
        );
        let bad = ServerOptions::parse("postgres://127.0.0.1:5432/shop%3Bdrop", Backend::Postgres)
            .unwrap();
        assert_eq!(
            Names::new(&bad, &settings).unwrap_err().kind(),
            ErrorKind::Config
        );
        let mut long = settings.clone();
        long.app_role = Some("a".repeat(40));
        let my = ServerOptions::parse("mysql://127.0.0.1:3306/shop", Backend::MySql).unwrap();
        assert!(Names::new(&my, &long).unwrap_err().message().contains("32"));
        let none = ServerOptions::parse("mysql://127.0.0.1:3306/", Backend::MySql).unwrap();
        assert!(Names::new(&none, &settings).is_err());
    }

    #[test]
    fn display_and_debug_never_show_credentials() {
        let o = ServerOptions::parse(
            "postgres://u:hunter2@127.0.0.1:5432/shop",
            Backend::Postgres,
        )
        .unwrap();
        assert_eq!(o.display(), "postgres://127.0.0.1:5432/shop");
        assert!(!format!("{o:?}").contains("hunter2"));
        let s = ServerOptions::parse("mariadb://root@127.0.0.1:3306/shop", Backend::MySql).unwrap();
        assert_eq!(s.display(), "mysql://127.0.0.1:3306/shop");
    }
}
