//! `--self-test`: the executable tests itself on a throwaway database.
//!
//! The scratch database lives in a fresh temporary directory; the configured database, data
//! directory and secrets are never opened. The generic lifecycle checks run for every task,
//! then the task's own cases; each prints one line, and the run ends with `N passed, N failed`.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use serde::Serialize;

use crate::backup::{self, file};
use crate::config::Settings;
use crate::db::backend::sqlite::DirLock;
use crate::db::backend::{LocationKind, random_bytes};
use crate::db::{self, Location, Target, cleanup, schema, setup};
use crate::error::{Error, ErrorKind, Result};
use crate::output::Output;
use crate::run::{Drivers, block_on, perform};
use crate::secrets::{self, ExposeSecret};
use crate::serve;
use crate::stream::RowSink;
use crate::task::{Case, Input, Repeat, Right, Task};

/// The outcome of one case.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    /// What the case checks, as a sentence.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long it took.
    pub millis: u64,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            None => write!(f, "ok    {} ({} ms)", self.name, self.millis),
            Some(r) => write!(f, "FAIL  {}: {r}", self.name),
        }
    }
}

/// The whole run, for `--json`.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Every case, in the order run.
    pub cases: Vec<CaseResult>,
    /// How many passed.
    pub passed: usize,
    /// How many failed.
    pub failed: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

/// Runs the self-test of task `T`, printing a line per case unless `--json`.
///
/// On a server the scratch database and its roles get a random suffix; they are dropped at the
/// end whatever happened, also when the run is interrupted (Ctrl-C or SIGTERM), which then ends
/// with [`ErrorKind::Interrupted`]. What a run killed outright (SIGKILL) left behind, its
/// scratch directory and the database it names, is removed by the next run.
pub(crate) fn run<T: Task>(settings: &Settings, out: &Output) -> Result<Report> {
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{}-self-test-{}-", T::NAME, std::process::id()))
        .tempdir()
        .map_err(|e| {
            Error::temporary(format!(
                "cannot create a scratch directory for the self-test: {e}"
            ))
            .hint("check TMPDIR and free space")
        })?;
    // Held until the run ends, however it ends: a scratch directory whose lock is free is
    // what a killed self-test left, and the next one removes it.
    let _in_use = DirLock::try_acquire(scratch.path())?.ok_or_else(|| {
        Error::temporary(format!("cannot lock {}", scratch.path().display())).hint("check TMPDIR")
    })?;
    let scratch_settings = scratch_settings(settings, scratch.path(), T::NAME)?;
    let target = Target::of::<T>(&scratch_settings)?;
    let task_settings = settings.task_settings::<T::Settings>()?;
    let mut suite = Suite {
        report: Report::default(),
        out: *out,
    };
    let interrupted = block_on(Drivers::Io, async {
        remove_stale::<T>(settings, out).await;
        let interrupted = tokio::select! {
            () = lifecycle::<T>(&mut suite, &target, &task_settings) => false,
            () = crate::interrupt::signalled() => true,
        };
        target
            .location
            .drop_scratch(&target, SCRATCH_PREFIX)
            .await?;
        Ok(interrupted)
    })?;
    if interrupted {
        return Err(Error::new(
            ErrorKind::Interrupted,
            format!(
                "the self-test was interrupted after {} case(s)",
                suite.report.cases.len()
            ),
        )
        .hint("its scratch database was removed; run it again"));
    }
    Ok(suite.report)
}

/// The file in a scratch directory that names its scratch database on a server (no
/// credentials), written before the database is made.
const SCRATCH_RECORD: &str = "scratch-database";

/// How the names of scratch databases on a server begin.
const SCRATCH_PREFIX: &str = "st_";

