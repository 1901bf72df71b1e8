//! The roles on a server: the names setup and cleanup work with, the administrator's
//! connection under the server-wide setup lock, and the options the app and backup roles
//! connect with.

use std::time::{Duration, Instant};

use super::Target;
use super::backend::options::admin_options;
use super::backend::{Conn, ServerDialect, ServerOptions, check_identifier};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::secrets::{self, AppSecrets};

/// The validated names setup and cleanup work with.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub database: String,
    pub app: String,
    pub backup: String,
}

impl Names {
    pub(crate) fn new(server: &ServerOptions, settings: &Settings) -> Result<Names> {
        let database = server.database().ok_or_else(|| {
            Error::config("the database URL names no database")
                .hint("end it with the database's name, e.g. postgres://127.0.0.1:5432/shop")
        })?;
        check_identifier(database)?;
        let app = settings
            .app_role
            .clone()
            .unwrap_or_else(|| format!("{database}_app"));
        let backup = settings
            .backup_role
            .clone()
            .unwrap_or_else(|| format!("{database}_backup"));
        let max = server.dialect().max_role_len();
        for role in [&app, &backup] {
            check_identifier(role)?;
            if role.len() > max {
                return Err(Error::config(format!(
                    "role name {role} is longer than {} allows ({max} characters)",
                    server.backend().name()
                ))
                .hint(
                    "set app_role and backup_role to shorter names, or use a shorter database name",
                ));
            }
        }
        if app == backup {
            return Err(
                Error::config(format!("app_role and backup_role are both {app}"))
                    .hint("the backup role must be a different, read-only role"),
            );
        }
        Ok(Names {
            database: database.to_string(),
            app,
            backup,
        })
    }
}

/// The server-wide setup lock, taken by polling so that `lock_timeout_ms` is honoured.
async fn lock(admin: &mut Conn, dialect: &dyn ServerDialect, settings: &Settings) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(settings.lock_timeout_ms);
    loop {
        if admin.scalar(dialect.try_lock()).await? == 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::temporary(format!(
                "another setup or cleanup kept the server's setup lock for over {} ms",
                settings.lock_timeout_ms
            ))
            .hint("wait for it to finish, or raise lock_timeout_ms"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `work` with an administrator's connection to the server, under the setup lock.
pub(crate) async fn as_admin<T>(
    target: &Target,
    server: &ServerOptions,
    work: impl AsyncFnOnce(&mut Conn, &ServerOptions) -> Result<T>,
) -> Result<T> {
    let settings = &target.settings;
    let admin_options = admin_options(settings, server)?;
    let dialect = server.dialect();
    let mut admin = admin_options.connect(settings).await?;
    lock(&mut admin, dialect, settings).await?;
    let result = work(&mut admin, &admin_options).await;
    // Ending the session releases the lock too; unlocking first is only tidier.
    let _ = admin.scalar(dialect.unlock()).await;
    let _ = admin.close().await;
    result
}

/// Runs `work` with an administrator's connection to the task's own database, under the setup
/// lock (restore replaces every row and resets sequences, which the app role may not).
pub(crate) async fn as_admin_on_database<T>(
    target: &Target,
    server: &ServerOptions,
    work: impl AsyncFnOnce(&mut Conn) -> Result<T>,
) -> Result<T> {
    let names = Names::new(server, &target.settings)?;
    as_admin(target, server, async |_, admin_options| {
        let mut db = admin_options
            .with_database(&names.database)
            .connect(&target.settings)
            .await?;
        let result = work(&mut db).await;
        let _ = db.close().await;
        result
    })
    .await
}

/// The options the task connects with: the app role's (or the backup role's), from the app
/// secrets file as read when the target was resolved, or as it is now if setup has written it
/// since (the self-test sets up and runs tasks in one process).
pub(crate) fn app_options(
    target: &Target,
    server: &ServerOptions,
    backup: bool,
) -> Result<ServerOptions> {
    if target.secrets.database_url.is_some() {
        // A whole URL written by hand into the secrets file carries its own credentials.
        return Ok(server.clone());
    }
    let names = Names::new(server, &target.settings)?;
    let role = if backup { &names.backup } else { &names.app };
    let display = server.display();
    if let Some(creds) = target.secrets.for_role(&display, role, backup) {
        return Ok(server.with_credentials(creds));
    }
    let file = secrets::app_file(&target.settings, target.domain);
    let now = secrets::load::<AppSecrets>(&file)?.unwrap_or_default();
    match now.for_role(&display, role, backup) {
        Some(creds) => Ok(server.with_credentials(creds)),
        None => Err(Error::config(format!(
            "no credentials for role {role} on {display} in {}",
            file.display()
        ))
        .hint("run --self-setup with the administrator's credentials (COMMONDB_ADMIN_URL); it creates the role and writes them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Backend;
    use crate::error::ErrorKind;

    #[test]
    fn names_default_from_the_database_and_are_validated() {
        let settings = crate::testing::settings_in(std::path::Path::new("/tmp"));
        let pg = ServerOptions::parse("postgres://127.0.0.1:5432/shop", Backend::Postgres).unwrap();
        let n = Names::new(&pg, &settings).unwrap();
        assert_eq!(
            (n.database.as_str(), n.app.as_str(), n.backup.as_str()),
            ("shop", "shop_app", "shop_backup")
        );
        let bad = ServerOptions::parse("postgres://127.0.0.1:5432/shop%3Bdrop", Backend::Postgres)
            .unwrap();
        assert_eq!(
            Names::new(&bad, &settings).unwrap_err().kind(),
            ErrorKind::Config
        );
        let mut long = settings.clone();
        long.app_role = Some("a".repeat(40));
        let my = ServerOptions::parse("mysql://127.0.0.1:3306/shop", Backend::MySql).unwrap();
        assert!(Names::new(&my, &long).unwrap_err().message().contains("32"));
        let none = ServerOptions::parse("mysql://127.0.0.1:3306/", Backend::MySql).unwrap();
        assert!(Names::new(&none, &settings).is_err());
    }
}
