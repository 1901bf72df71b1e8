//! The command line every executable shares: one mode flag per call (the flags and what each
//! mode takes come from the table in [`crate::modes`]), the task's arguments, and the global
//! options.
//!
//! The command is built from the task's `clap::Args` at run time, so `--help` shows the task's
//! verb and arguments next to the harness's modes. Nothing else happens before parsing, so
//! `--help` and `--version` cost no more than clap itself.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgGroup, ArgMatches, Args, Command};

use crate::modes::{FROM, MODES, Mode, ROTATE, Spec, TRUST_FILE, YES};
use crate::protocol::flags;
use crate::task::Task;

/// A parsed command line.
#[derive(Debug)]
pub(crate) struct Invocation<A> {
    pub mode: Mode<A>,
    pub json: bool,
    pub verbosity: i8,
    pub config: Option<PathBuf>,
    /// `--performance-report[=PATH]`: `Some(None)` for stderr.
    pub performance_report: Option<Option<PathBuf>>,
}

const MODE_GROUP: &str = "mode";
const TASK_ARGS: &str = "task-arguments";

/// The task's command: the mode flags and what each mode takes, from [`MODES`].
pub(crate) fn command<T: Task>() -> Command {
    let cmd = Command::new(T::NAME)
        .version(T::VERSION)
        .about(T::ABOUT)
        .arg_required_else_help(true)
        // Help and version are declared below, so that they sit with the other options.
        .disable_help_flag(true)
        .disable_version_flag(true)
        .after_help(crate::error::ErrorKind::help_line());
    let modes: Vec<&'static str> = MODES.iter().map(Spec::id::<T>).collect();
    let cmd = MODES
        .iter()
        .fold(cmd, |cmd, spec| cmd.arg(mode_flag::<T>(spec)))
        .group(
            ArgGroup::new(MODE_GROUP)
                .args(&modes)
                .required(true)
                .multiple(false),
        )
        .next_help_heading("Options");
    let cmd = common_options().into_iter().fold(cmd, Command::arg);
    // An option of some modes is refused with every other mode.
    let cmd = mode_options::<T>().into_iter().fold(cmd, |cmd, arg| {
        let id = arg.get_id().as_str();
        let others: Vec<&str> = MODES
            .iter()
            .filter(|spec| !spec.options.contains(&id))
            .map(Spec::id::<T>)
            .collect();
        cmd.arg(arg.conflicts_with_all(others))
    });
    let ours: Vec<_> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
    let cmd = T::Args::augment_args(
        cmd.next_help_heading(format!("Task arguments (with --{})", T::VERB)),
    );
    let task_args: Vec<_> = cmd
        .get_arguments()
        .filter(|a| !ours.contains(a.get_id()))
        .map(|a| a.get_id().clone())
        .collect();
    let usage = usage(&cmd, &task_args, T::VERB);
    // The task's arguments belong to the task mode: required there, refused with the others.
    let cmd = cmd
        .mut_args(|a| {
            if task_args.contains(a.get_id()) && a.is_required_set() {
                a.required(false).required_if_eq(T::VERB, "true")
            } else {
                a
            }
        })
        .group(ArgGroup::new(TASK_ARGS).args(&task_args).multiple(true));
    MODES
        .iter()
        .filter_map(|spec| spec.flag)
        .fold(cmd, |cmd, flag| {
            cmd.mut_arg(flag, |a| a.conflicts_with(TASK_ARGS))
        })
        .override_usage(usage)
}

/// A mode's flag, as [`MODES`] describes it.
fn mode_flag<T: Task>(spec: &Spec) -> Arg {
    let id = spec.id::<T>();
    let help = spec
        .help
        .replace("{verb}", T::VERB)
        .replace("{about}", T::ABOUT);
    let arg = Arg::new(id)
        .long(id)
        .help(help)
        .help_heading("Modes (exactly one)");
    match spec.value {
        None => arg.action(ArgAction::SetTrue),
        Some((name, max)) => arg
            .value_name(name)
            .value_parser(clap::value_parser!(u64).range(0..=max)),
    }
}