/// Removes what self-tests of `T` killed before their end left behind: each scratch directory
/// of this user whose lock is free, and on a server the scratch database and roles it names.
/// What cannot be removed is reported and left for the next run.
async fn remove_stale<T: Task>(settings: &Settings, out: &Output) {
    let prefix = format!("{}-self-test-", T::NAME);
    let me = rustix::process::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // `<exe>-self-test-<pid>-<random>`: a live process may not have locked it yet.
        let Some(pid) = entry.file_name().to_str().and_then(|n| {
            let rest = n.strip_prefix(&prefix)?;
            rest.split('-').next()?.parse::<u32>().ok()
        }) else {
            continue;
        };
        let ours = !Path::new(&format!("/proc/{pid}")).exists()
            && entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        let Some(_stale) = ours
            .then(|| DirLock::try_acquire(&path).ok().flatten())
            .flatten()
        else {
            continue;
        };
        match remove_scratch::<T>(settings, &path).await {
            Ok(what) => out.note(format_args!(
                "removed what an interrupted self-test left: {what}"
            )),
            Err(e) => out.note(format_args!(
                "could not remove what an interrupted self-test left in {}: {}",
                path.display(),
                e.message()
            )),
        }
    }
}

/// Drops the scratch database and roles that stale directory `dir` names, then the directory.
async fn remove_scratch<T: Task>(settings: &Settings, dir: &Path) -> Result<String> {
    let mut removed = Vec::new();
    if let Ok(url) = std::fs::read_to_string(dir.join(SCRATCH_RECORD)) {
        let mut scratch = settings.clone();
        scratch.secrets_dir = dir.join("secrets");
        scratch.app_credentials = false;
        scratch.app_role = None;
        scratch.backup_role = None;
        scratch.database_url = Some(url.trim().to_string());
        let target = Target::of::<T>(&scratch)?;
        // Only a name the self-test makes: never drop anything else on a record's word.
        let dropped = target
            .location
            .drop_scratch(&target, SCRATCH_PREFIX)
            .await
            .map_err(|e| {
                let record = dir.join(SCRATCH_RECORD);
                Error::config(format!("{}: {}", record.display(), e.message()))
            })?;
        removed.extend(dropped);
    }
    std::fs::remove_dir_all(dir)
        .map_err(|e| Error::permission(format!("cannot remove {}: {e}", dir.display())))?;
    removed.push(dir.display().to_string());
    Ok(removed.join(", "))
}

/// The settings of the scratch run: the configured backend and timeouts, but a database, data
/// directory and secrets directory of its own. On a server the database is named
/// `st_<executable>_<random>`, its roles after it; the administrator's credentials are the
/// configured ones.
fn scratch_settings(settings: &Settings, dir: &std::path::Path, exe: &str) -> Result<Settings> {
    let mut scratch = settings.clone();
    scratch.data_dir = dir.join("data");
    scratch.secrets_dir = dir.join("secrets");
    // Its roles' secrets are its own, never the credentials systemd passed for the real ones.
    scratch.app_credentials = false;
    scratch.app_role = None;
    scratch.backup_role = None;
    scratch.database_url = None;
    scratch.backup_dir = Some(dir.join("backups"));
    let configured = match &settings.database_url {
        Some(url) => Some(Location::parse(url)?),
        None => None,
    };
    let name = || -> Result<String> {
        let suffix = hex::encode(random_bytes::<4>()?);
        let exe: String = exe
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(10)
            .collect();
        Ok(format!(
            "{SCRATCH_PREFIX}{}_{suffix}",
            exe.to_ascii_lowercase()
        ))
    };
    let url = match (configured, &settings.database_url) {
        (Some(configured), Some(url)) => configured.scratch_url(url, name)?,
        _ => None,
    };
    if let Some(url) = url {
        // Written before anything is made, for the next self-test if this one is killed.
        std::fs::write(dir.join(SCRATCH_RECORD), format!("{url}\n")).map_err(|e| {
            Error::temporary(format!("cannot write in the scratch directory: {e}"))
                .hint("check TMPDIR and free space")
        })?;
        scratch.database_url = Some(url);
        if let Some(url) = secrets::admin_url(settings)?
            && std::env::var_os(secrets::ADMIN_URL_VAR).is_none()
        {
            let text = format!(
                "url = {}\n",
                toml::Value::String(url.expose_secret().to_string())
            );
            secrets::write(&secrets::admin_file(&scratch), &text)?;
        }
    }
    Ok(scratch)
}

struct Suite {
    report: Report,
    out: Output,
}

