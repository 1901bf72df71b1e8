//! How to reach a database on a server (PostgreSQL or MySQL/MariaDB): the URL, parsed and
//! checked (the query string may say how to connect, never where or as whom), shown without
//! credentials, and connected with retries for failures that pass.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;

use super::dialect::ServerDialect;
use super::{Backend, Conn, Location, classify};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result, shown};
use crate::secrets::{self, Credentials};

/// How to reach a database on a server. Its `Debug` and `Display` never show credentials.
#[derive(Clone)]
pub(crate) enum ServerOptions {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
}

/// A client certificate's key (`sslkey`, or `PGSSLKEY` on PostgreSQL) is a secret: it is read
/// here under the secrets rules (a regular file of the user's, that group and others cannot
/// read, bounded) and handed to sqlx as bytes, so sqlx never opens a key file that someone else
/// could read or have replaced.
fn with_private_key(options: ServerOptions, url: &str, backend: Backend) -> Result<ServerOptions> {
    let in_url = url::Url::parse(url).ok().and_then(|u| {
        u.query_pairs()
            .find(|(key, _)| key == "sslkey" || key == "ssl-key")
            .map(|(_, value)| value.into_owned())
    });
    let path = match in_url {
        Some(path) => path,
        None if backend == Backend::Postgres => match std::env::var("PGSSLKEY") {
            Ok(path) => path,
            Err(_) => return Ok(options),
        },
        None => return Ok(options),
    };
    let Some(pem) = crate::secrets::read(std::path::Path::new(&path))? else {
        return Err(Error::config(format!(
            "the client certificate's key {path} (sslkey) does not exist"
        ))
        .hint("sslkey names the private key (PEM) of sslcert's certificate, a file only you can read (chmod 600)"));
    };
    let pem = crate::secrets::ExposeSecret::expose_secret(&pem).as_bytes();
    Ok(match options {
        ServerOptions::Postgres(o) => ServerOptions::Postgres(o.ssl_client_key_from_pem(pem)),
        ServerOptions::MySql(o) => ServerOptions::MySql(o.ssl_client_key_from_pem(pem)),
    })
}

/// Whether a server is reached without leaving this machine: a unix socket, `localhost` or a
/// loopback address (no name is resolved here).
fn on_this_machine(host: &str, socket: Option<&std::path::PathBuf>) -> bool {
    let host = host.trim_matches(['[', ']']);
    socket.is_some()
        || host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
        let parsed = parsed.map_err(|e| {
            Error::config(format!(
                "the {} database URL is not valid: {e}",
                backend.name()
            ))
            .hint("e.g. postgres://127.0.0.1:5432/shop or mysql://127.0.0.1:3306/shop")
        })?;
        let parsed = with_private_key(parsed, url, backend)?;
        // Without an sslmode, a server on this machine (loopback or a unix socket) is reached
        // plain: nothing crosses a wire, and TLS would add ~4 ms to every one-shot call
        // (scripts/bench-create-tls). Any other host gets the servers' own default, `prefer`.
        let asked = url.contains("sslmode=")
            || url.contains("ssl-mode=")
            || (backend == Backend::Postgres && std::env::var_os("PGSSLMODE").is_some());
        Ok(match parsed {
            ServerOptions::Postgres(o)
                if !asked && on_this_machine(o.get_host(), o.get_socket()) =>
            {
                ServerOptions::Postgres(o.ssl_mode(sqlx::postgres::PgSslMode::Disable))
            }
            ServerOptions::MySql(o) if !asked && on_this_machine(o.get_host(), o.get_socket()) => {
                ServerOptions::MySql(o.ssl_mode(sqlx::mysql::MySqlSslMode::Disabled))
            }
            other => other,
        })
    }

    /// The backend.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            ServerOptions::Postgres(_) => Backend::Postgres,
            ServerOptions::MySql(_) => Backend::MySql,
        }
    }

    /// What setup and cleanup say to this server.
    pub(crate) fn dialect(&self) -> &'static dyn ServerDialect {
        match self {
            ServerOptions::Postgres(_) => &super::postgres::Postgres,
            ServerOptions::MySql(_) => &super::mysql::MySql,
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

    /// The host and port when the server is reached over TCP (not a unix socket).
    pub(crate) fn tcp(&self) -> Option<(&str, u16)> {
        let (socket, host, port) = match self {
            ServerOptions::Postgres(o) => (o.get_socket(), o.get_host(), o.get_port()),
            ServerOptions::MySql(o) => (o.get_socket(), o.get_host(), o.get_port()),
        };
        match socket.is_some() || host.starts_with('/') {
            true => None,
            false => Some((host, port)),
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
            server.dialect().example_admin_url(),
            file.display()
        )));
    };
    // Location::parse speaks of the database URL; this one is the administrator's. (An error
    // about a file the URL names, such as its sslkey, keeps its own words.)
    let admin = Location::parse(url.expose_secret()).map_err(|e| {
        if !e.message().contains("database URL") && !e.message().contains("database_url") {
            return e;
        }
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
        Location::Server(admin) if admin.backend() == server.backend() => {
            // Without a database PostgreSQL would look for one named after the user; the
            // maintenance database is what an administrator means.
            match (admin.database(), server.dialect().maintenance_database()) {
                (None, Some(db)) => Ok(admin.with_database(db)),
                _ => Ok(*admin),
            }
        }
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

    #[test]
    fn without_sslmode_only_this_machine_is_reached_plain() {
        use sqlx::mysql::MySqlSslMode;
        use sqlx::postgres::PgSslMode;
        // PGSSLMODE would count as asking; the test environment does not set it.
        let pg = |url: &str| match ServerOptions::parse(url, Backend::Postgres).unwrap() {
            ServerOptions::Postgres(o) => o.get_ssl_mode(),
            _ => unreachable!(),
        };
        let my = |url: &str| match ServerOptions::parse(url, Backend::MySql).unwrap() {
            ServerOptions::MySql(o) => o.get_ssl_mode(),
            _ => unreachable!(),
        };
        for url in [
            "postgres://127.0.0.1:5432/shop",
            "postgres://localhost/shop",
            "postgres://[::1]:5432/shop",
            "postgres:///shop?host=/run/postgresql",
        ] {
            assert!(matches!(pg(url), PgSslMode::Disable), "{url}");
        }
        assert!(matches!(
            pg("postgres://db.internal/shop"),
            PgSslMode::Prefer
        ));
        assert!(matches!(pg("postgres://10.0.0.5/shop"), PgSslMode::Prefer));
        assert!(matches!(
            pg("postgres://127.0.0.1/shop?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            my("mysql://127.0.0.1:3306/shop"),
            MySqlSslMode::Disabled
        ));
        assert!(matches!(
            my("mysql://db.internal:3306/shop"),
            MySqlSslMode::Preferred
        ));
        assert!(matches!(
            my("mariadb://localhost/shop?ssl-mode=required"),
            MySqlSslMode::Required
        ));
    }
}
