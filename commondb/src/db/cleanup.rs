//! `--self-cleanup`: remove what setup made, and nothing else. Backups are never touched.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::sqlite::{self, DirLock};
use super::{Backend, Location, Target};
use crate::error::{Error, Result};

/// What cleanup removed, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    /// The backend cleaned up.
    pub backend: Backend,
    /// Where the database was (without credentials).
    pub database: String,
    /// The files removed; empty when there was nothing to remove.
    pub removed: Vec<PathBuf>,
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() {
            return write!(f, "nothing to clean up: {} does not exist", self.database);
        }
        write!(f, "removed the database {}", self.database)?;
        for file in &self.removed {
            write!(f, "\n  removed {}", file.display())?;
        }
        Ok(())
    }
}

/// What cleanup would remove, checked to be ours: the confirmation prompt shows this list.
pub(crate) fn plan(target: &Target) -> Result<Vec<PathBuf>> {
    match &target.location {
        Location::Sqlite(path) => {
            let files = sqlite::existing_files(path);
            if path.exists() && !sqlite::is_database_file(path)? {
                return Err(Error::config(format!(
                    "{} is not a SQLite database, so cleanup will not remove it",
                    path.display()
                ))
                .hint("check database_url: it must name the executable's own database file"));
            }
            Ok(files)
        }
    }
}

/// Removes the database and its side files.
pub(crate) async fn run(target: &Target) -> Result<CleanupReport> {
    let Location::Sqlite(path) = &target.location;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut removed = Vec::new();
    if dir.is_dir() {
        // Under the setup lock, so that a concurrent setup never sees half a database.
        let timeout = Duration::from_millis(target.settings.lock_timeout_ms);
        let _lock = DirLock::acquire(dir, timeout).await?;
        for file in plan(target)? {
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
    })
}
