//! A tiny task, `notes`, for the harness's own unit tests, and scratch settings to run it on.

use std::path::Path;

use tempfile::TempDir;

use crate::config::{Settings, Synchronous};
use crate::db::{Migrations, Target, Tx};
use crate::error::{Error, Result};
use crate::task::{Case, Context, Grant, Right, Task};

pub(crate) const V1: &Migrations = &Migrations {
    sqlite: sqlx::migrate!("testdata/notes/v1/sqlite"),
    postgres: sqlx::migrate!("testdata/notes/v1/postgres"),
    mysql: sqlx::migrate!("testdata/notes/v1/mysql"),
};
pub(crate) const V2: &Migrations = &Migrations {
    sqlite: sqlx::migrate!("testdata/notes/v2/sqlite"),
    postgres: sqlx::migrate!("testdata/notes/v2/postgres"),
    mysql: sqlx::migrate!("testdata/notes/v2/mysql"),
};
pub(crate) const DRIFTED: &Migrations = &Migrations {
    sqlite: sqlx::migrate!("testdata/notes/drifted/sqlite"),
    postgres: sqlx::migrate!("testdata/notes/drifted/postgres"),
    mysql: sqlx::migrate!("testdata/notes/drifted/mysql"),
};

pub(crate) struct Notes;

#[derive(clap::Args, Debug, serde::Serialize)]
pub(crate) struct NoteArgs {
    /// The note.
    #[arg(long)]
    pub text: String,
    /// Read a secret from stdin.
    #[arg(long)]
    pub secret_stdin: bool,
}

pub(crate) fn note(text: &str) -> NoteArgs {
    NoteArgs {
        text: text.into(),
        secret_stdin: false,
    }
}

impl Task for Notes {
    const NAME: &'static str = "notes";
    const VERSION: &'static str = "0.0.1";
    const ABOUT: &'static str = "Add a note";
    const VERB: &'static str = "add";
    const MIGRATIONS: &'static Migrations = V1;
    const GRANTS: &'static [Grant] = &[Grant::on("notes", &[Right::Select, Right::Insert])];
    type Args = NoteArgs;
    type Request = String;
    type Output = i64;
    type Settings = ();

    fn prepare(args: NoteArgs, ctx: &mut Context<'_, ()>) -> Result<String> {
        if args.secret_stdin {
            ctx.read_secret_line("secret")?;
        }
        if args.text.is_empty() {
            return Err(Error::invalid_input("empty note"));
        }
        Ok(args.text)
    }

    async fn execute(tx: &mut Tx<'_>, text: String) -> Result<i64> {
        tx.insert("INSERT INTO notes (text) VALUES (?)", "id", (text,))
            .await
    }

    fn sample(n: u64, run: &str) -> NoteArgs {
        note(&format!("{run}-{n}"))
    }

    fn invalid_sample() -> NoteArgs {
        note("")
    }

    fn cases() -> Vec<Case<NoteArgs>> {
        vec![
            Case::new("a note is stored", note("hello"))
                .then_count("SELECT COUNT(*) FROM notes WHERE text = 'hello'", 1),
            Case::new("the same note twice is a conflict", note("hello"))
                .fails_with(crate::ErrorKind::Conflict),
        ]
    }
}

/// `notes` one schema version later (a `tag` column added): the same task otherwise.
pub(crate) struct NotesV2;

impl Task for NotesV2 {
    const NAME: &'static str = Notes::NAME;
    const VERSION: &'static str = "0.0.2";
    const ABOUT: &'static str = Notes::ABOUT;
    const VERB: &'static str = Notes::VERB;
    const MIGRATIONS: &'static Migrations = V2;
    const GRANTS: &'static [Grant] = Notes::GRANTS;
    type Args = NoteArgs;
    type Request = String;
    type Output = i64;
    type Settings = ();

    fn prepare(args: NoteArgs, ctx: &mut Context<'_, ()>) -> Result<String> {
        Notes::prepare(args, ctx)
    }

    async fn execute(tx: &mut Tx<'_>, text: String) -> Result<i64> {
        Notes::execute(tx, text).await
    }

    fn sample(n: u64, run: &str) -> NoteArgs {
        Notes::sample(n, run)
    }

    fn invalid_sample() -> NoteArgs {
        Notes::invalid_sample()
    }
}

/// Settings whose data and secrets directories are inside a fresh temporary directory.
pub(crate) fn scratch() -> (TempDir, Settings) {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_in(dir.path());
    (dir, settings)
}

/// Makes a FIFO at `path`, for tests of what must not wait on one.
pub(crate) fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .expect("a FIFO can be made");
}

/// Settings for a test whose directories live in `dir`.
pub(crate) fn settings_in(dir: &Path) -> Settings {
    Settings {
        database_url: None,
        data_dir: dir.join("data"),
        secrets_dir: dir.join("secrets"),
        busy_timeout_ms: 5_000,
        lock_timeout_ms: 5_000,
        connect_timeout_ms: 5_000,
        connect_retry_ms: 5_000,
        app_role: None,
        backup_role: None,
        backup_dir: None,
        backup_keep: 7,
        synchronous: Synchronous::Full,
        task: serde_json::Value::Null,
        serve: Default::default(),
        // Unit tests never read the credentials of the process that runs them.
        app_credentials: false,
    }
}

pub(crate) fn target(settings: &Settings) -> Target {
    Target::of::<Notes>(settings).unwrap()
}