impl Suite {
    async fn case<F: Future<Output = std::result::Result<(), String>>>(
        &mut self,
        name: impl Into<String>,
        check: F,
    ) {
        let started = Instant::now();
        let outcome = check.await;
        let result = CaseResult {
            name: name.into(),
            passed: outcome.is_ok(),
            reason: outcome.err(),
            millis: started.elapsed().as_millis() as u64,
        };
        if result.passed {
            self.report.passed += 1;
        } else {
            self.report.failed += 1;
        }
        if !self.out.json() {
            println!("{result}");
        }
        self.report.cases.push(result);
    }
}

/// A run id unique to this process, for sample requests.
pub(crate) fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("t{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}

/// What the generic checks share: the scratch target, the task's settings, this run's id, and
/// what one check leaves for a later one (the backup the round trip took).
struct Ctx<'a, T: Task> {
    target: &'a Target,
    task_settings: &'a T::Settings,
    run: String,
    quiet: Output,
    taken: RefCell<Option<(PathBuf, file::Header)>>,
}

impl<T: Task> Ctx<'_, T> {
    /// Runs the task on `args` as process mode would.
    async fn attempt(&self, args: T::Args, input: Input) -> Result<()> {
        let mut nowhere = RowSink::discard();
        perform::<T>(
            self.target,
            self.task_settings,
            args,
            input,
            &self.quiet,
            &mut nowhere,
        )
        .await
        .map(drop)
    }

    /// Runs sample request `n`.
    async fn sample(&self, n: u64) -> Result<()> {
        let input = T::sample_input(n, &self.run).map_or(Input::None, Input::Text);
        self.attempt(T::sample(n, &self.run), input).await
    }
}

/// What a check found: nothing wrong, or what was.
type Outcome = std::result::Result<(), String>;

/// A running check.
type Checking<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// Where a generic check applies: on every database, or on one kind only (each kind promises
/// something of its own: a private file; roles with the least rights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Every,
    Only(LocationKind),
}

impl On {
    const EMBEDDED: On = On::Only(LocationKind::Embedded);
    const SERVER: On = On::Only(LocationKind::Server);

    fn covers(self, kind: LocationKind) -> bool {
        self == On::Every || self == On::Only(kind)
    }
}

/// A generic check: its name as the report shows it, where it applies, and the small function
/// that runs it.
struct Check<T: Task> {
    name: &'static str,
    on: On,
    run: for<'a> fn(&'a Ctx<'a, T>) -> Checking<'a>,
}

impl<T: Task> Check<T> {
    const fn new(
        name: &'static str,
        on: On,
        run: for<'a> fn(&'a Ctx<'a, T>) -> Checking<'a>,
    ) -> Check<T> {
        Check { name, on, run }
    }
}

/// How many sample requests the self-test's seed is for (it uses samples 1 and 2).
const SEEDED_SAMPLES: u64 = 4;

/// The generic checks that run before the task's own cases, in order.
fn checks_before<T: Task>() -> Vec<Check<T>> {
    let repeat = match T::on_repeat() {
        Repeat::Conflict => Check::new(
            "repeating sample request 1 is refused as a conflict and writes nothing",
            On::Every,
            repeat_is_a_conflict,
        ),
        Repeat::Succeeds => Check::new("repeating sample request 1 succeeds", On::Every, |c| {
            Box::pin(async { c.sample(1).await.map_err(show) })
        }),
        Repeat::NotFound => Check::new(
            "repeating sample request 1 finds nothing and writes nothing",
            On::Every,
            |c| Box::pin(refused(c.target, ErrorKind::NotFound, c.sample(1))),
        ),
    };
    let mut checks = vec![
        Check::new(
            "setup creates the database, private to its owner",
            On::EMBEDDED,
            setup_creates_a_private_file,
        ),
        Check::new(
            "setup creates the database and its roles, and keeps their passwords private",
            On::SERVER,
            setup_creates_the_roles,
        ),
        Check::new(
            "setup run again changes nothing",
            On::Every,
            setup_again_changes_nothing,
        ),
    ];
    // A task that reads or changes rows finds what its domain's other tasks wrote: its seed
    // stands in for them.
    if T::SEEDS {
        checks.push(Check::new(
            "the rows the samples need are seeded",
            On::Every,
            seed_rows,
        ));
    }
    checks.extend([
        Check::new("sample request 1 succeeds", On::Every, |c| {
            Box::pin(async { c.sample(1).await.map_err(show) })
        }),
        repeat,
        Check::new(
            "an invalid request is refused as invalid input and writes nothing",
            On::Every,
            invalid_is_refused,
        ),
        Check::new(
            "the app role can neither create nor drop a table",
            On::SERVER,
            app_role_cannot_change_the_schema,
        ),
        Check::new(
            "the app role is refused every right on the domain's tables that the task does not declare",
            On::SERVER,
            app_role_has_only_its_grants,
        ),
        Check::new(
            "the backup role can read the tables but not change them",
            On::SERVER,
            backup_role_only_reads,
        ),
    ]);
    checks
}

