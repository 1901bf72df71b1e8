//! The task's embedded migrations and the check that the database's schema matches them.
//!
//! Migrations are sqlx's: embedded with `sqlx::migrate!`, recorded in `_sqlx_migrations`.
//! Every mode but setup checks the schema with one cheap query before it does anything.

use serde::Serialize;
use sqlx::migrate::Migrator;

use super::Conn;
use crate::error::{Error, Result};

/// A task's migrations, one set per backend, with the same versions in each.
///
/// ```text
/// const MIGRATIONS: &'static Migrations = &Migrations {
///     sqlite: sqlx::migrate!("migrations/users/sqlite"),
/// };
/// ```
#[derive(Debug)]
pub struct Migrations {
    /// The migrations for SQLite.
    pub sqlite: Migrator,
}

impl Migrations {
    /// The migrator for the backend of `conn`.
    pub(crate) fn for_conn(&self, conn: &Conn) -> &Migrator {
        match conn {
            Conn::Sqlite(_) => &self.sqlite,
        }
    }
}

/// How many up-migrations a migrator has, and the newest version.
pub(crate) fn embedded(m: &Migrator) -> (i64, i64) {
    let ups = m.iter().filter(|m| !m.migration_type.is_down_migration());
    ups.fold((0, 0), |(n, max), m| (n + 1, max.max(m.version)))
}

/// What the quick schema check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum SchemaState {
    /// No migrations table: the database was never set up.
    Missing,
    /// Every embedded migration is applied, and no other.
    Current { version: i64 },
    /// Applied migrations differ from the embedded ones (older schema, newer schema or drift);
    /// setup's full check says which.
    Differs { applied: i64, version: i64 },
}

/// Compares the applied migrations with the embedded ones in one query.
pub(crate) async fn check(conn: &mut Conn, migrations: &Migrations) -> Result<SchemaState> {
    let embedded = embedded(migrations.for_conn(conn));
    let applied = match applied_summary(conn).await {
        Ok(applied) => applied,
        Err(_) if !table_exists(conn).await? => return Ok(SchemaState::Missing),
        // The table appeared between the two queries (a concurrent setup): ask again.
        Err(_) => applied_summary(conn).await?,
    };
    Ok(if applied == embedded {
        SchemaState::Current { version: applied.1 }
    } else {
        SchemaState::Differs {
            applied: applied.0,
            version: applied.1,
        }
    })
}

/// How many migrations were applied successfully, and the newest version.
async fn applied_summary(conn: &mut Conn) -> Result<(i64, i64)> {
    let sql = "SELECT COUNT(*), COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
    Ok(match conn {
        Conn::Sqlite(c) => sqlx::query_as(sql).fetch_one(&mut *c).await?,
    })
}

async fn table_exists(conn: &mut Conn) -> Result<bool> {
    let n: i64 = match conn {
        Conn::Sqlite(c) => sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut *c)
        .await?,
    };
    Ok(n > 0)
}

/// A migration as reported to the user.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationInfo {
    /// Its version number.
    pub version: i64,
    /// Its description (from the file name).
    pub description: String,
}

/// Applies the pending migrations and returns those it applied. The caller holds the setup
/// lock. A migration applied earlier whose checksum differs from the embedded one, or an
/// applied version the binary does not know (the database is newer than the binary), is refused.
pub(crate) async fn migrate(
    conn: &mut Conn,
    migrations: &Migrations,
) -> Result<Vec<MigrationInfo>> {
    let migrator = migrations.for_conn(conn);
    let before = applied_versions(conn).await?;
    if let Some(unknown) = before.iter().find(|v| !migrator.version_exists(**v)) {
        let (_, newest) = embedded(migrator);
        return Err(Error::config(format!(
            "the database's schema is at version {unknown}, newer than this program's (version {newest})"
        ))
        .hint("run a newer version of this executable against this database"));
    }
    let result = match conn {
        Conn::Sqlite(c) => migrator.run(&mut *c).await,
    };
    result.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMismatch(v) => Error::config(format!(
            "migration {v} was applied to the database with different contents than this program's"
        ))
        .hint("the schema has drifted: restore a backup or clean up and set up again"),
        sqlx::migrate::MigrateError::Dirty(v) => {
            Error::internal(format!("migration {v} failed part way in an earlier setup"))
                .hint("inspect the database, fix it by hand, then run --self-setup again")
        }
        sqlx::migrate::MigrateError::Execute(e) => Error::from(e),
        other => Error::internal(format!("applying migrations failed: {other}")),
    })?;
    Ok(migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !before.contains(&m.version))
        .map(|m| MigrationInfo {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect())
}

async fn applied_versions(conn: &mut Conn) -> Result<Vec<i64>> {
    if !table_exists(conn).await? {
        return Ok(Vec::new());
    }
    let sql = "SELECT version FROM _sqlx_migrations ORDER BY version";
    Ok(match conn {
        Conn::Sqlite(c) => sqlx::query_scalar(sql).fetch_all(&mut *c).await?,
    })
}

/// The row count of every table the task owns (all but the migrations table), in name order.
/// The self-test uses it to prove that a refused request wrote nothing.
pub(crate) async fn row_counts(conn: &mut Conn) -> Result<Vec<(String, i64)>> {
    let tables: Vec<String> = match conn {
        Conn::Sqlite(c) => {
            sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
            )
            .fetch_all(&mut *c)
            .await?
        }
    };
    let mut counts = Vec::with_capacity(tables.len());
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM {}", quote_identifier(&table)?);
        let n: i64 = match conn {
            Conn::Sqlite(c) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut *c)
                    .await?
            }
        };
        counts.push((table, n));
    }
    Ok(counts)
}

/// Quotes an identifier for SQL after checking it against a strict pattern: ASCII letters,
/// digits and `_`, not starting with a digit, at most 63 characters (PostgreSQL's limit).
pub(crate) fn quote_identifier(name: &str) -> Result<String> {
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
    Ok(format!("\"{name}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated_before_quoting() {
        assert_eq!(quote_identifier("users").unwrap(), "\"users\"");
        assert_eq!(quote_identifier("_a1").unwrap(), "\"_a1\"");
        for bad in [
            "",
            "1abc",
            "a-b",
            "a\"b",
            "a b",
            "x;drop table y",
            "é",
            &"a".repeat(64),
        ] {
            assert!(quote_identifier(bad).is_err(), "{bad}");
        }
    }
}
