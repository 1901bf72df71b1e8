//! The modes of an executable: one table ([`MODES`]) from which the command line derives its
//! mode flags, their help order and which options each one takes; the parsed [`Mode`]; and the
//! one `match` that runs it. Each mode is one file here with one entry point, `run`.
//!
//! Adding a mode: a row in [`MODES`], a variant of [`Mode`] with its arm in [`Mode::parse`] and
//! [`run`], and its own file. The command line's conflicts follow from the table.

mod backup;
mod cleanup;
mod restore;
mod samples;
mod seed;
mod serve;
mod setup;
mod status;
mod task;
mod test;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ArgMatches;
use clap::parser::ValueSource;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::protocol::flags;
use crate::task::Task;

/// One mode as the command line shows it.
pub(crate) struct Spec {
    /// The flag's long name; `None` for the task mode, whose flag is the task's verb.
    pub flag: Option<&'static str>,
    /// Its line in `--help`; `{verb}` and `{about}` stand for the task's.
    pub help: &'static str,
    /// The value the flag takes, if it takes one: its name and the largest number allowed.
    pub value: Option<(&'static str, u64)>,
    /// The options only this mode takes; every other mode refuses them.
    pub options: &'static [&'static str],
}

pub(crate) const SETUP: &str = "self-setup";
pub(crate) const TEST: &str = "self-test";
pub(crate) const CLEANUP: &str = "self-cleanup";
pub(crate) const STATUS: &str = "self-status";
pub(crate) const BACKUP: &str = "self-backup";
pub(crate) const RESTORE: &str = "self-restore";
pub(crate) const SERVE: &str = flags::SERVE;
pub(crate) const SAMPLES: &str = flags::SAMPLES;
pub(crate) const SEED: &str = flags::SEED;

/// The options that only some modes take (besides [`flags::LISTEN`] and [`flags::RUN`]).
pub(crate) const YES: &str = "yes";
pub(crate) const FROM: &str = "from";
pub(crate) const TRUST_FILE: &str = "trust-file";
pub(crate) const ROTATE: &str = "rotate-credentials";

/// The most sample requests `--self-samples` prints: runmany's largest `--warmup` plus `-n`.
pub(crate) const MAX_SAMPLES: u64 = 2_000_000;

/// Every mode, in the order `--help` lists them.
pub(crate) const MODES: &[Spec] = &[
    Spec {
        flag: None,
        help: "{about}: the task itself, with the task arguments below",
        value: None,
        options: &[],
    },
    Spec {
        flag: Some(SETUP),
        help: "Create the database and apply the schema (idempotent)",
        value: None,
        options: &[ROTATE],
    },
    Spec {
        flag: Some(TEST),
        help: "Run the built-in tests on a throwaway database",
        value: None,
        options: &[],
    },
    Spec {
        flag: Some(CLEANUP),
        help: "Remove the database that setup made (asks first; backups are kept)",
        value: None,
        options: &[YES],
    },
    Spec {
        flag: Some(BACKUP),
        help: "Write a compressed, checksummed backup of the task's tables",
        value: None,
        options: &[],
    },
    Spec {
        flag: Some(RESTORE),
        help: "Replace the data with the newest backup, or --from FILE (asks first; keeps a safety backup)",
        value: None,
        options: &[YES, FROM, TRUST_FILE],
    },
    Spec {
        flag: Some(STATUS),
        help: "Report the database and its schema, read-only (exit 78 if setup is needed)",
        value: None,
        options: &[],
    },
    Spec {
        flag: Some(SERVE),
        help: "Serve --{verb} requests on sockets until SIGTERM (line protocol and HTTP)",
        value: None,
        options: &[flags::LISTEN],
    },
    Spec {
        flag: Some(SAMPLES),
        help: "Print the task's first N sample requests (0 to 2000000), one JSON line each (for runmany)",
        value: Some(("N", MAX_SAMPLES)),
        options: &[flags::RUN],
    },
    Spec {
        flag: Some(SEED),
        help: "Write the rows the first N sample requests of --run ID need, as the owner (for runmany)",
        value: Some(("N", MAX_SAMPLES)),
        options: &[flags::RUN],
    },
];

impl Spec {
    /// The flag's id: the task's verb for the task mode.
    pub(crate) fn id<T: Task>(&self) -> &'static str {
        self.flag.unwrap_or(T::VERB)
    }
}

/// The mode of one call: exactly one per call.
#[derive(Debug)]
pub(crate) enum Mode<A> {
    /// The task itself (`--create` for `create-user`), with its arguments.
    Task(A),
    /// `--self-setup`, giving the roles new passwords with `rotate`.
    Setup { rotate: bool },
    /// `--self-test`.
    Test,
    /// `--self-cleanup`, confirmed in advance with `--yes` or not.
    Cleanup { yes: bool },
    /// `--self-status`.
    Status,
    /// `--self-backup`.
    Backup,
    /// `--self-restore`, of `from` or the newest backup, confirmed with `--yes` or not; `from`
    /// even if someone else could have written it with `trust_file`.
    Restore {
        from: Option<PathBuf>,
        yes: bool,
        trust_file: bool,
    },
    /// `--serve`, on the `--listen` addresses given (none: the configured or default ones).
    Serve { listen: Vec<String> },
    /// `--self-samples N`: the task's first `count` sample requests of run `run`.
    Samples { count: u64, run: Option<String> },
    /// `--self-seed N`: the rows the first `count` sample requests of run `run` need.
    Seed { count: u64, run: Option<String> },
}

