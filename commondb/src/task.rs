//! The one thing an executable defines: its [`Task`].
//!
//! A task says what it is called, what its arguments are, how its schema is built, how a request
//! is validated ([`Task::prepare`], no database yet) and carried out ([`Task::execute`], inside
//! a transaction the harness commits), what a valid sample request looks like, and which cases
//! its self-test adds. Everything else (modes, configuration, secrets, setup, tests, exit codes)
//! comes from `commondb`.

use std::fmt::Display;
use std::future::Future;
use std::io::{BufRead, IsTerminal};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{Migrations, Tx};
use crate::error::{Error, ErrorKind, Result};
use crate::secrets::SecretString;

/// A task definition. See `executables/src/bin/create-user.rs` for a complete one.
pub trait Task: Sized + 'static {
    /// The executable's name, e.g. `create-user`.
    const NAME: &'static str;
    /// The executable's version: `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One line saying what the task does, e.g. "Create a user account".
    const ABOUT: &'static str;
    /// The mode flag that runs the task, without dashes, e.g. `create` for `--create`.
    const VERB: &'static str;
    /// The task's migrations, one set per backend: its domain's.
    const MIGRATIONS: &'static Migrations;
    /// The data the task works on. Executables of one domain share its database (on SQLite the
    /// file `<domain>.sqlite3`) and its backups, and declare the same [`Task::MIGRATIONS`]: any
    /// of them brings the domain's schema up to date, and any restores a backup another took.
    /// Each keeps its own role and credentials (`<secrets_dir>/<executable>.toml`). By default
    /// each executable is a domain of its own.
    const DOMAIN: &'static str = Self::NAME;
    /// The domains this executable belonged to in earlier versions. If the embedded database
    /// of one is there and the domain's is not, every mode refuses to start a new, empty one
    /// (exit 78) and says how to move the old file.
    const FORMERLY: &'static [&'static str] = &[];
    /// The loopback port `--serve` listens on when nothing else is configured. The default is
    /// derived from [`Task::NAME`] (in 20000–29999), so that two executables differ; a task that
    /// users will type the port of sets its own.
    const PORT: u16 = default_port(Self::NAME);
    /// Whether a successful request creates something: `--serve` answers it with HTTP 201
    /// Created instead of 200 OK.
    const CREATES: bool = false;
    /// Whether [`Task::execute`] runs exactly one statement. Then the harness sends no `BEGIN`
    /// and no `COMMIT`: the statement commits by itself, atomically, which saves two round
    /// trips per request on a server and two worker hops on SQLite. A second statement is
    /// refused with an internal error (and the first has committed), so set it only for a
    /// task whose `execute` cannot run two.
    const SINGLE_STATEMENT: bool = false;
    /// Whether the task only reads. Its transaction is then declared read-only: `BEGIN READ
    /// ONLY` on PostgreSQL, `START TRANSACTION READ ONLY` on MySQL/MariaDB, where the server
    /// refuses a write in it; a deferred `BEGIN` on SQLite, which takes no write lock, so that
    /// the task never waits for writers (WAL readers see the last commit) and never makes one
    /// wait. `--serve` never runs it through SQLite's group commit.
    const READ_ONLY: bool = false;
    /// The rights the task needs, per table of its domain: on PostgreSQL and MySQL/MariaDB,
    /// setup gives the executable a role of its own with exactly these grants (and read on the
    /// migrations table), and nothing else; the self-test proves every other right is refused.
    /// Note that PostgreSQL needs `SELECT` for `INSERT … RETURNING` ([`Tx::insert`]) and for
    /// an `UPDATE` or `DELETE` with a `WHERE`. SQLite has no roles: its file is the user's.
    const GRANTS: &'static [Grant];
    /// Whether the task reads and computes before it writes ([`Task::read_first`]).
    const READS_FIRST: bool = false;
    /// Whether the sample requests need rows to exist first (a read, a change, a delete):
    /// [`Task::seed`] writes them, in the self-test and before a `runmany` run
    /// (`--self-seed`). Read-only tasks need them by default.
    const SEEDS: bool = Self::READ_ONLY;

    /// The task's command-line arguments. The names `json`, `verbose`, `quiet`, `config`, `yes`,
    /// `from`, `listen` and the mode flags are the harness's. They are also the body of a
    /// request to `--serve` (a JSON object of the same names), and serialize to it: the
    /// self-test and the runner send a task's sample requests that way.
    type Args: clap::FromArgMatches + clap::Args + Serialize + Send + 'static;
    /// A validated request, ready to execute.
    type Request: Send + 'static;
    /// What a successful run returns: printed with `Display`, or as JSON with `--json`.
    type Output: Serialize + Display + Send + 'static;
    /// The task's own settings: the `[task]` table of the configuration.
    type Settings: DeserializeOwned + Default + Send + Sync + 'static;

    /// Validates the arguments and does the work that needs no database (hashing, say).
    /// An invalid request fails here with [`ErrorKind::InvalidInput`], before any connection.
    fn prepare(args: Self::Args, ctx: &mut Context<'_, Self::Settings>) -> Result<Self::Request>;

    /// Carries out the request inside the transaction `tx`. The harness commits it if this
    /// returns `Ok` and rolls it back otherwise.
    fn execute(
        tx: &mut Tx<'_>,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Output>> + Send;

    /// For a task that must read and compute before it writes ([`Task::READS_FIRST`]; `login`
    /// checks a password hash): runs before [`Task::execute`], in a read-only transaction of
    /// its own, so that the slow part holds no write lock (on SQLite none that would make every
    /// other writer wait), and returns the request `execute` then carries out. What it read may
    /// change before `execute` runs: `execute` must write only if it still holds (a
    /// compare-and-set, such as `INSERT … SELECT … WHERE password_hash = ?`).
    fn read_first(
        tx: &mut Tx<'_>,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Request>> + Send {
        let _ = tx;
        std::future::ready(Ok(request))
    }

    /// Sample request number `n` of the run `run`: valid, and unique per `n` and per `run` (the
    /// self-test uses it, and the runner will launch it by the hundred).
    fn sample(n: u64, run: &str) -> Self::Args;

    /// The secret input (a password's line) that sample request `n` of run `run` sends, if the
    /// task reads one: runmany writes it to the process's standard input, and a service gets it
    /// as the request's `stdin`.
    fn sample_input(n: u64, run: &str) -> Option<String> {
        let _ = (n, run);
        None
    }

    /// A request that the task must refuse as invalid input.
    fn invalid_sample() -> Self::Args;

    /// What repeating a sample request must do.
    fn on_repeat() -> Repeat {
        Repeat::Conflict
    }

    /// The rows that sample requests `0..count` of run `run` need to find (see
    /// [`Task::SEEDS`]), written in one transaction with the domain's own SQL, as the database's
    /// owner (the task's role may have no right to write). Returns how many.
    fn seed(tx: &mut Tx<'_>, run: &str, count: u64) -> impl Future<Output = Result<u64>> + Send {
        let _ = (tx, run, count);
        std::future::ready(Ok(0))
    }

    /// The task's own self-test cases, run in order on one scratch database after the generic
    /// checks.
    fn cases() -> Vec<Case<Self::Args>> {
        Vec::new()
    }
}

/// A right on a table, as SQL grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Read rows.
    Select,
    /// Add rows.
    Insert,
    /// Change rows.
    Update,
    /// Remove rows.
    Delete,
}