/// The options every mode takes.
fn common_options() -> [Arg; 7] {
    [
        Arg::new("help")
            .short('h')
            .long("help")
            .action(ArgAction::Help)
            .help("Print help"),
        Arg::new("version")
            .short('V')
            .long("version")
            .action(ArgAction::Version)
            .help("Print version"),
        Arg::new("json")
            .long("json")
            .action(ArgAction::SetTrue)
            .help("Print the result as one JSON document on stdout"),
        Arg::new("verbose")
            .short('v')
            .long("verbose")
            .action(ArgAction::Count)
            .conflicts_with("quiet")
            .help("Say more on stderr"),
        Arg::new("quiet")
            .short('q')
            .long("quiet")
            .action(ArgAction::SetTrue)
            .help("Print nothing on stderr but errors"),
        Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("Read this configuration file after the system and user ones"),
        Arg::new("performance-report")
            .long("performance-report")
            .value_name("PATH")
            .num_args(0..=1)
            .require_equals(true)
            .value_parser(clap::value_parser!(PathBuf))
            .help(
                "Append one JSON line with the time spent in each phase to PATH (default: stderr)",
            ),
    ]
}

/// The options that only some modes take (which ones: [`Spec::options`]).
fn mode_options<T: Task>() -> [Arg; 6] {
    [
        Arg::new(YES)
            .long(YES)
            .action(ArgAction::SetTrue)
            .help("Confirm --self-cleanup or --self-restore without asking"),
        // Not `requires` for --self-restore: a flag's default value would satisfy it.
        Arg::new(FROM)
            .long(FROM)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("The backup --self-restore restores (default: the newest)"),
        Arg::new(TRUST_FILE)
            .long(TRUST_FILE)
            .action(ArgAction::SetTrue)
            .requires(FROM)
            .help("Restore --from a file another user owns or could have changed"),
        Arg::new(ROTATE)
            .long(ROTATE)
            .action(ArgAction::SetTrue)
            .help("With --self-setup on a server: new passwords for the app and backup roles (running services read them at their next connect, or on SIGHUP)"),
        Arg::new(flags::LISTEN)
            .long(flags::LISTEN)
            .value_name("ADDR")
            .action(ArgAction::Append)
            .help(format!(
                "Where --serve listens (repeatable): tcp://HOST:PORT, http://HOST:PORT, unix:PATH, http+unix:PATH, stdio, systemd, nats://HOST:PORT, nats+js://HOST:PORT, amqp://HOST:PORT [default: tcp://127.0.0.1:{}]",
                T::PORT
            )),
        Arg::new(flags::RUN)
            .long(flags::RUN)
            .value_name("ID")
            .help("The run id --self-samples makes its samples unique to (default: a new one)"),
    ]
}

/// The usage lines: the task mode with its arguments, and the self modes.
fn usage(cmd: &Command, task_args: &[clap::Id], verb: &str) -> String {
    let name = cmd.get_name();
    let mut task = format!("{name} [OPTIONS] --{verb}");
    for arg in cmd
        .get_arguments()
        .filter(|a| task_args.contains(a.get_id()))
    {
        let Some(long) = arg.get_long() else { continue };
        let value = match arg.get_value_names() {
            Some([first, ..]) if arg.get_action().takes_values() => format!(" <{first}>"),
            _ => String::new(),
        };
        if arg.is_required_set() {
            task.push_str(&format!(" --{long}{value}"));
        } else {
            task.push_str(&format!(" [--{long}{value}]"));
        }
    }
    format!(
        "{task}\n       {name} [OPTIONS] --self-setup | --self-status | --self-test | --self-backup\n       {name} [OPTIONS] --self-restore [--from <FILE> [--trust-file]] [--yes] | --self-cleanup [--yes]\n       {name} [OPTIONS] --serve [--listen <ADDR>]..."
    )
}

/// Parses the process's arguments; prints usage and exits on a usage error, `--help` or
/// `--version`.
pub(crate) fn parse<T: Task>() -> Invocation<T::Args> {
    let parsed = command::<T>()
        .try_get_matches()
        .and_then(|matches| invocation::<T>(&matches))
        .map_err(|e| e.format(&mut command::<T>()));
    match parsed {
        Ok(inv) => inv,
        Err(e) => exit_usage(e, std::env::args_os().skip(1)),
    }
}

