//! How database errors become [`Error`]s: by what the user can do about them.
//!
//! SQLite reports result codes, PostgreSQL SQLSTATE codes, MySQL/MariaDB error numbers; each is
//! mapped to a kind (and so an exit code) and a hint. Messages never repeat a URL or password.

use sqlx::error::{DatabaseError, ErrorKind as DbKind};
use sqlx::mysql::MySqlDatabaseError;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

use super::Backend;
use super::options::ServerOptions;
use crate::error::{Error, ErrorKind};

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) => database_error(db.as_ref()),
            sqlx::Error::Io(e) => {
                Error::unavailable(format!("the connection to the database failed: {e}"))
                    .hint("check that the database is running and reachable, then try again")
            }
            sqlx::Error::Configuration(e) => {
                Error::config(format!("the database settings are not valid: {e}"))
            }
            sqlx::Error::PoolTimedOut => {
                Error::temporary("no database connection became free in time")
                    .hint("the database is overloaded; try again")
            }
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Error::unavailable(format!("the database connection was lost: {e}"))
                    .hint("try again")
            }
            other => Error::internal(format!(
                "the database returned something this program does not expect: {other}"
            ))
            .hint("check that the schema matches this version (--self-status)"),
        }
    }
}

/// An error the database reported for a statement.
fn database_error(db: &(dyn DatabaseError + 'static)) -> Error {
    let msg = db.message().to_string();
    match db.kind() {
        DbKind::UniqueViolation => {
            return Error::conflict(format!("a record with the same key already exists ({msg})"))
                .hint("nothing was written; use a different value");
        }
        DbKind::ForeignKeyViolation | DbKind::NotNullViolation | DbKind::CheckViolation => {
            return Error::invalid_input(format!("the database refused the data: {msg}"))
                .hint("nothing was written; correct the request");
        }
        _ => {}
    }
    let kind = if let Some(e) = db.try_downcast_ref::<SqliteError>() {
        sqlite_kind(e.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0) & 0xff)
    } else if let Some(e) = db.try_downcast_ref::<PgDatabaseError>() {
        postgres_kind(e.code())
    } else if let Some(e) = db.try_downcast_ref::<MySqlDatabaseError>() {
        mysql_kind(e.number())
    } else {
        None
    };
    let Some((kind, what, hint)) = kind else {
        return Error::internal(format!("the database reported an error: {msg}"));
    };
    Error::new(kind, format!("{what}: {msg}")).hint(hint)
}

type Class = Option<(ErrorKind, &'static str, &'static str)>;

const BUSY: Class = Some((
    ErrorKind::Temporary,
    "the database is busy",
    "another process held a lock too long; try again, or raise busy_timeout_ms",
));
const NOT_ALLOWED: Class = Some((
    ErrorKind::Permission,
    "the database refused the statement",
    "the role lacks the privilege; the app role may only read and write the task's tables",
));
const NOT_SET_UP: Class = Some((
    ErrorKind::Config,
    "the database lacks a table this program needs",
    "run --self-setup to create the schema",
));
const REFUSED: Class = Some((
    ErrorKind::InvalidInput,
    "the database refused the data",
    "nothing was written; correct the value it names",
));
const DAMAGED: Class = Some((
    ErrorKind::Internal,
    "the database file is damaged or is not a database",
    "restore it from a backup, or remove it with --self-cleanup and set up again",
));

fn sqlite_kind(primary: i64) -> Class {
    match primary {
        5 | 6 => BUSY,
        8 => Some((
            ErrorKind::Permission,
            "the database cannot be written",
            "check the owner and mode of the database file and its directory",
        )),
        10 | 14 => Some((
            ErrorKind::Unavailable,
            "the database file cannot be read or written",
            "check that the file and its directory exist and are yours",
        )),
        11 | 26 => DAMAGED,
        // Too big, a datatype mismatch (a non-integer key), out of range.
        18 | 20 | 25 => REFUSED,
        13 => Some((
            ErrorKind::Temporary,
            "the disk is full",
            "free some space and try again",
        )),
        _ => None,
    }
}

fn postgres_kind(sqlstate: &str) -> Class {
    match sqlstate {
        "40001" | "40P01" | "55P03" | "57014" => Some((
            ErrorKind::Temporary,
            "the transaction could not complete now",
            "it was rolled back; try again",
        )),
        "42501" => NOT_ALLOWED,
        // Data exceptions (a value out of range, a NUL in text, a bad encoding), integrity
        // violations the kinds above did not name, and an exhausted sequence.
        s if s.starts_with("22") || s.starts_with("23") => REFUSED,
        "42P01" => NOT_SET_UP,
        "53100" | "53200" | "53300" => Some((
            ErrorKind::Temporary,
            "the server is out of resources",
            "try again later",
        )),
        s if s.starts_with("08") || s.starts_with("57P") => Some((
            ErrorKind::Unavailable,
            "the server ended the connection",
            "check that the server is running, then try again",
        )),
        _ => None,
    }
}

