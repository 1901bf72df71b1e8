//! `--self-setup`: create what the task needs, idempotently, under a lock.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::schema::{self, MigrationInfo, SchemaState};
use super::sqlite::{self, DirLock};
use super::{Backend, Conn, Location, Migrations, Target, server};
use crate::error::{Error, Result};
use crate::secrets;

/// What setup did, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    /// The backend set up.
    pub backend: Backend,
    /// Where the database is (without credentials).
    pub database: String,
    /// Whether this run created the database.
    pub created: bool,
    /// The migrations this run applied (empty when the schema was current).
    pub applied: Vec<MigrationInfo>,
    /// The schema version now.
    pub schema_version: i64,
    /// Where the secrets files live.
    pub secrets_dir: PathBuf,
    /// On a server: the app and backup roles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleReport>,
    /// On a server: the app secrets file that holds the roles' credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_file: Option<PathBuf>,
    /// Whether this run wrote that file.
    pub secrets_written: bool,
}

/// A role setup made sure of.
#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    /// Its name.
    pub name: String,
    /// Whether this run created it.
    pub created: bool,
}

impl SetupReport {
    /// Whether the run changed nothing.
    pub fn unchanged(&self) -> bool {
        !self.created
            && self.applied.is_empty()
            && !self.secrets_written
            && self.roles.iter().all(|r| !r.created)
    }

    /// One line for stderr when a task mode set the embedded database up on the user's behalf.
    pub fn summary(&self) -> String {
        if self.created {
            format!(
                "first use: created the database {} (schema version {}); --self-setup does this explicitly",
                self.database, self.schema_version
            )
        } else {
            format!(
                "applied {} pending migration(s) to {} (schema version {})",
                self.applied.len(),
                self.database,
                self.schema_version
            )
        }
    }
}

impl fmt::Display for SetupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unchanged() {
            writeln!(f, "already set up: nothing to do")?;
        } else {
            writeln!(f, "set up on {}", self.backend.name())?;
        }
        let state = if self.created { "created" } else { "exists" };
        writeln!(f, "  database: {} ({state})", self.database)?;
        for role in &self.roles {
            let state = if role.created { "created" } else { "exists" };
            writeln!(f, "  role:     {} ({state})", role.name)?;
        }
        write!(f, "  schema:   version {}", self.schema_version)?;
        match self.applied.len() {
            0 => writeln!(f, ", no pending migrations")?,
            n => {
                let names: Vec<_> = self
                    .applied
                    .iter()
                    .map(|m| m.description.as_str())
                    .collect();
                writeln!(f, ", applied {n} migration(s): {}", names.join(", "))?;
            }
        }
        match &self.secrets_file {
            Some(file) => {
                let state = if self.secrets_written {
                    "written"
                } else {
                    "unchanged"
                };
                write!(f, "  secrets:  {} ({state}, mode 0600)", file.display())
            }
            None => write!(
                f,
                "  secrets:  {} (SQLite needs none)",
                self.secrets_dir.display()
            ),
        }
    }
}

/// Sets up `target` for `migrations`: creates the database if it is missing (on a server, its
/// roles too) and applies the pending migrations. Safe to run many times and from many
/// processes at once.
pub(crate) async fn run(target: &Target, migrations: &Migrations) -> Result<SetupReport> {
    match &target.location {
        Location::Sqlite(path) => setup_sqlite(target, path, migrations).await,
        Location::Server(s) => server::setup(target, s, migrations).await,
    }
}

async fn setup_sqlite(
    target: &Target,
    path: &Path,
    migrations: &Migrations,
) -> Result<SetupReport> {
    let settings = &target.settings;
    secrets::create_private_dir(sqlite::dir_of(path))?;
    let _lock = DirLock::of_database(path, settings).await?;
    let created = sqlite::create_file(path)?;
    let mut sqlite = sqlite::connect(path, settings).await?;
    // WAL lets readers run beside the one writer; the mode is stored in the file, so it is set
    // once here and not on every connect.
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut sqlite)
        .await?;
    let mut conn = Conn::Sqlite(sqlite);
    let applied = schema::migrate(&mut conn, migrations).await?;
    let SchemaState::Current { version } = schema::check(&mut conn, migrations).await? else {
        return Err(Error::internal(
            "after applying the migrations the schema still differs from this program's",
        ));
    };
    conn.close().await?;
    Ok(SetupReport {
        backend: Backend::Sqlite,
        database: target.location.to_string(),
        created,
        applied,
        schema_version: version,
        secrets_dir: settings.secrets_dir.clone(),
        roles: Vec::new(),
        secrets_file: None,
        secrets_written: false,
    })
}