impl Right {
    /// Every right, in the order SQL lists them.
    pub const ALL: [Right; 4] = [Right::Select, Right::Insert, Right::Update, Right::Delete];

    /// The right's SQL keyword.
    pub fn sql(self) -> &'static str {
        match self {
            Right::Select => "SELECT",
            Right::Insert => "INSERT",
            Right::Update => "UPDATE",
            Right::Delete => "DELETE",
        }
    }
}

/// The rights a task needs on one table of its domain ([`Task::GRANTS`]).
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    /// The table.
    pub table: &'static str,
    /// What the task does with it.
    pub rights: &'static [Right],
}

impl Grant {
    /// `rights` on `table`.
    pub const fn on(table: &'static str, rights: &'static [Right]) -> Grant {
        Grant { table, rights }
    }
}

/// A port in 20000–29999 derived from `name` (FNV-1a), the default of [`Task::PORT`].
pub const fn default_port(name: &str) -> u16 {
    20_000 + (fnv1a(name) % 10_000) as u16
}

/// The 32-bit FNV-1a hash of `text`: short, stable names derived from longer ones.
pub(crate) const fn fnv1a(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// What happens when the same sample request runs twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The second run is refused with [`ErrorKind::Conflict`] and writes nothing.
    Conflict,
    /// The second run succeeds too (the task is idempotent).
    Succeeds,
    /// The second run finds nothing to act on ([`ErrorKind::NotFound`]): the first removed it.
    NotFound,
}

