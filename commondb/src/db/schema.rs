//! The task's embedded migrations and the check that the database's schema matches them.
//!
//! Migrations are sqlx's: embedded with `sqlx::migrate!`, recorded in `_sqlx_migrations`, one
//! set per backend with the same version numbers. Every mode but setup checks the schema with
//! one cheap query before it does anything.

use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::migrate::Migrator;

use super::backend::check_identifier;
use super::{Backend, Conn, Location, on_conn};
use crate::error::{Error, Result};

/// A task's migrations, one set per backend, with the same versions in each.
///
/// ```text
/// const MIGRATIONS: &'static Migrations = &Migrations {
///     sqlite: sqlx::migrate!("migrations/users/sqlite"),
///     postgres: sqlx::migrate!("migrations/users/postgres"),
///     mysql: sqlx::migrate!("migrations/users/mysql"),
/// };
/// ```
#[derive(Debug)]
pub struct Migrations {
    /// The migrations for SQLite.
    pub sqlite: Migrator,
    /// The migrations for PostgreSQL.
    pub postgres: Migrator,
    /// The migrations for MySQL and MariaDB.
    pub mysql: Migrator,
}

impl Migrations {
    /// The migrator for `backend`.
    pub(crate) fn for_backend(&self, backend: Backend) -> &Migrator {
        backend.pick(&self.sqlite, &self.postgres, &self.mysql)
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
    /// `--self-status` says which.
    Differs { applied: i64, version: i64 },
}

/// Compares the applied migrations with the embedded ones in one query.
pub(crate) async fn check(conn: &mut Conn, migrations: &Migrations) -> Result<SchemaState> {
    let embedded = embedded(migrations.for_backend(conn.backend()));
    let applied = match conn.applied_summary().await {
        Ok(applied) => applied,
        Err(_) if !table_exists(conn, "_sqlx_migrations").await? => {
            return Ok(SchemaState::Missing);
        }
        // The table appeared between the two queries (a concurrent setup): ask again.
        Err(_) => conn.applied_summary().await?,
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

/// Checks that the schema is the binary's, refusing it as [`refusal`] says otherwise.
pub(crate) async fn require_current(
    conn: &mut Conn,
    migrations: &Migrations,
    location: &Location,
) -> Result<()> {
    match check(conn, migrations).await? {
        SchemaState::Current { .. } => Ok(()),
        state => Err(refusal(
            state,
            migrations.for_backend(conn.backend()),
            location,
        )),
    }
}

/// The error a task mode on a server gives for a schema it may not use.
pub(crate) fn refusal(state: SchemaState, migrator: &Migrator, location: &Location) -> Error {
    let (_, newest) = embedded(migrator);
    match state {
        SchemaState::Missing => Error::config(format!("database {location} is not set up (it has no migrations table)")),
        SchemaState::Differs { version, .. } if version > newest => Error::config(format!(
            "database {location} has schema version {version}, newer than this program's ({newest})"
        ))
        .hint("run a newer version of this executable"),
        SchemaState::Differs { version, .. } => Error::config(format!(
            "database {location} has schema version {version}, but this program needs version {newest}"
        )),
        SchemaState::Current { .. } => Error::internal("a current schema was refused"),
    }
    .hint_if_none("run --self-setup with the administrator's credentials (COMMONDB_ADMIN_URL); the app role may not change the schema")
}

/// How many migrations were applied successfully, and the newest version: one row, two `BIGINT`s.
pub(crate) const APPLIED_SUMMARY: &str =
    "SELECT COUNT(*), COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";

/// Whether the current database (schema, on PostgreSQL) has table `name`.
pub(crate) async fn table_exists(conn: &mut Conn, name: &str) -> Result<bool> {
    let sql = conn.backend().dialect().table_exists();
    Ok(conn.count_named(sql, name).await? > 0)
}

/// A migration as reported to the user.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationInfo {
    /// Its version number.
    pub version: i64,
    /// Its description (from the file name).
    pub description: String,
}

/// A row of `_sqlx_migrations`.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub version: i64,
    pub success: bool,
    pub checksum: Vec<u8>,
}

/// Every row of `_sqlx_migrations`, oldest first; empty if the table does not exist.
pub(crate) async fn applied(conn: &mut Conn) -> Result<Vec<Applied>> {
    if !table_exists(conn, "_sqlx_migrations").await? {
        return Ok(Vec::new());
    }
    let sql = "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version";
    let rows: Vec<(i64, bool, Vec<u8>)> =
        on_conn!(conn, c => sqlx::query_as(sql).fetch_all(&mut *c).await)?;
    Ok(rows
        .into_iter()
        .map(|(version, success, checksum)| Applied {
            version,
            success,
            checksum,
        })
        .collect())
}

/// What to do when executables of two domains were pointed at one database: their migrations
/// share its `_sqlx_migrations`.
const OWN_DATABASE: &str = "give each domain a database of its own (database_url in <executable>.toml: README, Configuration)";

/// Applies the pending migrations and returns those it applied. The caller holds the setup
/// lock. A migration applied earlier whose checksum differs from the embedded one, or an
/// applied version the binary does not know (the database is newer than the binary), is refused.
pub(crate) async fn migrate(
    conn: &mut Conn,
    migrations: &Migrations,
) -> Result<Vec<MigrationInfo>> {
    let migrator = migrations.for_backend(conn.backend());
    let before: Vec<i64> = applied(conn).await?.iter().map(|a| a.version).collect();
    if let Some(unknown) = before.iter().find(|v| !migrator.version_exists(**v)) {
        let (_, newest) = embedded(migrator);
        return Err(Error::config(format!(
            "the database's schema is at version {unknown}, newer than this program's (version {newest})"
        ))
        .hint(format!("run a newer version of this executable against this database; or, if the database holds another domain's schema, {OWN_DATABASE}")));
    }
    let result = on_conn!(conn, c => migrator.run(&mut *c).await);
    result.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMismatch(v) => Error::config(format!(
            "migration {v} was applied to the database with different contents than this program's"
        ))
        .hint(format!("the schema has drifted (restore a backup, or clean up and set up again); or, if the database holds another domain's schema, {OWN_DATABASE}")),
        // An earlier setup was killed inside a migration on MySQL/MariaDB, whose DDL commits
        // statement by statement: part of the migration may be in place. Not a bug here, and
        // only the operator knows whether the data is worth keeping.
        sqlx::migrate::MigrateError::Dirty(v) => Error::config(format!(
            "migration {v} was cut off part way in an earlier setup (MySQL/MariaDB cannot roll DDL back), so the schema may be half changed"
        ))
        .hint(format!(
            "if the database holds nothing to keep: --self-cleanup --yes, then --self-setup; otherwise undo what migration {v} did by hand, DELETE FROM _sqlx_migrations WHERE version = {v}, and run --self-setup again"
        )),
        sqlx::migrate::MigrateError::Execute(e) => Error::from(e),
        other => Error::internal(format!("applying migrations failed: {other}")),
    })?;
    // The harness's own table, beside the domain's: no migration of the domain's creates it.
    super::requests::create(conn).await?;
    Ok(migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !before.contains(&m.version))
        .map(|m| MigrationInfo {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect())
}

/// The tables the task owns (all but the bookkeeping tables), in name order, each name checked
/// by [`check_identifier`].
pub(crate) async fn task_tables(conn: &mut Conn) -> Result<Vec<String>> {
    let list = conn.backend().dialect().tables();
    conn.strings(list)
        .await?
        .into_iter()
        .filter(|t| !t.starts_with("_sqlx") && !t.starts_with("_commondb"))
        .map(|t| check_identifier(&t).map(|_| t))
        .collect()
}

/// The row count of every table the task owns, in name order. The self-test uses it to prove
/// that a refused request wrote nothing.
pub(crate) async fn row_counts(conn: &mut Conn) -> Result<Vec<(String, i64)>> {
    let tables = task_tables(conn).await?;
    count_rows(conn, tables).await
}

/// The row count of each of `tables` (names checked by [`check_identifier`]).
pub(crate) async fn count_rows(
    conn: &mut Conn,
    tables: impl IntoIterator<Item = String>,
) -> Result<Vec<(String, i64)>> {
    let mut counts = Vec::new();
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM {}", conn.backend().quote(&table));
        let n: i64 =
            on_conn!(conn, c => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut *c).await)?;
        counts.push((table, n));
    }
    Ok(counts)
}
