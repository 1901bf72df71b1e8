//! `--self-setup`: create what the task needs, idempotently, under a lock: on SQLite a private
//! file under the directory lock; on a server the database and its roles, with an
//! administrator's rights, under the server-wide lock.
//!
//! How cleanup knows what setup created on a server: setup records it in the `_commondb_setup`
//! table of the database (`database` created or found, `role:<name>` created or found).
//! Cleanup drops a database only if it is recorded as created, a role only if recorded as
//! created, and refuses a database without that table.
//!
//! How a kill at any point is survived: before a step creates the database or a role (or gives
//! a role a password), setup writes it to its journal, the `pending` list of the app secrets
//! file, with the password; the list is emptied once `_commondb_setup` records the step. The
//! next setup takes what the journal names as its own and makes the server match the file;
//! cleanup drops it too.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::backend::sqlite::{self, DirLock};
use super::backend::{
    Conn, MARKER_TABLE, ServerDialect, ServerOptions, check_identifier, generate_password,
};
use super::requests;
use super::roles::{Names, as_admin};
use super::schema::{self, MigrationInfo, SchemaState};
use super::{Backend, Migrations, Target};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::secrets::{self, AppSecrets, Credentials, DatabaseSecrets};

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
    /// The brokers' streams and queues made sure of (the durable listeners `serve.listen`
    /// names; set by the mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<String>,
}

/// A role setup made sure of.
#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    /// Its name.
    pub name: String,
    /// Whether this run created it.
    pub created: bool,
    /// Whether this run gave it a new password (`--rotate-credentials`).
    pub rotated: bool,
}

impl SetupReport {
    /// Whether the run changed nothing.
    pub fn unchanged(&self) -> bool {
        !self.created
            && self.applied.is_empty()
            && !self.secrets_written
            && self.roles.iter().all(|r| !r.created && !r.rotated)
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
            let state = match (role.created, role.rotated) {
                (true, _) => "created",
                (false, true) => "exists, new password",
                (false, false) => "exists",
            };
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
        }?;
        for broker in &self.brokers {
            write!(f, "\n  broker:   {broker}")?;
        }
        Ok(())
    }
}

/// Sets up `target` for `migrations`: creates the database if it is missing (on a server, its
/// roles too) and applies the pending migrations. Safe to run many times and from many
/// processes at once.
pub(crate) async fn run(target: &Target, migrations: &Migrations) -> Result<SetupReport> {
    target.location.setup(target, migrations, false).await
}

/// `--self-setup --rotate-credentials`: setup as [`run`], and new passwords for the app and
/// backup roles (those setup created), written to the secrets file first (setup's journal), then
/// given to the server. Connections open with the old ones stay open; a running `--serve` reads
/// the new ones at its next connect or on SIGHUP.
pub(crate) async fn rotate(target: &Target, migrations: &Migrations) -> Result<SetupReport> {
    target.location.setup(target, migrations, true).await
}

/// `--self-setup` on SQLite.
pub(crate) async fn sqlite(
    target: &Target,
    path: &Path,
    migrations: &Migrations,
) -> Result<SetupReport> {
    let settings = &target.settings;
    secrets::create_private_dir(sqlite::dir_of(path))?;
    let _lock = DirLock::of_database(path, settings).await?;
    let (mut conn, created) = sqlite::create(path, settings).await?;
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
        brokers: Vec::new(),
    })
}

/// `--self-setup` on a server.
pub(crate) async fn server(
    target: &Target,
    server: &ServerOptions,
    migrations: &Migrations,
    rotate: bool,
) -> Result<SetupReport> {
    let names = Names::new(server, target)?;
    as_admin(target, server, async |admin, admin_options| {
        let on = Server {
            options: server,
            admin_options,
            rotate,
        };
        setup_locked(target, &on, &names, admin, migrations).await
    })
    .await
}

/// The server setup runs on: its options, the administrator's, and whether to rotate.
struct Server<'a> {
    options: &'a ServerOptions,
    admin_options: &'a ServerOptions,
    rotate: bool,
}