fn mysql_kind(number: u16) -> Class {
    match number {
        1205 | 1213 => Some((
            ErrorKind::Temporary,
            "the transaction could not complete now",
            "it was rolled back; try again",
        )),
        1044 | 1142 | 1143 | 1227 => NOT_ALLOWED,
        // A missing value, out of range, truncated, a bad date, a wrong value, too long,
        // a missing parent row.
        1048 | 1264 | 1265 | 1292 | 1366 | 1406 | 1452 => REFUSED,
        1146 => NOT_SET_UP,
        1040 | 1203 => Some((
            ErrorKind::Temporary,
            "the server has too many connections",
            "try again later",
        )),
        _ => None,
    }
}

/// A database's refusal of a backup's rows during a restore, reported as the backup's fault
/// (exit 65) with the table, the row where it is known (given, or read from PostgreSQL's
/// `COPY …, line N`) and the database's own words. Any other failure is classified as usual.
pub(crate) fn refused_rows(e: sqlx::Error, table: &str, row: Option<u64>) -> Error {
    let (said, row) = match &e {
        sqlx::Error::Database(db) => {
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            let detail = pg
                .and_then(PgDatabaseError::detail)
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let line = || {
                let at = pg?.r#where()?;
                let rest = at.split(", line ").nth(1)?;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            };
            (format!("{}{detail}", db.message()), row.or_else(line))
        }
        _ => return e.into(),
    };
    let error = Error::from(e);
    if !matches!(error.kind(), ErrorKind::InvalidInput | ErrorKind::Conflict) {
        return error;
    }
    let at = match row {
        Some(row) => format!("row {row} of table {table}"),
        None => format!("the rows of table {table}"),
    };
    Error::invalid_input(format!(
        "the database refused {at} in the backup: {said}; nothing was changed"
    ))
    .hint("the backup holds rows this schema refuses (a duplicate key, a missing value, a value out of range); correct them where the backup was taken and take it again, or restore it where they fit")
}

/// A TLS handshake with `server` that failed, with what to check (in the server's own
/// parameter names: `sslmode`/`sslrootcert` on PostgreSQL, `ssl-mode`/`ssl-ca` on MySQL).
fn tls_error(server: &ServerOptions, text: &str) -> Error {
    let (mode, ca, by_ca) = match server.backend() {
        Backend::Postgres => ("sslmode", "sslrootcert", "sslmode=verify-ca"),
        _ => ("ssl-mode", "ssl-ca", "ssl-mode=verify_ca"),
    };
    let hint = if text.contains("NotValidForName") || text.contains("not valid for name") {
        format!(
            "the server's certificate does not carry the host name in database_url: connect by a name it carries, or use {by_ca} (the CA checked, not the name)"
        )
    } else if text.contains("certificate") {
        format!(
            "the server's certificate is not signed by the CA in {ca} (or the system's roots): point {ca} at the CA file that signed it"
        )
    } else {
        format!("check {mode} and {ca} in database_url")
    };
    Error::unavailable(format!(
        "the TLS handshake with {} failed: {text}",
        server.endpoint()
    ))
    .hint(hint)
}

/// Classifies a failure to connect to `server`: transient ones come back as
/// [`ErrorKind::Temporary`] (and are retried by the caller).
pub(crate) fn connect_error(e: sqlx::Error, server: &ServerOptions) -> Error {
    let endpoint = server.endpoint();
    let user = server.user();
    let database = server.database().unwrap_or("");
    match &e {
        sqlx::Error::Io(io) => {
            use std::io::ErrorKind as Io;
            match io.kind() {
                Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::UnexpectedEof
                | Io::BrokenPipe => {
                    Error::temporary(format!("the connection to {endpoint} was reset: {io}"))
                }
                Io::ConnectionRefused => {
                    Error::unavailable(format!("cannot connect to {endpoint}: connection refused"))
                        .hint("check that the server is running and listening there")
                }
                // rustls's refusals come through sqlx as I/O errors.
                _ if io.to_string().contains("certificate") => tls_error(server, &io.to_string()),
                _ => Error::unavailable(format!("cannot connect to {endpoint}: {io}"))
                    .hint("check the host name and port in database_url"),
            }
        }
        sqlx::Error::Database(db) => {
            let msg = db.message();
            let pg = db
                .try_downcast_ref::<PgDatabaseError>()
                .map(|e| e.code().to_string());
            let my = db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(|e| e.number());
            match (pg.as_deref(), my) {
                (Some("28P01" | "28000"), _) | (_, Some(1045 | 1044 | 1698)) => Error::permission(format!(
                    "{endpoint} refused the credentials of {user}: {msg}"
                ))
                .hint("check the user and password: the app's are in the app secrets file (written by --self-setup), the administrator's in COMMONDB_ADMIN_URL or admin.toml"),
                (Some("3D000"), _) | (_, Some(1049)) => Error::config(format!(
                    "database {database} does not exist on {endpoint}"
                ))
                .hint("run --self-setup with the administrator's credentials to create it"),
                (Some("53300" | "57P03" | "53100" | "53200"), _) | (_, Some(1040 | 1203)) => {
                    Error::temporary(format!("{endpoint} cannot take the connection now: {msg}"))
                }
                _ => Error::from(e),
            }
        }
        sqlx::Error::Tls(t) => tls_error(server, &t.to_string()),
        _ => Error::from(e),
    }
}
