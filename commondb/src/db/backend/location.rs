//! Where a database is: an embedded SQLite file, or a database on a server with its roles.
//!
//! Every choice that differs between the two (a file to create under a directory lock, or a
//! database and roles made with an administrator's rights) is made here, once, by a method of
//! [`Location`]; the modes call the method and never ask which kind they have.

use std::fmt;
use std::path::PathBuf;

use super::{Backend, Conn, ServerOptions, sqlite};
use crate::db::cleanup::{self, CleanupReport};
use crate::db::schema::{self, Migrations};
use crate::db::setup::{self, SetupReport};
use crate::db::{Target, roles};
use crate::error::{Error, Result};

/// The two kinds of [`Location`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A file of this user's: no roles, no administrator.
    Embedded,
    /// A database on a server, with its roles.
    Server,
}

/// Where a database is.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A database on a server (boxed: its options are large, a path is not).
    Server(Box<ServerOptions>),
}

impl fmt::Display for Location {
    /// Shows the location without credentials, so it is safe to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Server(server) => f.write_str(&server.display()),
        }
    }
}

impl Location {
    /// Parses a database URL. Errors never repeat the URL, which may carry a password.
    pub(crate) fn parse(url: &str) -> Result<Location> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => sqlite::parse_url(url),
            "postgres" | "postgresql" => Ok(Location::Server(Box::new(ServerOptions::parse(url, Backend::Postgres)?))),
            "mysql" | "mariadb" => Ok(Location::Server(Box::new(ServerOptions::parse(url, Backend::MySql)?))),
            _ => Err(Error::config(
                "the database URL is not valid: it must start with sqlite:, postgres:, postgresql:, mysql: or mariadb:",
            )
            .hint("e.g. COMMONDB_DATABASE_URL=postgres://127.0.0.1:5432/shop")),
        }
    }

    /// The embedded database of executable `exe` in `data_dir`, the default.
    pub(crate) fn embedded(data_dir: &std::path::Path, exe: &str) -> Location {
        Location::Sqlite(data_dir.join(format!("{exe}.sqlite3")))
    }

    /// The backend that serves this location.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Server(s) => s.backend(),
        }
    }

    /// Which kind of place this is: what each kind promises differs (a private file; roles
    /// with the least rights), and the self-test checks each kind's own promises.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Location::Sqlite(_) => Kind::Embedded,
            Location::Server(_) => Kind::Server,
        }
    }

    /// The database file of the embedded kind.
    pub(crate) fn file(&self) -> Option<&std::path::Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Server(_) => None,
        }
    }

    /// The server's TLS certificate, described for `--self-status` (`None` for an embedded
    /// file or a unix socket); a certificate that cannot be read says why.
    pub(crate) async fn certificate(&self) -> Option<String> {
        let Location::Server(server) = self else {
            return None;
        };
        Some(match super::certificate::read(server).await? {
            Ok(cert) => cert.describe(chrono::Utc::now()),
            Err(why) => format!("unknown ({why})"),
        })
    }

    /// Why there is no database here yet, when that can be told without connecting (an
    /// embedded file that does not exist).
    pub(crate) fn missing(&self) -> Option<String> {
        match self {
            Location::Sqlite(path) if !path.exists() => {
                Some(format!("{} does not exist", path.display()))
            }
            _ => None,
        }
    }

    /// Opens `target` as the app (on a server, the app role) without looking at its schema.
    pub(crate) async fn connect(&self, target: &Target) -> Result<Conn> {
        match self {
            Location::Sqlite(path) => {
                Ok(Conn::Sqlite(sqlite::connect(path, &target.settings).await?))
            }
            Location::Server(server) => {
                roles::app_options(target, server, false)?
                    .connect(&target.settings)
                    .await
            }
        }
    }

    /// Opens `target` for reading a backup: as the backup role on a server; never creating an
    /// embedded file.
    pub(crate) async fn connect_reader(&self, target: &Target) -> Result<Conn> {
        match self {
            Location::Sqlite(path) if !path.exists() => Err(Error::config(format!(
                "database {} does not exist: there is nothing to back up",
                path.display()
            ))
            .hint("run --self-setup (or the task) first, or check database_url")),
            Location::Sqlite(_) => self.connect(target).await,
            Location::Server(s) => {
                roles::app_options(target, s, true)?
                    .connect(&target.settings)
                    .await
            }
        }
    }

    /// Opens `target` for a task. The embedded database belongs to the user who runs the
    /// program, so on first use it is set up on the spot, and a schema behind the binary's
    /// migrations is brought up to date the way `--self-setup` would (under the same lock);
    /// the setup report is returned when that happened. On a server the schema is checked by
    /// [`Conn::begin_with`], in the round trip that begins the transaction.
    pub(crate) async fn open(
        &self,
        target: &Target,
        migrations: &Migrations,
    ) -> Result<(Conn, Option<SetupReport>)> {
        let Location::Sqlite(path) = self else {
            return Ok((self.connect(target).await?, None));
        };
        let mut report = None;
        if !path.exists() {
            report =
                Some(setup::sqlite(target, path, migrations).await?).filter(|r| !r.unchanged());
        }
        let mut conn = self.connect(target).await?;
        if !matches!(
            schema::check(&mut conn, migrations).await?,
            schema::SchemaState::Current { .. }
        ) {
            let r = setup::sqlite(target, path, migrations).await?;
            if !r.unchanged() {
                report = Some(r);
            }
        }
        Ok((conn, report))
    }

    /// `--self-setup`: creates the database if it is missing (on a server, its roles too) and
    /// applies the pending migrations; with `rotate`, gives the roles new passwords (a server's
    /// only: an embedded file has no roles).
    pub(crate) async fn setup(
        &self,
        target: &Target,
        migrations: &Migrations,
        rotate: bool,
    ) -> Result<SetupReport> {
        match self {
            Location::Sqlite(_) if rotate => Err(crate::error::Error::usage(
                "SQLite has no roles and no passwords: there are no credentials to rotate",
            )
            .hint("--rotate-credentials is for a database server; the file's access is its mode (0600)")),
            Location::Sqlite(path) => setup::sqlite(target, path, migrations).await,
            Location::Server(s) => setup::server(target, s, migrations, rotate).await,
        }
    }

    /// What cleanup would remove, for the confirmation prompt.
    pub(crate) fn cleanup_plan(&self, target: &Target) -> Result<Vec<String>> {
        match self {
            Location::Sqlite(path) => cleanup::sqlite_plan(path),
            Location::Server(s) => cleanup::server_plan(target, s),
        }
    }

    /// `--self-cleanup`: removes the database and what setup created with it.
    pub(crate) async fn cleanup(&self, target: &Target) -> Result<CleanupReport> {
        match self {
            Location::Sqlite(path) => cleanup::sqlite(target, path).await,
            Location::Server(s) => cleanup::server(target, s).await,
        }
    }

    /// Runs `work` on the task's database with the rights a restore needs and under setup's
    /// lock: on a server the administrator's connection (restore replaces every row and moves
    /// sequences, which the app role may not), its schema checked first; on SQLite the file,
    /// set up on first use as the task mode would, then the directory lock.
    pub(crate) async fn as_owner<T>(
        &self,
        target: &Target,
        migrations: &Migrations,
        work: impl AsyncFnOnce(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        match self {
            Location::Sqlite(path) => {
                let (mut conn, _) = self.open(target, migrations).await?;
                let _lock = sqlite::DirLock::of_database(path, &target.settings).await?;
                let result = work(&mut conn).await;
                conn.close_after(result).await
            }
            Location::Server(s) => {
                roles::as_admin_on_database(target, s, async |conn: &mut Conn| {
                    schema::require_current(conn, migrations, self).await?;
                    work(conn).await
                })
                .await
            }
        }
    }

    /// The location of a self-test's scratch database beside this one, on the same server,
    /// named by `name` (asked only then); `None` for the embedded kind, whose scratch file is
    /// the default in the scratch directory.
    pub(crate) fn scratch_url(
        &self,
        configured: &str,
        name: impl FnOnce() -> Result<String>,
    ) -> Result<Option<String>> {
        match self {
            Location::Sqlite(_) => Ok(None),
            // The configured URL with the scratch database in it: how to connect (sslmode, the
            // CA) stays as configured.
            Location::Server(server) => {
                let name = name()?;
                match url::Url::parse(configured) {
                    Ok(mut url) if url.query().is_some() => {
                        url.set_path(&format!("/{name}"));
                        Ok(Some(url.to_string()))
                    }
                    _ => Ok(Some(server.with_database(&name).display())),
                }
            }
        }
    }

    /// Drops a self-test's scratch database and its roles whatever their records say, if its
    /// name starts with `prefix` (only names the self-test makes, never anything else on a
    /// record's word); returns what was dropped. Nothing to do for the embedded kind, whose
    /// file goes with the scratch directory.
    pub(crate) async fn drop_scratch(
        &self,
        target: &Target,
        prefix: &str,
    ) -> Result<Option<String>> {
        let Location::Server(server) = self else {
            return Ok(None);
        };
        let name = server.database().unwrap_or_default();
        if !name.starts_with(prefix) {
            return Err(Error::config(format!("{name} is not a scratch database")));
        }
        cleanup::drop_scratch(target, server).await?;
        Ok(Some(format!("database {name} and its roles")))
    }

    /// What of `target`'s database and roles still exists (the self-test's check that cleanup
    /// left nothing on the server); the embedded kind's files are checked in its directory.
    pub(crate) async fn leftovers(&self, target: &Target) -> Result<Vec<String>> {
        match self {
            Location::Sqlite(_) => Ok(Vec::new()),
            Location::Server(server) => cleanup::leftovers(target, server).await,
        }
    }
}