async fn setup_locked(
    target: &Target,
    on: &Server<'_>,
    names: &Names,
    admin: &mut Conn,
    migrations: &Migrations,
) -> Result<SetupReport> {
    let (server, admin_options) = (on.options, on.admin_options);
    let settings = &target.settings;
    let d = server.dialect();
    let db_q = d.quote(&names.database);
    let display = server.display();
    let mut journal = Journal::open(secrets::app_file(settings, target.exe), &display)?;

    interrupt::check()?;
    let created = admin
        .count_named(d.database_exists(), &names.database)
        .await?
        == 0;
    if created {
        journal.begin("database")?;
        if let Err(e) = admin.exec(d.create_database(&db_q)).await {
            // Not ours after all (made meanwhile by someone else, or refused): say so.
            journal.forget("database")?;
            return Err(e);
        }
    }
    let mut db = admin_options
        .with_database(&names.database)
        .connect(settings)
        .await?;
    db.exec(d.marker_table().to_string()).await?;
    // A database the journal names was created by a setup interrupted before it could say so.
    db.exec(d.mark("database", created || journal.is_pending("database")))
        .await?;
    let ours = db.marker("database").await? == Some(true);

    let mut roles = Roles {
        admin,
        db: &mut db,
        d,
        journal: &mut journal,
        rotate: on.rotate,
    };
    let app = roles.ensure(&names.app, false).await?;
    let backup = roles.ensure(&names.backup, true).await?;

    interrupt::check()?;
    let applied: Vec<MigrationInfo> = schema::migrate(&mut db, migrations).await?;
    let tables: Vec<String> = db
        .strings(d.tables())
        .await?
        .into_iter()
        .filter(|t| t != MARKER_TABLE && t != "_sqlx_migrations" && t != requests::TABLE)
        .collect();
    grant(&mut db, d, target, names, &tables, ours).await?;
    let SchemaState::Current { version } = schema::check(&mut db, migrations).await? else {
        return Err(Error::internal(
            "after applying the migrations the schema still differs from this program's",
        ));
    };
    db.close().await?;
    // Everything is recorded in the database now: the journal is done.
    journal.finish()?;
    Ok(SetupReport {
        backend: server.backend(),
        database: display,
        created,
        applied,
        schema_version: version,
        secrets_dir: settings.secrets_dir.clone(),
        roles: vec![app, backup],
        secrets_file: Some(journal.file),
        secrets_written: journal.written,
        brokers: Vec::new(),
    })
}

/// Gives the executable's role exactly the rights its task declares on `tables` (the domain's)
/// and its backup role read on all of them, then takes away any other right the role holds
/// there (one an earlier version declared): granted first, so a running task never lacks one.
async fn grant(
    db: &mut Conn,
    d: &dyn ServerDialect,
    target: &Target,
    names: &Names,
    tables: &[String],
    created_db: bool,
) -> Result<()> {
    let mut rights = Vec::new();
    for g in target.grants {
        if !tables.iter().any(|t| t == g.table) {
            return Err(Error::internal(format!(
                "{} declares rights on table {}, which its domain's migrations do not create",
                target.exe,
                g.table.escape_default()
            ))
            .hint("fix the task's GRANTS: name the tables of its domain"));
        }
        rights.push((d.quote(g.table), g.rights));
    }
    let writes = requests::writes(target.grants);
    if writes {
        rights.push((d.quote(requests::TABLE), requests::RIGHTS));
    }
    let quoted: Vec<String> = tables
        .iter()
        .map(|t| check_identifier(t).map(|_| d.quote(t)))
        .collect::<Result<_>>()?;
    let (app, backup) = (d.quote(&names.app), d.quote(&names.backup));
    let db_q = d.quote(&names.database);
    for sql in d.grants(&db_q, &quoted, &rights, &app, &backup, created_db) {
        db.exec(sql).await?;
    }
    for held in db.strings_named(d.held_rights(), &names.app).await? {
        let Some((table, right)) = held.split_once(':') else {
            continue;
        };
        let declared = |t: &str| {
            target
                .grants
                .iter()
                .any(|g| g.table == t && g.rights.iter().any(|r| r.sql() == right))
        };
        let harness = (table == "_sqlx_migrations" && right == "SELECT")
            || (writes
                && table == requests::TABLE
                && requests::RIGHTS.iter().any(|r| r.sql() == right));
        if declared(table) || harness {
            continue;
        }
        // Both come from the server's catalog; still, nothing unchecked goes into SQL.
        check_identifier(table)?;
        if !right.chars().all(|c| c.is_ascii_uppercase() || c == ' ') {
            return Err(Error::internal(format!(
                "the server reports an odd right {right:?}"
            )));
        }
        db.exec(d.revoke(&db_q, &d.quote(table), right, &app))
            .await?;
    }
    Ok(())
}

/// Setup's journal, kept in the executable's secrets file beside the credentials it is about,
/// in the entry of this database: each step that creates or changes something on the server is
/// written down (with the password it will set) before it acts, and the list is emptied once
/// the database records everything. A setup killed between two statements thus leaves a file
/// saying what may exist and is ours. The entries of other databases are kept as they are.
struct Journal {
    file: std::path::PathBuf,
    secrets: AppSecrets,
    /// The database this setup is about, as the entry's key.
    database: String,
    /// Whether the file on disk has no entry for it yet.
    stale: bool,
    /// Whether this run wrote the file.
    written: bool,
}

