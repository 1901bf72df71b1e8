//! `--self-cleanup`: remove what setup made, and nothing else. Backups are never touched.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::sqlite::{self, DirLock};
use super::{Backend, Location, Target, server};
use crate::error::{Error, Result};
use crate::secrets;

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
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database_removed = match self.backend {
            Backend::Sqlite => !self.removed.is_empty(),
            _ => self
                .dropped
                .iter()
                .any(|item| item.starts_with("database ")),
        };
        if database_removed {
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
    match &target.location {
        Location::Sqlite(path) => {
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
        Location::Server(s) => {
            let names = server::Names::new(s, &target.settings)?;
            Ok(vec![
                format!(
                    "database {} on {} (if setup created it)",
                    names.database,
                    s.endpoint()
                ),
                format!(
                    "roles {} and {} (those setup created)",
                    names.app, names.backup
                ),
                format!(
                    "{} (the roles' credentials)",
                    secrets::app_file(&target.settings, target.exe).display()
                ),
            ])
        }
    }
}

/// Removes the database and what setup created with it.
pub(crate) async fn run(target: &Target) -> Result<CleanupReport> {
    match &target.location {
        Location::Sqlite(path) => cleanup_sqlite(target, path).await,
        Location::Server(s) => server::cleanup(target, s).await,
    }
}

async fn cleanup_sqlite(target: &Target, path: &Path) -> Result<CleanupReport> {
    let mut removed = Vec::new();
    if sqlite::dir_of(path).is_dir() {
        // Under the setup lock, so that a concurrent setup never sees half a database.
        let _lock = DirLock::of_database(path, &target.settings).await?;
        plan(target)?;
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
        removed,
        dropped: Vec::new(),
        kept: Vec::new(),
    })
}