/// The generic checks that run after the task's own cases, in order.
fn checks_after<T: Task>() -> Vec<Check<T>> {
    vec![
        Check::new(
            "a restore puts back every row and column of a backup, and later requests succeed",
            On::Every,
            restore_round_trip,
        ),
        Check::new(
            "a damaged or truncated backup is refused and the data is left as it was",
            On::Every,
            damaged_backup_is_refused,
        ),
        Check::new(
            "retention keeps the newest backups and removes the older ones",
            On::Every,
            retention_keeps_the_newest,
        ),
        Check::new(
            "--serve answers sample requests over the line protocol and HTTP, then stops",
            On::Every,
            serve_answers,
        ),
        Check::new(
            "cleanup removes the database and leaves nothing behind",
            On::EMBEDDED,
            cleanup_removes_the_file,
        ),
        Check::new(
            "cleanup drops the database and its roles and leaves nothing behind",
            On::SERVER,
            cleanup_drops_everything,
        ),
    ]
}

/// The generic checks around the task's own cases.
async fn lifecycle<T: Task>(suite: &mut Suite, target: &Target, task_settings: &T::Settings) {
    let ctx = Ctx::<T> {
        target,
        task_settings,
        run: run_id(),
        quiet: Output::silent(T::NAME),
        taken: RefCell::new(None),
    };
    let here = target.location.kind();
    let applies = |c: &Check<T>| c.on.covers(here);
    for check in checks_before::<T>().iter().filter(|c| applies(c)) {
        suite.case(check.name, (check.run)(&ctx)).await;
    }
    for case in T::cases() {
        task_case(suite, &ctx, case).await;
    }
    for check in checks_after::<T>().iter().filter(|c| applies(c)) {
        suite.case(check.name, (check.run)(&ctx)).await;
    }
}

/// One of the task's own cases: the rows it is given, its request, the outcome it expects,
/// the count it checks. The rows are written and counted as the owner: the task's own role may
/// be allowed neither.
async fn task_case<T: Task>(suite: &mut Suite, ctx: &Ctx<'_, T>, case: Case<T::Args>) {
    let Case {
        name,
        args,
        input,
        expect: expected,
        count,
        given,
    } = case;
    let input = input.map_or(Input::None, |t| Input::Text(t.to_string()));
    let target = ctx.target;
    let as_owner = async |sql: &'static str, count: bool| {
        target
            .location
            .as_owner(target, T::MIGRATIONS, async |conn: &mut db::Conn| {
                if count {
                    conn.count(sql).await
                } else {
                    conn.exec(sql.to_string()).await.map(|()| 0)
                }
            })
            .await
            .map_err(show)
    };
    suite
        .case(name, async {
            for sql in given {
                as_owner(sql, false).await?;
            }
            match expected {
                Some(kind) => refused(target, kind, ctx.attempt(args, input)).await?,
                None => ctx.attempt(args, input).await.map_err(show)?,
            }
            if let Some((sql, n)) = count {
                let got = as_owner(sql, true).await?;
                expect(got == n, &format!("{sql} returned {got}, expected {n}"))?;
            }
            Ok(())
        })
        .await;
}

