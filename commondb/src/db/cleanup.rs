//! `--self-cleanup`: remove what setup made, and nothing else. Backups are never touched.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::backend::options::admin_options;
use super::backend::sqlite::{self, DirLock};
use super::backend::{Conn, MARKER_TABLE, ServerDialect, ServerOptions, check_identifier};
use super::roles::{Names, as_admin};
use super::schema;
use super::{Backend, Target};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::secrets::{self, AppSecrets, DatabaseSecrets};

/// What cleanup removed, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    /// The backend cleaned up.
    pub backend: Backend,
    /// Where the database was (without credentials).
    pub database: String,
    /// The files removed.
    pub removed: Vec<PathBuf>,
    /// On a server: the database and roles dropped.
    pub dropped: Vec<String>,
    /// On a server: what was left because setup did not create it.
    pub kept: Vec<String>,
    /// Whether the database itself is gone (its file, or the database on the server).
    #[serde(skip)]
    pub(crate) database_removed: bool,
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.database_removed {
            write!(f, "removed the database {}", self.database)?;
        } else if !self.dropped.is_empty() || !self.removed.is_empty() {
            write!(f, "cleaned up {}; the database stays", self.database)?;
        } else if self.kept.is_empty() {
            write!(f, "nothing to clean up: {} does not exist", self.database)?;
        } else {
            write!(f, "nothing to clean up in {}", self.database)?;
        }
        for item in &self.dropped {
            write!(f, "\n  dropped {item}")?;
        }
        for file in &self.removed {
            write!(f, "\n  removed {}", file.display())?;
        }
        for item in &self.kept {
            write!(f, "\n  kept {item}")?;
        }
        Ok(())
    }
}

/// What cleanup would remove, for the confirmation prompt; on SQLite, checked to be a database.
/// Empty when there is nothing to remove.
pub(crate) fn plan(target: &Target) -> Result<Vec<String>> {
    target.location.cleanup_plan(target)
}

/// What cleanup would remove from SQLite: the database file, checked to be one, and its side
/// files.
pub(crate) fn sqlite_plan(path: &Path) -> Result<Vec<String>> {
    if path.exists() && !sqlite::is_database_file(path)? {
        return Err(Error::config(format!(
            "{} is not a SQLite database, so cleanup will not remove it",
            path.display()
        ))
        .hint("check database_url: it must name the executable's own database file"));
    }
    Ok(sqlite::existing_files(path)
        .iter()
        .map(|f| f.display().to_string())
        .collect())
}

/// What cleanup would drop on a server.
pub(crate) fn server_plan(target: &Target, s: &ServerOptions) -> Result<Vec<String>> {
    let names = Names::new(s, target)?;
    Ok(vec![
        format!(
            "database {} on {} (if setup created it)",
            names.database,
            s.endpoint()
        ),
        format!(
            "roles {} and {}, and the roles of the domain's other executables (those setup created)",
            names.app, names.backup
        ),
        format!(
            "the credentials for this database in {}",
            secrets::app_file(&target.settings, target.exe).display()
        ),
    ])
}

/// Removes the database and what setup created with it.
pub(crate) async fn run(target: &Target) -> Result<CleanupReport> {
    target.location.cleanup(target).await
}

/// `--self-cleanup` on SQLite.
pub(crate) async fn sqlite(target: &Target, path: &Path) -> Result<CleanupReport> {
    let mut removed = Vec::new();
    if sqlite::dir_of(path).is_dir() {
        // Under the setup lock, so that a concurrent setup never sees half a database.
        let _lock = DirLock::of_database(path, &target.settings).await?;
        sqlite_plan(path)?;
        for file in sqlite::existing_files(path) {
            match std::fs::remove_file(&file) {
                Ok(()) => removed.push(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::permission(format!(
                        "cannot remove {}: {e}",
                        file.display()
                    ))
                    .hint("check that you own the file and its directory"));
                }
            }
        }
    }
    Ok(CleanupReport {
        backend: Backend::Sqlite,
        database: target.location.to_string(),
        database_removed: !removed.is_empty(),
        removed,
        dropped: Vec::new(),
        kept: Vec::new(),
    })
}