/// What [`Task::prepare`] may use besides the arguments: the task's settings and the input
/// stream (for secrets such as a password, which never travel on the command line).
pub struct Context<'a, S> {
    settings: &'a S,
    input: Input,
}

/// Where a task's secret input comes from.
#[derive(Debug)]
pub enum Input {
    /// The process's standard input.
    Stdin,
    /// Given text (self-test cases).
    Text(String),
    /// No input: asking for it is an error.
    None,
}

/// The longest secret line read from the input (argon2 and friends need no more).
pub const MAX_SECRET_LEN: usize = 1024;

impl<'a, S> Context<'a, S> {
    pub(crate) fn new(settings: &'a S, input: Input) -> Self {
        Context { settings, input }
    }

    /// The task's settings.
    pub fn settings(&self) -> &S {
        self.settings
    }

    /// Reads one line of secret input (say a password), without its line ending. On a
    /// terminal it prompts on stderr and turns echo off while the user types. A line longer
    /// than [`MAX_SECRET_LEN`] bytes or not UTF-8 is refused; standard input is never read
    /// further than that, so an endless one (`< /dev/zero`) is refused at once.
    pub fn read_secret_line(&mut self, what: &str) -> Result<SecretString> {
        let line = match std::mem::replace(&mut self.input, Input::None) {
            Input::Text(text) => text.into_bytes(),
            Input::None => {
                return Err(Error::invalid_input(format!("no {what} was given"))
                    .hint(format!("send the {what} on standard input")));
            }
            Input::Stdin => read_stdin_line(what)?,
        };
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Err(Error::invalid_input(format!(
                "the {what} read from standard input is empty"
            ))
            .hint(format!(
                "send the {what} as the first line of standard input"
            )));
        }
        if line.len() > MAX_SECRET_LEN {
            return Err(Error::invalid_input(format!(
                "the {what} is longer than {MAX_SECRET_LEN} bytes"
            ))
            .hint(format!("use a shorter {what}")));
        }
        let line = std::str::from_utf8(line).map_err(|_| {
            Error::invalid_input(format!(
                "the {what} read from standard input is not UTF-8 text"
            ))
            .hint(format!("send the {what} as UTF-8 text"))
        })?;
        Ok(SecretString::from(line.to_string()))
    }
}

fn read_stdin_line(what: &str) -> Result<Vec<u8>> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let read = if terminal {
        eprint!("{what}: ");
        let _echo = EchoOff::new(&stdin);
        let r = read_line_bounded(stdin.lock(), MAX_SECRET_LEN);
        eprintln!();
        r
    } else {
        read_line_bounded(stdin.lock(), MAX_SECRET_LEN)
    };
    read.map_err(|e| {
        Error::invalid_input(format!("cannot read the {what} from standard input: {e}"))
            .hint(format!("send the {what} on standard input"))
    })
}