fn setup_creates_a_private_file<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let r = setup::run(c.target, T::MIGRATIONS).await.map_err(show)?;
        expect(r.created, "setup did not report creating the database")?;
        expect(!r.applied.is_empty(), "setup applied no migration")?;
        let path = c
            .target
            .location
            .file()
            .ok_or("the database is not a file")?;
        expect(mode_of(path) == 0o600, "the database file is not mode 0600")?;
        let dir = path.parent().unwrap_or(path);
        expect(mode_of(dir) == 0o700, "the data directory is not mode 0700")
    })
}

fn setup_creates_the_roles<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let r = setup::run(c.target, T::MIGRATIONS).await.map_err(show)?;
        expect(r.created, "setup did not report creating the database")?;
        expect(!r.applied.is_empty(), "setup applied no migration")?;
        expect(
            r.roles.len() == 2 && r.roles.iter().all(|r| r.created),
            "setup did not create both roles",
        )?;
        let file = r
            .secrets_file
            .as_deref()
            .ok_or("setup wrote no secrets file")?;
        expect(
            mode_of(file) == 0o600,
            "the app secrets file is not mode 0600",
        )
    })
}

fn seed_rows<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let seeded = db::seed::<T>(c.target, &c.run, SEEDED_SAMPLES)
            .await
            .map_err(show)?;
        expect(seeded > 0, "the task's seed wrote no row")
    })
}

fn setup_again_changes_nothing<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let r = setup::run(c.target, T::MIGRATIONS).await.map_err(show)?;
        expect(r.unchanged(), "the second setup changed something")
    })
}

fn repeat_is_a_conflict<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(refused(c.target, ErrorKind::Conflict, c.sample(1)))
}

fn invalid_is_refused<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(refused(
        c.target,
        ErrorKind::InvalidInput,
        c.attempt(T::invalid_sample(), Input::None),
    ))
}

fn app_role_cannot_change_the_schema<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let (table, _) = counts(c.target)
            .await?
            .into_iter()
            .next()
            .ok_or("no table")?;
        let table = c.target.backend().quote(&table);
        let mut app = db::connect(c.target).await.map_err(show)?;
        denied(&mut app, "CREATE TABLE commondb_self_test (id INT)".into()).await?;
        denied(&mut app, format!("DROP TABLE {table}")).await?;
        app.close().await.map_err(show)
    })
}

fn app_role_has_only_its_grants<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let target = c.target;
        // The backup role reads every table: it describes them.
        let mut reader = target.location.connect_reader(target).await.map_err(show)?;
        let names = schema::row_counts(&mut reader)
            .await
            .map_err(show)?
            .into_iter()
            .map(|(table, _)| table)
            .collect();
        let tables = reader.describe(names).await.map_err(show)?;
        reader.close().await.map_err(show)?;
        let mut app = db::connect(target).await.map_err(show)?;
        let backend = target.backend();
        for table in &tables {
            let declared = T::GRANTS
                .iter()
                .find(|g| g.table == table.name)
                .map_or(&[][..], |g| g.rights);
            let t = backend.quote(&table.name);
            let column = table.columns.first().ok_or("a table without columns")?;
            let col = backend.quote(&column.name);
            for right in Right::ALL.into_iter().filter(|r| !declared.contains(r)) {
                let sql = match right {
                    Right::Select => format!("SELECT COUNT(*) FROM {t}"),
                    Right::Insert => format!("INSERT INTO {t} SELECT * FROM {t} WHERE 1 = 0"),
                    Right::Update => format!("UPDATE {t} SET {col} = {col} WHERE 1 = 0"),
                    Right::Delete => format!("DELETE FROM {t} WHERE 1 = 0"),
                };
                denied(&mut app, sql).await?;
            }
        }
        app.close().await.map_err(show)
    })
}

fn backup_role_only_reads<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let mut backup = c
            .target
            .location
            .connect_reader(c.target)
            .await
            .map_err(show)?;
        let table = first_table(&mut backup).await?;
        denied(&mut backup, format!("DELETE FROM {table}")).await?;
        backup.close().await.map_err(show)
    })
}