impl<A: clap::FromArgMatches> Mode<A> {
    /// The mode whose flag `m` holds (clap has checked there is exactly one), with its options.
    pub(crate) fn parse(m: &ArgMatches, verb: &str) -> std::result::Result<Mode<A>, clap::Error> {
        let chosen = MODES
            .iter()
            .find(|s| m.value_source(s.flag.unwrap_or(verb)) == Some(ValueSource::CommandLine))
            .and_then(|s| s.flag);
        Ok(match chosen {
            None => Mode::Task(A::from_arg_matches(m)?),
            Some(SETUP) => Mode::Setup {
                rotate: m.get_flag(ROTATE),
            },
            Some(TEST) => Mode::Test,
            Some(CLEANUP) => Mode::Cleanup {
                yes: m.get_flag(YES),
            },
            Some(STATUS) => Mode::Status,
            Some(BACKUP) => Mode::Backup,
            Some(RESTORE) => Mode::Restore {
                from: m.get_one::<PathBuf>(FROM).cloned(),
                yes: m.get_flag(YES),
                trust_file: m.get_flag(TRUST_FILE),
            },
            Some(SERVE) => Mode::Serve {
                listen: m
                    .get_many::<String>(flags::LISTEN)
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default(),
            },
            Some(SAMPLES) => Mode::Samples {
                count: m.get_one::<u64>(SAMPLES).copied().unwrap_or(0),
                run: m.get_one::<String>(flags::RUN).cloned(),
            },
            Some(SEED) => Mode::Seed {
                count: m.get_one::<u64>(SEED).copied().unwrap_or(0),
                run: m.get_one::<String>(flags::RUN).cloned(),
            },
            Some(other) => {
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!(
                        "--{other} is in the table of modes but Mode::parse has no arm for it\n"
                    ),
                ));
            }
        })
    }
}

/// Runs `mode` with the loaded settings: the one `match` on what an executable can do.
pub(crate) fn run<T: Task>(
    mode: Mode<T::Args>,
    settings: &Settings,
    out: &Output,
) -> Result<ExitCode> {
    match mode {
        Mode::Task(args) => task::run::<T>(args, settings, out),
        Mode::Setup { rotate } => setup::run::<T>(rotate, settings, out),
        Mode::Test => test::run::<T>(settings, out),
        Mode::Cleanup { yes } => cleanup::run::<T>(yes, settings, out),
        Mode::Status => status::run::<T>(settings, out),
        Mode::Backup => backup::run::<T>(settings, out),
        Mode::Restore {
            from,
            yes,
            trust_file,
        } => restore::run::<T>(from, yes, trust_file, settings, out),
        Mode::Serve { listen } => serve::run::<T>(&listen, settings, out),
        Mode::Samples { count, run } => samples::run::<T>(count, run),
        Mode::Seed { count, run } => seed::run::<T>(count, run, settings, out),
    }
}

/// Asks on the terminal before a mode destroys data; without a terminal, `--yes` is needed.
fn confirm(what: &str, text: &str, question: &str, declined: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            Error::usage(format!("{what}, and there is no terminal to confirm on"))
                .hint("add --yes to confirm"),
        );
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
    let _ = write!(stderr, "{question} [y/N] ");
    let _ = stderr.flush();
    // An answer longer than "yes" is no yes; reading stops there.
    let answer = crate::task::read_line_bounded(stdin.lock(), 8).unwrap_or_default();
    if matches!(
        std::str::from_utf8(&answer).map(str::trim),
        Ok("y" | "Y" | "yes" | "YES" | "Yes")
    ) {
        Ok(())
    } else {
        Err(Error::failed(declined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NoteArgs, Notes};

    #[test]
    fn every_mode_in_the_table_parses_to_its_own_mode() {
        for spec in MODES {
            let id = spec.id::<Notes>();
            let mut args = vec!["notes".to_string(), format!("--{id}")];
            match spec.value {
                Some(_) => args.push("1".into()),
                None if spec.flag.is_none() => args.extend(["--text".into(), "x".into()]),
                None => {}
            }
            let m = crate::cli::command::<Notes>()
                .try_get_matches_from(&args)
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let mode = Mode::<NoteArgs>::parse(&m, "add").unwrap_or_else(|e| panic!("{e}"));
            let expected = match mode {
                Mode::Task(_) => None,
                Mode::Setup { .. } => Some(SETUP),
                Mode::Test => Some(TEST),
                Mode::Cleanup { .. } => Some(CLEANUP),
                Mode::Status => Some(STATUS),
                Mode::Backup => Some(BACKUP),
                Mode::Restore { .. } => Some(RESTORE),
                Mode::Serve { .. } => Some(SERVE),
                Mode::Samples { .. } => Some(SAMPLES),
                Mode::Seed { .. } => Some(SEED),
            };
            assert_eq!(expected, spec.flag, "{args:?}");
        }
    }
}