/// Exits with clap's error, as clap would (help and version go to stdout with 0, a usage error
/// to stderr with 2); a usage error with `--json` on the command line also writes the JSON
/// error object on stdout, as every other error does, so a script reading stdout learns why.
fn exit_usage(e: clap::Error, args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    if e.use_stderr() && wants_json(args) {
        let _ = e.print();
        let rendered = e.render().to_string();
        let first = rendered
            .lines()
            .next()
            .unwrap_or("the command line is not valid");
        let message = first.strip_prefix("error: ").unwrap_or(first);
        let error = crate::Error::usage(message.to_string())
            .hint("see --help for the modes and their options");
        println!("{}", error.to_json());
        std::process::exit(2);
    }
    e.exit()
}

/// Whether `--json` is among the options (before a `--` that ends them).
fn wants_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

/// Parses a list of arguments (the first is the program name), for tests.
#[cfg(test)]
pub(crate) fn try_parse<T: Task, I: IntoIterator<Item = &'static str>>(
    args: I,
) -> Result<Invocation<T::Args>, clap::Error> {
    let matches = command::<T>().try_get_matches_from(args)?;
    invocation::<T>(&matches)
}

fn invocation<T: Task>(m: &ArgMatches) -> Result<Invocation<T::Args>, clap::Error> {
    let mode = Mode::parse(m, T::VERB)?;
    let verbosity = if m.get_flag("quiet") {
        -1
    } else {
        i8::try_from(m.get_count("verbose")).unwrap_or(i8::MAX)
    };
    Ok(Invocation {
        mode,
        json: m.get_flag("json"),
        verbosity,
        config: m.get_one::<PathBuf>("config").cloned(),
        performance_report: m
            .contains_id("performance-report")
            .then(|| m.get_one::<PathBuf>("performance-report").cloned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NoteArgs, Notes};
    use clap::error::ErrorKind as K;

    fn parse(args: &[&'static str]) -> Result<Invocation<NoteArgs>, clap::Error> {
        try_parse::<Notes, _>(std::iter::once("notes").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_is_well_formed() {
        command::<Notes>().debug_assert();
    }

    #[test]
    fn no_arguments_prints_the_usage_and_is_a_usage_error() {
        let e = parse(&[]).unwrap_err();
        assert_eq!(e.kind(), K::DisplayHelpOnMissingArgumentOrSubcommand);
        assert_eq!(e.exit_code(), 2);
        let help = command::<Notes>().render_help().to_string();
        for mode in [
            "--add",
            "--self-setup",
            "--self-test",
            "--self-cleanup",
            "--self-status",
            "--self-backup",
            "--self-restore",
            "--serve",
        ] {
            assert!(help.contains(mode), "{mode} missing from:\n{help}");
        }
    }

    #[test]
    fn the_verb_takes_the_task_arguments() {
        let inv = parse(&["--add", "--text", "hi", "--json", "-vv"]).unwrap();
        let Mode::Task(args) = inv.mode else {
            panic!("not the task mode")
        };
        assert_eq!(args.text, "hi");
        assert!(inv.json);
        assert_eq!(inv.verbosity, 2);
    }

    #[test]
    fn the_verb_without_its_required_arguments_is_refused() {
        assert_eq!(
            parse(&["--add"]).unwrap_err().kind(),
            K::MissingRequiredArgument
        );
    }

    #[test]
    fn self_modes_need_no_task_arguments_and_refuse_them() {
        assert!(matches!(
            parse(&["--self-setup"]).unwrap().mode,
            Mode::Setup { rotate: false }
        ));
        assert!(matches!(
            parse(&["--self-setup", "--rotate-credentials"])
                .unwrap()
                .mode,
            Mode::Setup { rotate: true }
        ));
        assert!(parse(&["--self-status", "--rotate-credentials"]).is_err());
        assert!(matches!(
            parse(&["--self-test", "-q"]).unwrap().mode,
            Mode::Test
        ));
        assert!(matches!(
            parse(&["--self-cleanup", "--yes"]).unwrap().mode,
            Mode::Cleanup { yes: true }
        ));
        let e = parse(&["--self-setup", "--text", "x"]).unwrap_err();
        assert_eq!(e.kind(), K::ArgumentConflict);
    }

    #[test]
    fn exactly_one_mode_per_call() {
        let e = parse(&["--self-setup", "--self-test"]).unwrap_err();
        assert_eq!(e.kind(), K::ArgumentConflict);
        let e = parse(&["--json"]).unwrap_err();
        assert_eq!(e.kind(), K::MissingRequiredArgument);
    }

    #[test]
    fn yes_only_confirms_cleanup() {
        let e = parse(&["--add", "--text", "x", "--yes"]).unwrap_err();
        assert_eq!(e.kind(), K::ArgumentConflict);
        assert!(matches!(
            parse(&["--self-cleanup"]).unwrap().mode,
            Mode::Cleanup { yes: false }
        ));
    }

    #[test]
    fn json_is_looked_for_among_the_options_only() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(wants_json(args(&["--bogus", "--json"]).into_iter()));
        assert!(!wants_json(args(&["--bogus"]).into_iter()));
        assert!(!wants_json(args(&["--", "--json"]).into_iter()));
    }

    #[test]
    fn restore_takes_from_and_yes_and_from_needs_restore() {
        let inv = parse(&["--self-restore", "--from", "b.jsonl.zst", "--yes"]).unwrap();
        assert!(matches!(
            inv.mode,
            Mode::Restore { from: Some(ref f), yes: true, trust_file: false } if f.as_os_str() == "b.jsonl.zst"
        ));
        assert!(matches!(
            parse(&["--self-restore"]).unwrap().mode,
            Mode::Restore {
                from: None,
                yes: false,
                trust_file: false
            }
        ));
        assert!(matches!(
            parse(&["--self-restore", "--from", "b", "--trust-file"])
                .unwrap()
                .mode,
            Mode::Restore {
                trust_file: true,
                ..
            }
        ));
        let e = parse(&["--self-restore", "--trust-file"]).unwrap_err();
        assert_eq!(e.kind(), K::MissingRequiredArgument);
        let e = parse(&["--self-backup", "--from", "x"]).unwrap_err();
        assert_eq!(e.kind(), K::ArgumentConflict);
        let e = parse(&["--self-backup", "--yes"]).unwrap_err();
        assert_eq!(e.kind(), K::ArgumentConflict);
    }

    #[test]
    fn serve_takes_listen_addresses_and_only_serve_does() {
        let inv = parse(&[
            "--serve",
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            "stdio",
        ])
        .unwrap();
        assert!(
            matches!(inv.mode, Mode::Serve { ref listen } if listen == &["tcp://127.0.0.1:0", "stdio"])
        );
        assert!(
            matches!(parse(&["--serve"]).unwrap().mode, Mode::Serve { ref listen } if listen.is_empty())
        );
        let e = parse(&["--self-setup", "--listen", "stdio"]).unwrap_err();
        assert_eq!(e.kind(), K::ArgumentConflict);
        let e = parse(&["--serve", "--text", "x"]).unwrap_err();
        assert_eq!(e.kind(), K::ArgumentConflict);
    }

    #[test]
    fn samples_take_a_count_and_a_run_id() {
        let inv = parse(&["--self-samples", "3", "--run", "r1"]).unwrap();
        assert!(matches!(inv.mode, Mode::Samples { count: 3, run: Some(ref r) } if r == "r1"));
        let e = parse(&["--self-setup", "--run", "r1"]).unwrap_err();
        assert_eq!(e.kind(), K::ArgumentConflict);
        let e = parse(&["--self-samples", "x"]).unwrap_err();
        assert_eq!(e.kind(), K::ValueValidation);
    }

    #[test]
    fn quiet_and_verbose_exclude_each_other() {
        assert_eq!(parse(&["--self-test", "-q"]).unwrap().verbosity, -1);
        assert_eq!(
            parse(&["--self-test", "-q", "-v"]).unwrap_err().kind(),
            K::ArgumentConflict
        );
    }

    #[test]
    fn the_usage_shows_the_task_line_and_the_self_modes() {
        let usage = command::<Notes>().render_usage().to_string();
        assert!(
            usage.contains("notes [OPTIONS] --add --text <TEXT> [--secret-stdin]"),
            "{usage}"
        );
        assert!(
            usage.contains("--self-setup | --self-status | --self-test | --self-backup"),
            "{usage}"
        );
    }
}