fn restore_round_trip<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let target = c.target;
        let before = backup::backup::<T>(target, file::Kind::Backup)
            .await
            .map_err(show)?;
        expect(before.rows > 0, "the backup holds no rows")?;
        c.sample(2).await.map_err(show)?;
        let header = backup::verify::<T>(&before.file, target.backend()).map_err(show)?;
        let restored = backup::restore::<T>(target, &before.file, &header)
            .await
            .map_err(show)?;
        expect(
            restored.rows == before.rows,
            "the restore put back another number of rows",
        )?;
        let after = backup::backup::<T>(target, file::Kind::Backup)
            .await
            .map_err(show)?;
        let (a, b) = (file::rows(&before.file), file::rows(&after.file));
        expect(
            a.map_err(show)? == b.map_err(show)?,
            "the restored rows differ from the backup's",
        )?;
        c.sample(2).await.map_err(show)?;
        *c.taken.borrow_mut() = Some((before.file, header));
        Ok(())
    })
}

fn damaged_backup_is_refused<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let target = c.target;
        let (good, header) = c.taken.borrow().clone().ok_or("no backup to damage")?;
        let bytes = std::fs::read(&good).map_err(|e| e.to_string())?;
        let damaged = target.settings.backup_dir().join("damaged");
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x01;
        for (what, content) in [
            ("flipped byte", flipped),
            ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ] {
            std::fs::write(&damaged, content).map_err(|e| e.to_string())?;
            let label = |e: String| format!("a backup with a {what}: {e}");
            let verified = async { backup::verify::<T>(&damaged, target.backend()) };
            refused(target, ErrorKind::InvalidInput, verified)
                .await
                .map_err(label)?;
            // Without that verification first, the restore itself refuses the file as it
            // opens it, and changes nothing.
            let restored = backup::restore::<T>(target, &damaged, &header);
            refused(target, ErrorKind::InvalidInput, restored)
                .await
                .map_err(label)?;
        }
        std::fs::remove_file(&damaged).map_err(|e| e.to_string())
    })
}

fn retention_keeps_the_newest<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let target = c.target;
        let dir = target.settings.backup_dir();
        let newest = backup::backup::<T>(target, file::Kind::Backup)
            .await
            .map_err(show)?;
        let removed = backup::retention(target, T::DOMAIN, file::Kind::Backup, 1);
        expect(!removed.is_empty(), "retention removed nothing")?;
        let left = file::list(&dir, &backup::series(T::DOMAIN, &target.location)).map_err(show)?;
        let regular: Vec<_> = left
            .iter()
            .filter(|e| e.kind == file::Kind::Backup)
            .collect();
        expect(
            regular.len() == 1 && regular[0].path == newest.file,
            "retention did not keep exactly the newest backup",
        )?;
        expect(
            left.iter().any(|e| e.kind == file::Kind::Safety),
            "retention of backups removed the safety backups",
        )
    })
}

/// Two sample requests for the service, as JSON bodies with their secret input as `stdin`, of
/// a run of their own, seeded if the task reads or changes rows.
async fn served_samples<T: Task>(
    target: &Target,
    run: &str,
) -> std::result::Result<(String, String), String> {
    let run = format!("{run}v");
    if T::SEEDS {
        db::seed::<T>(target, &run, 2).await.map_err(show)?;
    }
    let body = |n| {
        serve::sample::<T>(n, &run)
            .map(|s| s.request.to_string())
            .map_err(show)
    };
    Ok((body(0)?, body(1)?))
}

