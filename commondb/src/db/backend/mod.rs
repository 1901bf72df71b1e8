//! The backend seam: the one place that knows which database it talks to.
//!
//! Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB lives here and nowhere
//! else: connect options and session settings ([`options`], `sqlite.rs`), the SQL text of
//! transactions, snapshots, emptying tables, catalog queries and setup ([`Dialect`],
//! [`ServerDialect`], one implementation per backend in `sqlite.rs`, `postgres.rs`,
//! `mysql.rs`), identifier quoting and checking ([`Backend::quote`], [`check_identifier`]),
//! placeholders, the connection and the task's transaction ([`Conn`], [`Tx`]), rows for
//! backups ([`rows`]), error classification ([`classify`]), and whether the database is an
//! embedded file or a server with roles ([`Location`]). Code outside this directory asks these
//! types; it never matches on which backend it has (`scripts/backend-branches` counts, and
//! finds none).

pub(crate) mod certificate;
pub(crate) mod classify;
mod conn;
mod dialect;
mod location;
pub(crate) mod mysql;
pub(crate) mod options;
pub(crate) mod postgres;
pub(crate) mod rows;
pub(crate) mod sqlite;
mod tx;

use serde::{Deserialize, Serialize};

pub(crate) use conn::{Conn, on_conn};
pub(crate) use dialect::{Dialect, MARKER_TABLE, ServerDialect, generate_password, random_bytes};
pub(crate) use location::{Kind as LocationKind, Location};
pub(crate) use options::ServerOptions;
pub(crate) use tx::Begin;
pub use tx::{Param, Params, Record, Tx};

use crate::error::{Error, Result};

/// Which kind of database a task runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded default: a file on this machine.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
    /// A MySQL or MariaDB server.
    #[serde(rename = "mysql")]
    MySql,
}

impl Backend {
    /// What differs about this backend, as SQL text and as choices.
    pub(crate) fn dialect(self) -> &'static dyn Dialect {
        match self {
            Backend::Sqlite => &sqlite::Sqlite,
            Backend::Postgres => &postgres::Postgres,
            Backend::MySql => &mysql::MySql,
        }
    }

    /// Quotes an identifier that passed [`check_identifier`], for this backend
    /// ([`Dialect::quote`]).
    pub(crate) fn quote(self, name: &str) -> String {
        self.dialect().quote(name)
    }

    /// Of something kept once per backend (a task's migrations), the one for this backend.
    pub(crate) fn pick<'a, T: ?Sized>(self, sqlite: &'a T, postgres: &'a T, mysql: &'a T) -> &'a T {
        match self {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
            Backend::MySql => mysql,
        }
    }

    /// The backend's name for people.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
            Backend::MySql => "MySQL/MariaDB",
        }
    }
}

/// Checks an identifier against a strict pattern before it goes into SQL: ASCII letters,
/// digits and `_`, not starting with a digit, at most 63 characters (PostgreSQL's limit). What
/// passes needs no escaping inside [`Backend::quote`]'s quotes on any backend.
pub(crate) fn check_identifier(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Error::config(format!(
            "\"{}\" is not a valid SQL identifier",
            name.escape_default()
        ))
        .hint("use 1 to 63 ASCII letters, digits and _, not starting with a digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated_before_quoting() {
        check_identifier("users").unwrap();
        assert_eq!(Backend::Postgres.quote("users"), "\"users\"");
        check_identifier("_a1").unwrap();
        assert_eq!(Backend::Sqlite.quote("_a1"), "\"_a1\"");
        assert_eq!(Backend::MySql.quote("_a1"), "`_a1`");
        for bad in [
            "",
            "1abc",
            "a-b",
            "a\"b",
            "a`b",
            "a b",
            "x;drop table y",
            "é",
            &"a".repeat(64),
        ] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn column_types_map_to_kinds_and_unknown_ones_are_refused() {
        use rows::Kind;
        assert_eq!(postgres::kind_of("TIMESTAMPTZ"), Some(Kind::TimeTz));
        assert_eq!(
            mysql::kind_of("bigint", "bigint(20) unsigned"),
            Some(Kind::UInt64)
        );
        assert_eq!(mysql::kind_of("tinyint", "tinyint(1)"), Some(Kind::Bool));
        assert_eq!(mysql::kind_of("varchar", "varchar(32)"), Some(Kind::Text));
        assert_eq!(mysql::kind_of("datetime", "datetime(6)"), Some(Kind::Time));
        assert_eq!(postgres::kind_of("JSONB"), None);
        assert_eq!(sqlite::kind_of("ANYTHING"), Kind::Dynamic);
        // SQLite by the declared type's affinity.
        assert_eq!(sqlite::kind_of("INTEGER"), Kind::Int64);
        assert_eq!(sqlite::kind_of("varchar(32)"), Kind::Text);
        assert_eq!(sqlite::kind_of("DOUBLE"), Kind::Float64);
        assert_eq!(sqlite::kind_of("BLOB"), Kind::Dynamic);
    }
}