impl Journal {
    /// The journal for `database` in `file`.
    fn open(file: std::path::PathBuf, database: &str) -> Result<Journal> {
        let secrets = secrets::load::<AppSecrets>(&file)?.unwrap_or_default();
        let stale = !secrets.databases.contains_key(database);
        Ok(Journal {
            file,
            secrets,
            database: database.to_string(),
            stale,
            written: false,
        })
    }

    /// This database's entry.
    fn entry(&mut self) -> &mut DatabaseSecrets {
        self.secrets
            .databases
            .entry(self.database.clone())
            .or_default()
    }

    fn is_pending(&self, item: &str) -> bool {
        self.secrets
            .databases
            .get(&self.database)
            .is_some_and(|e| e.is_pending(item))
    }

    fn save(&mut self) -> Result<()> {
        secrets::write(&self.file, &self.secrets.to_toml())?;
        self.written = true;
        Ok(())
    }

    /// Writes down that `item` is about to be created or changed.
    fn begin(&mut self, item: &str) -> Result<()> {
        if !self.is_pending(item) {
            self.entry().pending.push(item.to_string());
        }
        self.save()
    }

    /// Takes `item` off the list (it was not created after all).
    fn forget(&mut self, item: &str) -> Result<()> {
        self.entry().pending.retain(|p| p != item);
        self.save()
    }

    /// Empties the list; writes the file if anything is to change in it (what is on disk is
    /// what `open` read, or what `save` last wrote).
    fn finish(&mut self) -> Result<()> {
        let entry = self.entry();
        let changes = !entry.pending.is_empty();
        entry.pending.clear();
        if changes || self.stale {
            self.stale = false;
            self.save()?;
        }
        Ok(())
    }
}

/// Makes sure login role `name` exists, is marked as ours if setup made it, and has the
/// password the secrets file holds. The file's password is written (with the role on the
/// journal) before the server is told it, so no kill can leave a role whose password no one
/// knows.
/// What making sure of a role needs: the administrator's connection, the database's, the
/// dialect, setup's journal, and whether to give the role a new password.
struct Roles<'a> {
    admin: &'a mut Conn,
    db: &'a mut Conn,
    d: &'a dyn ServerDialect,
    journal: &'a mut Journal,
    rotate: bool,
}

impl Roles<'_> {
    /// Makes sure of role `name` (the backup role with `backup`): created with a new password,
    /// or found with the password the secrets file records (a new one with rotation).
    async fn ensure(&mut self, name: &str, backup: bool) -> Result<RoleReport> {
        interrupt::check()?;
        let quoted = self.d.quote(name);
        let item = format!("role:{name}");
        let exists = self.admin.count_named(self.d.role_exists(), name).await? > 0;
        let known = self
            .journal
            .secrets
            .for_role(&self.journal.database, name, backup)
            .map(|c| c.password.clone());
        let pending = self.journal.is_pending(&item);
        let mut report = RoleReport {
            name: name.to_string(),
            created: !exists,
            rotated: false,
        };
        if exists && !pending {
            self.db.exec(self.d.mark(&item, false)).await?;
            if known.is_some() && !self.rotate {
                return Ok(report);
            }
            // The role is there but its password is not in the secrets file (or is to be
            // rotated): if setup made the role, it may give it a new one; a role someone else made
            // is not ours to change.
            if self.db.marker(&item).await? != Some(true) {
                return Err(Error::config(format!(
                    "role {name} already exists, setup did not create it, and its password is {}",
                    if self.rotate {
                        "not setup's to self.rotate".to_string()
                    } else {
                        format!("not in {}", self.journal.file.display())
                    }
                ))
                .hint("write its user and password to that file (app or backup in the database's table), or set app_role / backup_role to a new name"));
            }
            report.rotated = self.rotate && known.is_some();
        }
        // From here the file's password is the one the server must have: record it first. A step
        // an interrupted setup left pending is finished with the password it wrote down.
        let password = match known {
            Some(p) if pending || !self.rotate => p,
            _ => generate_password()?,
        };
        let creds = Some(Credentials {
            user: name.to_string(),
            password: password.clone(),
        });
        if backup {
            self.journal.entry().backup = creds;
        } else {
            self.journal.entry().app = creds;
        }
        self.journal.begin(&item)?;
        let verifier = self.d.verifier(&password)?;
        if exists {
            self.admin
                .exec(self.d.set_password(&quoted, &verifier))
                .await?;
        } else {
            self.admin
                .exec(self.d.create_role(&quoted, &verifier))
                .await?;
        }
        // On the self.journal means setup made it (or was giving its own role a new password).
        self.db.exec(self.d.mark(&item, true)).await?;
        Ok(report)
    }
}