/// `--self-cleanup` on a server: drops what setup recorded as created, and nothing else.
pub(crate) async fn server(target: &Target, server: &ServerOptions) -> Result<CleanupReport> {
    let names = Names::new(server, target)?;
    let secrets_file = secrets::app_file(&target.settings, target.exe);
    let display = server.display();
    let known = secrets::load::<AppSecrets>(&secrets_file)?
        .unwrap_or_default()
        .databases
        .remove(&display);
    let journal = known.clone().unwrap_or_default();
    let mut report = as_admin(target, server, async |admin, admin_options| {
        cleanup_locked(target, server, &names, &journal, admin, admin_options).await
    })
    .await?;
    // The executable's credentials for this database are of no use once its roles are gone;
    // those for other databases stay.
    interrupt::check()?;
    if known.is_some() {
        let mut now = secrets::load::<AppSecrets>(&secrets_file)?.unwrap_or_default();
        now.databases.remove(&display);
        if now.is_empty() {
            if std::fs::remove_file(&secrets_file).is_ok() {
                report.removed.push(secrets_file);
            }
        } else {
            secrets::write(&secrets_file, &now.to_toml())?;
            report.dropped.push(format!(
                "the credentials for {display} from {}",
                secrets_file.display()
            ));
        }
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
    journal: &DatabaseSecrets,
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
        database_removed: false,
    };
    let db_exists = admin
        .count_named(d.database_exists(), &names.database)
        .await?
        > 0;
    let (mut db, recorded) = if db_exists {
        let db = admin_options
            .with_database(&names.database)
            .connect(&target.settings)
            .await?;
        let (db, recorded) = records(db, names, journal).await?;
        (Some(db), recorded)
    } else {
        (None, Vec::new())
    };
    // Ours: recorded as created in the database, or on the journal of an interrupted setup.
    let ours = |item: &str| journal.is_pending(item) || recorded.iter().any(|r| r == item);
    let database_ours = db_exists && ours("database");
    let roles = roles_to_drop(names, &recorded, database_ours);
    for role in &roles {
        interrupt::check()?;
        // Names read from the database's records go into SQL only once checked.
        check_identifier(role)?;
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
        report.database_removed = true;
    } else if db_exists {
        report.kept.push(format!(
            "database {} (setup did not create it)",
            names.database
        ));
    }
    Ok(report)
}

/// This executable's roles; and when the database goes, every role a setup of the domain's
/// executables recorded, since none of them has anything left to do. A database that stays
/// keeps its other executables' roles: they still work there.
fn roles_to_drop(names: &Names, recorded: &[String], database_goes: bool) -> Vec<String> {
    let mut roles = vec![names.app.clone(), names.backup.clone()];
    if database_goes {
        for role in recorded.iter().filter_map(|i| i.strip_prefix("role:")) {
            if !roles.iter().any(|r| r == role) {
                roles.push(role.to_string());
            }
        }
    }
    roles
}

/// The items the database's `_commondb_setup` table records as created by setup. A database
/// without that table was not set up by commondb and is refused, unless the journal of an
/// interrupted setup says it made it.
async fn records(
    mut db: Conn,
    names: &Names,
    journal: &DatabaseSecrets,
) -> Result<(Conn, Vec<String>)> {
    if schema::table_exists(&mut db, MARKER_TABLE).await? {
        let recorded = db.created_items().await?;
        return Ok((db, recorded));
    }
    if !journal.is_pending("database") {
        let _ = db.close().await;
        return Err(Error::config(format!(
            "database {} was not set up by commondb (it has no {MARKER_TABLE} table), so cleanup leaves it alone",
            names.database
        ))
        .hint("check database_url; cleanup drops only what --self-setup created"));
    }
    Ok((db, Vec::new()))
}

async fn drop_database(admin: &mut Conn, d: &dyn ServerDialect, name: &str) -> Result<()> {
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
    let names = Names::new(server, target)?;
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
    let names = Names::new(server, target)?;
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