/// `--serve` on ephemeral loopback ports: a sample request over the line protocol (as JSON,
/// the form every task's arguments serialize to) and one over HTTP, then a graceful stop.
fn serve_answers<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    use crate::protocol::Answer;
    use crate::protocol::listen::{HTTP, TCP};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (target, run) = (c.target, c.run.as_str());
    Box::pin(async move {
        let fresh = Target::of::<T>(&target.settings).map_err(show)?;
        let task_settings = target
            .settings
            .task_settings::<T::Settings>()
            .map_err(show)?;
        let specs = [format!("{TCP}127.0.0.1:0"), format!("{HTTP}127.0.0.1:0")];
        let quiet = Output::silent(T::NAME);
        let server = serve::Server::<T>::start(fresh, task_settings, &specs, &quiet)
            .await
            .map_err(show)?;
        let [line_addr, http_addr] = &server.addresses()[..] else {
            return Err("the server did not bind two listeners".into());
        };
        let line_addr = line_addr.trim_start_matches(TCP).to_string();
        let http_addr = http_addr.trim_start_matches(HTTP).to_string();
        let (line_request, http_request) = served_samples::<T>(target, run).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let client = async move {
            let io = |e: std::io::Error| e.to_string();
            let stream = tokio::net::TcpStream::connect(&line_addr)
                .await
                .map_err(io)?;
            let (reader, mut writer) = stream.into_split();
            writer
                .write_all(format!("{line_request}\n").as_bytes())
                .await
                .map_err(io)?;
            let mut answer = String::new();
            tokio::io::BufReader::new(reader)
                .read_line(&mut answer)
                .await
                .map_err(io)?;
            expect(
                serde_json::from_str::<Answer>(&answer).is_ok_and(|a| a.ok),
                &format!("the line protocol answered {answer:?}"),
            )?;
            let mut stream = tokio::net::TcpStream::connect(&http_addr)
                .await
                .map_err(io)?;
            let request = format!(
                "POST /{} HTTP/1.1\r\nHost: {http_addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{http_request}",
                T::VERB,
                http_request.len()
            );
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.map_err(io)?;
            let status = response.split(' ').nth(1).unwrap_or("");
            expect(
                status == "200" || status == "201",
                &format!("HTTP answered {:?}", response.lines().next()),
            )
        };
        let (checked, ()) = tokio::join!(
            async {
                let checked = client.await;
                let _ = stop.send(());
                checked
            },
            server.run(async {
                let _ = stopped.await;
            })
        );
        checked
    })
}

fn cleanup_removes_the_file<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let r = cleanup::run(c.target).await.map_err(show)?;
        expect(!r.removed.is_empty(), "cleanup removed nothing")?;
        let path = c
            .target
            .location
            .file()
            .ok_or("the database is not a file")?;
        let dir = path.parent().unwrap_or(path);
        let left: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        expect(left.is_empty(), &format!("cleanup left {left:?} behind"))
    })
}

fn cleanup_drops_everything<'a, T: Task>(c: &'a Ctx<'a, T>) -> Checking<'a> {
    Box::pin(async {
        let target = c.target;
        let r = cleanup::run(target).await.map_err(show)?;
        expect(
            r.dropped.len() == 3,
            &format!("cleanup dropped {:?}", r.dropped),
        )?;
        let left = target.location.leftovers(target).await.map_err(show)?;
        expect(left.is_empty(), &format!("cleanup left {left:?} behind"))?;
        let file = secrets::app_file(&target.settings, target.exe);
        expect(!file.exists(), "cleanup left the app secrets file behind")
    })
}

/// The quoted name of the first of the task's tables.
async fn first_table(conn: &mut db::Conn) -> std::result::Result<String, String> {
    let counts = schema::row_counts(conn).await.map_err(show)?;
    let (table, _) = counts.first().ok_or("the task has no table")?;
    Ok(conn.backend().quote(table))
}

/// Checks that `sql` is refused for lack of privilege.
async fn denied(conn: &mut db::Conn, sql: String) -> std::result::Result<(), String> {
    match conn.exec(sql.clone()).await {
        Ok(()) => Err(format!("{sql} was allowed")),
        Err(e) if e.kind() == ErrorKind::Permission => Ok(()),
        Err(e) => Err(format!(
            "{sql} failed, but not for lack of privilege: {}",
            e.message()
        )),
    }
}

/// Checks that `attempt` fails with `kind` and leaves every table's row count as it was.
async fn refused<T>(
    target: &Target,
    kind: ErrorKind,
    attempt: impl Future<Output = Result<T>>,
) -> std::result::Result<(), String> {
    let before = counts(target).await?;
    match attempt.await {
        Ok(_) => return Err(format!("expected {kind}, but the request succeeded")),
        Err(e) if e.kind() != kind => {
            return Err(format!(
                "expected {kind}, got {}: {}",
                e.kind(),
                e.message()
            ));
        }
        Err(_) => {}
    }
    let after = counts(target).await?;
    expect(
        before == after,
        &format!("rows changed from {before:?} to {after:?}"),
    )
}