/// Reads one line, its ending included, but never more than `max` bytes plus `\r\n` plus one:
/// a longer line comes back cut, and still longer than `max` once its ending is stripped, so
/// the caller's length check refuses it without the rest being read.
pub(crate) fn read_line_bounded(reader: impl BufRead, max: usize) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(3);
    reader.take(limit).read_until(b'\n', &mut line)?;
    Ok(line)
}

/// Turns terminal echo off until dropped.
struct EchoOff<'a> {
    stdin: &'a std::io::Stdin,
    saved: Option<rustix::termios::Termios>,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> Self {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(stdin).ok();
        if let Some(saved) = &saved {
            let mut quiet = saved.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            let _ = tcsetattr(stdin, OptionalActions::Now, &quiet);
        }
        EchoOff { stdin, saved }
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                self.stdin,
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// One of a task's own self-test cases: a request (the task's arguments `A`) and what must
/// come of it.
pub struct Case<A> {
    pub(crate) name: &'static str,
    pub(crate) args: A,
    pub(crate) input: Option<&'static str>,
    pub(crate) expect: Option<ErrorKind>,
    pub(crate) count: Option<(&'static str, i64)>,
    pub(crate) given: Vec<&'static str>,
}

impl<A> Case<A> {
    /// A case named `name` (a sentence: "a password is stored hashed") that runs `args` and
    /// expects success.
    pub fn new(name: &'static str, args: A) -> Self {
        Case {
            name,
            args,
            input: None,
            expect: None,
            count: None,
            given: Vec::new(),
        }
    }

    /// Before the request, runs `sql` (an `INSERT …` of rows the case needs) as the
    /// database's owner; given more than once, the statements run in order.
    #[must_use]
    pub fn given(mut self, sql: &'static str) -> Self {
        self.given.push(sql);
        self
    }

    /// Gives the request `text` on its input.
    #[must_use]
    pub fn input(mut self, text: &'static str) -> Self {
        self.input = Some(text);
        self
    }

    /// Expects the request to fail with `kind` (and to write nothing).
    #[must_use]
    pub fn fails_with(mut self, kind: ErrorKind) -> Self {
        self.expect = Some(kind);
        self
    }

    /// After the request, `sql` (a `SELECT COUNT(*) …`), run as the database's owner, must
    /// return `n`.
    #[must_use]
    pub fn then_count(mut self, sql: &'static str, n: i64) -> Self {
        self.count = Some((sql, n));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: Input) -> Result<String> {
        use secrecy::ExposeSecret;
        Context::new(&(), input)
            .read_secret_line("password")
            .map(|s| s.expose_secret().to_string())
    }

    #[test]
    fn a_secret_line_loses_its_line_ending_only() {
        assert_eq!(
            read(Input::Text("  pass word \n".into())).unwrap(),
            "  pass word "
        );
        assert_eq!(read(Input::Text("pw\r\n".into())).unwrap(), "pw");
        assert_eq!(read(Input::Text("pw".into())).unwrap(), "pw");
    }

    #[test]
    fn empty_missing_and_oversized_secrets_are_invalid_input() {
        for input in [
            Input::Text("\n".into()),
            Input::Text(String::new()),
            Input::None,
            Input::Text("x".repeat(MAX_SECRET_LEN + 1)),
        ] {
            assert_eq!(read(input).unwrap_err().kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn a_line_is_read_only_up_to_its_bound() {
        // Endless input without a line ending: cut, and too long once its ending is stripped.
        let endless = std::io::BufReader::new(std::io::repeat(b'\r'));
        let line = read_line_bounded(endless, 8).unwrap();
        assert_eq!(line.len(), 11);
        // A line of exactly the bound, with either line ending, is whole.
        for input in [&b"12345678\r\nmore"[..], b"12345678\nmore"] {
            let line = read_line_bounded(input, 8).unwrap();
            assert!(line.ends_with(b"\n") && line.starts_with(b"12345678"));
        }
    }
}
