//! The roles on a server: the names setup and cleanup work with, the administrator's
//! connection under the server-wide setup lock, and the options the app and backup roles
//! connect with.

use std::time::{Duration, Instant};

use super::Target;
use super::backend::options::admin_options;
use super::backend::{Conn, ServerDialect, ServerOptions, check_identifier};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::secrets;

/// The validated names setup and cleanup work with.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub database: String,
    pub app: String,
    pub backup: String,
}

impl Names {
    /// The names for `target`'s executable on `server`: the database the URL names, and the
    /// executable's own roles, `<database>_<executable>` and `<database>_<executable>_backup`
    /// (`-` read as `_`, shortened with a hash where the server's limit is shorter), unless
    /// `app_role` / `backup_role` name them.
    pub(crate) fn new(server: &ServerOptions, target: &Target) -> Result<Names> {
        let settings = &target.settings;
        let database = server.database().ok_or_else(|| {
            Error::config("the database URL names no database")
                .hint("end it with the database's name, e.g. postgres://127.0.0.1:5432/shop")
        })?;
        check_identifier(database)?;
        let max = server.dialect().max_role_len();
        let exe = target.exe.replace('-', "_");
        let app = match &settings.app_role {
            Some(role) => role.clone(),
            None => derived(&format!("{database}_{exe}"), max),
        };
        let backup = match &settings.backup_role {
            Some(role) => role.clone(),
            None => derived(&format!("{database}_{exe}_backup"), max),
        };
        for role in [&app, &backup] {
            check_identifier(role)?;
            if role.len() > max {
                return Err(Error::config(format!(
                    "role name {role} is longer than {} allows ({max} characters)",
                    server.backend().name()
                ))
                .hint("set app_role and backup_role to shorter names"));
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

/// `name` if it fits in `max` characters, else its start and a hash of the whole (so that two
/// long names that share a start still differ).
fn derived(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = crate::task::fnv1a(name);
    // ASCII only (checked identifiers), so any byte is a character boundary.
    format!("{}_{hash:08x}", &name[..max - 9])
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
    let names = Names::new(server, target)?;
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

/// The options the task connects with: its own role's (or its backup role's), from its
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
    let names = Names::new(server, target)?;
    let role = if backup { &names.backup } else { &names.app };
    let display = server.display();
    if let Some(creds) = target.secrets.for_role(&display, role, backup) {
        return Ok(server.with_credentials(creds));
    }
    let (now, file) = secrets::load_app(&target.settings, target.exe)?;
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
    fn names_are_the_executables_own_and_are_validated() {
        let (_dir, settings) = crate::testing::scratch();
        let target = crate::testing::target(&settings);
        let pg = ServerOptions::parse("postgres://127.0.0.1:5432/shop", Backend::Postgres).unwrap();
        let n = Names::new(&pg, &target).unwrap();
        assert_eq!(
            (n.database.as_str(), n.app.as_str(), n.backup.as_str()),
            ("shop", "shop_notes", "shop_notes_backup")
        );
        let bad = ServerOptions::parse("postgres://127.0.0.1:5432/shop%3Bdrop", Backend::Postgres)
            .unwrap();
        assert_eq!(
            Names::new(&bad, &target).unwrap_err().kind(),
            ErrorKind::Config
        );
        // A derived name too long for MySQL is shortened, stably, and two stay apart.
        let long = ServerOptions::parse(
            "mysql://127.0.0.1:3306/a_rather_long_database_name",
            Backend::MySql,
        )
        .unwrap();
        let n = Names::new(&long, &target).unwrap();
        assert!(n.app.len() <= 32 && n.backup.len() <= 32, "{n:?}");
        assert!(n.app.starts_with("a_rather_long_") && n.app != n.backup);
        assert_eq!(n.app, Names::new(&long, &target).unwrap().app);
        // A configured name too long is refused, not cut.
        let mut configured = target;
        configured.settings.app_role = Some("a".repeat(40));
        let my = ServerOptions::parse("mysql://127.0.0.1:3306/shop", Backend::MySql).unwrap();
        assert!(
            Names::new(&my, &configured)
                .unwrap_err()
                .message()
                .contains("32")
        );
        let none = ServerOptions::parse("mysql://127.0.0.1:3306/", Backend::MySql).unwrap();
        assert!(Names::new(&none, &configured).is_err());
    }
}