/// Every table's row count, read as the backup role (the task's own may not read them all).
async fn counts(target: &Target) -> std::result::Result<Vec<(String, i64)>, String> {
    async {
        let mut conn = target.location.connect_reader(target).await?;
        let counts = schema::row_counts(&mut conn).await?;
        conn.close().await?;
        Ok::<_, Error>(counts)
    }
    .await
    .map_err(show)
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

fn expect(condition: bool, failure: &str) -> std::result::Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(failure.to_string())
    }
}

fn show(e: Error) -> String {
    format!("{}: {}", e.kind(), e.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Migrations;
    use crate::task::{Context, Repeat};
    use crate::testing::{self, NoteArgs, Notes, note};

    #[test]
    fn every_generic_check_and_task_case_passes_for_a_correct_task() {
        let (_dir, settings) = testing::scratch();
        let report = run::<Notes>(&settings, &Output::silent("notes")).unwrap();
        let failures: Vec<_> = report.cases.iter().filter(|c| !c.passed).collect();
        assert!(failures.is_empty(), "{failures:#?}");
        // Six generic checks, three of backup and restore, one of serve, the task's two cases.
        assert_eq!(report.passed, 6 + 3 + 1 + 2);
    }

    #[test]
    fn the_configured_database_is_never_opened() {
        let (dir, settings) = testing::scratch();
        run::<Notes>(&settings, &Output::silent("notes")).unwrap();
        assert!(
            !dir.path().join("data").exists(),
            "the self-test wrote to the configured data_dir"
        );
    }

    /// `Notes` with wrong expectations: its self-test must report them as failures.
    struct Wrong;
    impl Task for Wrong {
        const NAME: &'static str = "wrong";
        const VERSION: &'static str = "0";
        const ABOUT: &'static str = "Notes with wrong expectations";
        const VERB: &'static str = "add";
        const MIGRATIONS: &'static Migrations = testing::V1;
        const GRANTS: &'static [crate::Grant] = Notes::GRANTS;
        type Args = NoteArgs;
        type Request = String;
        type Output = i64;
        type Settings = ();
        fn prepare(args: NoteArgs, ctx: &mut Context<'_, ()>) -> Result<String> {
            Notes::prepare(args, ctx)
        }
        async fn execute(tx: &mut crate::Tx<'_>, text: String) -> Result<i64> {
            Notes::execute(tx, text).await
        }
        fn sample(n: u64, run: &str) -> NoteArgs {
            Notes::sample(n, run)
        }
        // Valid, so the generic invalid-input check must fail.
        fn invalid_sample() -> NoteArgs {
            note("valid after all")
        }
        // Notes are unique, so a repeat is a conflict, not a success.
        fn on_repeat() -> Repeat {
            Repeat::Succeeds
        }
        fn cases() -> Vec<Case<NoteArgs>> {
            vec![
                Case::new("expects a failure that does not come", note("x"))
                    .fails_with(ErrorKind::Conflict),
                Case::new("expects a count that is wrong", note("y"))
                    .then_count("SELECT COUNT(*) FROM notes", 99),
            ]
        }
    }

    #[test]
    fn wrong_expectations_are_reported_as_failures_with_reasons() {
        let (_dir, settings) = testing::scratch();
        let report = run::<Wrong>(&settings, &Output::silent("wrong")).unwrap();
        let failed: Vec<_> = report
            .cases
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "repeating sample request 1 succeeds",
                "an invalid request is refused as invalid input and writes nothing",
                "expects a failure that does not come",
                "expects a count that is wrong",
            ]
        );
        assert_eq!(report.failed, 4);
        assert!(report.cases.iter().all(|c| c.passed == c.reason.is_none()));
        assert_eq!(
            report.to_string(),
            format!("{} passed, 4 failed", report.passed)
        );
    }
}
