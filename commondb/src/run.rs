//! The entry point every executable calls: parse, dispatch on the mode, map the outcome to an
//! exit code. One `match` on [`Mode`] is the whole map of what an executable can do.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use crate::backup;
use crate::cli::{self, Mode};
use crate::config::{self, Settings, Sources};
use crate::db::{self, Target, Tx, cleanup, setup, status};
use crate::error::{Error, ErrorKind, Result};
use crate::interrupt;
use crate::output::Output;
use crate::perf;
use crate::selftest;
use crate::serve;
use crate::task::{Context, Input, Task};

/// Runs executable `T` on the process's command line and returns its exit code.
///
/// ```text
/// fn main() -> std::process::ExitCode {
///     commondb::main::<CreateUser>()
/// }
/// ```
pub fn main<T: Task>() -> ExitCode {
    let main_at = std::time::Instant::now();
    let inv = cli::parse::<T>();
    perf::start(main_at, inv.performance_report);
    let out = Output::new(T::NAME, inv.json, inv.verbosity);
    out.install();
    let outcome = Sources::standard(T::NAME, inv.config.as_deref())
        .and_then(|sources| config::load(&sources))
        .and_then(|settings| {
            perf::mark("config");
            dispatch::<T>(inv.mode, &settings, &out)
        });
    match outcome {
        Ok(code) => {
            perf::finish(T::NAME, "ok");
            code
        }
        Err(e) => {
            perf::finish(T::NAME, e.kind().as_str());
            out.error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch<T: Task>(mode: Mode<T::Args>, settings: &Settings, out: &Output) -> Result<ExitCode> {
    match mode {
        Mode::Task(args) => {
            let target = Target::resolve(settings, T::NAME)?;
            out.detail(format_args!("database: {}", target.location));
            let task_settings = settings.task_settings::<T::Settings>()?;
            let output = block_on(
                Drivers::for_target(&target),
                perform::<T>(&target, &task_settings, args, Input::Stdin, out),
            )?;
            out.result(&output);
        }
        Mode::Setup => {
            let target = Target::resolve(settings, T::NAME)?;
            out.result(&block_on(
                Drivers::Io,
                interrupt::guard(
                    "run --self-setup again to finish it, or --self-cleanup to undo it",
                    setup::run(&target, T::MIGRATIONS),
                ),
            )?);
        }
        Mode::Test => {
            let report = selftest::run::<T>(settings, out)?;
            if out.json() {
                out.result(&report);
            } else {
                println!("{report}");
            }
            if report.failed > 0 {
                return Ok(ExitCode::from(ErrorKind::Failed.exit_code()));
            }
        }
        Mode::Cleanup { yes } => {
            let target = Target::resolve(settings, T::NAME)?;
            let plan = cleanup::plan(&target)?;
            if !plan.is_empty() && !yes {
                let mut text = String::from("This removes (backups are kept):");
                for item in &plan {
                    text.push_str(&format!("\n  {item}"));
                }
                confirm(
                    "--self-cleanup removes the database",
                    &text,
                    "Remove them?",
                    "cleanup cancelled: nothing was removed",
                )?;
            }
            out.result(&block_on(
                Drivers::Io,
                interrupt::guard(
                    "run --self-cleanup again to finish it",
                    cleanup::run(&target),
                ),
            )?);
        }
        Mode::Backup => {
            let target = Target::resolve(settings, T::NAME)?;
            out.result(&block_on(
                Drivers::for_target(&target),
                backup::backup::<T>(&target, backup::file::Kind::Backup),
            )?);
        }
        Mode::Restore {
            from,
            yes,
            trust_file,
        } => {
            let target = Target::resolve(settings, T::NAME)?;
            let path = backup::choose(&target, T::NAME, from, trust_file)?;
            // A damaged or foreign file is refused before the question and before anything.
            let header = backup::verify::<T>(&path, target.backend())?;
            if !yes {
                confirm(
                    "--self-restore replaces every row of the database",
                    &format!(
                        "This replaces every row of {} with the {} row(s) of\n  {} (taken {})\nA safety backup of the current data is taken first.",
                        target.location,
                        header.rows(),
                        path.display(),
                        header
                            .created_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    "Restore it?",
                    "restore cancelled: nothing was changed",
                )?;
            }
            out.result(&block_on(
                Drivers::for_target(&target),
                backup::restore::<T>(&target, &path, &header),
            )?);
        }
        Mode::Serve { listen } => {
            perf::disable();
            let target = Target::resolve(settings, T::NAME)?;
            let task_settings = settings.task_settings::<T::Settings>()?;
            // Every core serves sockets; requests wait on the database, not on each other.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    Error::temporary(format!("cannot start the async runtime: {e}"))
                        .hint("the system is out of threads, file descriptors or memory")
                })?;
            let served = runtime.block_on(serve::main::<T>(target, task_settings, &listen, out));
            // Not waiting for a read of stdin that will never return (`--listen stdio`).
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            served?;
        }
        Mode::Samples { count, run } => {
            let run = run.unwrap_or_else(selftest::run_id);
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            for n in 0..count {
                let line = serve::sample_line::<T>(n, &run)?;
                if writeln!(stdout, "{line}").is_err() {
                    break; // a closed pipe (| head) ends the list
                }
            }
            let _ = stdout.flush();
        }
        Mode::Status => {
            let target = Target::resolve(settings, T::NAME)?;
            let report = block_on(
                Drivers::for_target(&target),
                status::run(&target, T::MIGRATIONS),
            )?;
            out.result(&report);
            if let Some(kind) = report.failure() {
                out.note(format_args!("{}: {}", kind, report.advice()));
                return Ok(ExitCode::from(kind.exit_code()));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one request the way the task mode does: validate, open (setting up the embedded
/// database on first use), execute in a transaction, commit. The self-test calls it too, so
/// that what it tests is what users run.
pub(crate) async fn perform<T: Task>(
    target: &Target,
    task_settings: &T::Settings,
    args: T::Args,
    input: Input,
    out: &Output,
) -> Result<T::Output> {
    let request = T::prepare(args, &mut Context::new(task_settings, input))?;
    perf::mark("prepare");
    let (mut conn, setup) = db::open(target, T::MIGRATIONS).await?;
    perf::mark("connect");
    if let Some(report) = setup {
        out.note(report.summary());
    }
    let output = async {
        let begin = db::Begin {
            check: true,
            single: T::SINGLE_STATEMENT,
        };
        let tx = conn
            .begin_with(&target.location, T::MIGRATIONS, begin)
            .await?;
        perf::mark("begin");
        execute_in::<T>(tx, request, std::future::pending()).await
    }
    .await;
    conn.close_after(output).await
}

/// Executes a prepared request in `tx` and commits, or rolls back if the task failed: the one
/// place a task's handler runs, in process mode, in the self-test and in `--serve`.
///
/// `stop` may end the task before its commit (a service's request timeout or shutdown): its
/// error is returned and `tx` dropped unfinished, so the caller must discard the connection
/// (the server rolls back). Once the commit is sent nothing stops it, and a single-statement
/// task's statement is its commit: an `Ok` always means committed, and an error from `stop`
/// always means nothing was written.
pub(crate) async fn execute_in<T: Task>(
    mut tx: Tx<'_>,
    request: T::Request,
    stop: impl Future<Output = Error>,
) -> Result<T::Output> {
    let sent = tx.single_sent();
    let executed = {
        let mut stop = std::pin::pin!(stop);
        let mut execute = std::pin::pin!(T::execute(&mut tx, request));
        tokio::select! {
            biased;
            e = &mut stop => match sent {
                Some(sent) if sent.load(std::sync::atomic::Ordering::Acquire) => execute.await,
                _ => return Err(e),
            },
            executed = &mut execute => executed,
        }
    };
    perf::mark("task");
    match executed {
        Ok(output) => {
            tx.commit().await?;
            perf::mark("commit");
            Ok(output)
        }
        Err(e) => {
            // Rolled back explicitly, so that a server never holds the failed transaction
            // until the connection closes. If that fails, the connection is in no known state:
            // the error says so, and its kind keeps a pool from taking the connection back.
            match tx.rollback().await {
                Ok(()) => Err(e),
                Err(failed) => Err(Error::unavailable(format!(
                    "{} (and rolling back failed: {})",
                    e.message(),
                    failed.message()
                ))
                .hint("nothing was written; try again")),
            }
        }
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

/// What a runtime must drive besides timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drivers {
    /// Timers only: the embedded database talks to its own worker thread, not to sockets.
    Timers,
    /// Sockets and signals too: a database server, or Ctrl-C handling (self-test, setup,
    /// cleanup).
    Io,
}

impl Drivers {
    /// What talking to `target` needs.
    pub(crate) fn for_target(target: &Target) -> Drivers {
        if target.backend().dialect().over_sockets() {
            Drivers::Io
        } else {
            Drivers::Timers
        }
    }
}

/// Runs a future on a current-thread runtime: one-shot modes need no more, and it starts in
/// microseconds (without the I/O driver's epoll, eventfd and signal pipe when `drivers` says so).
pub(crate) fn block_on<T, F: Future<Output = Result<T>>>(drivers: Drivers, future: F) -> Result<T> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    if drivers == Drivers::Io {
        builder.enable_io();
    }
    builder
        .build()
        .map_err(|e| {
            Error::temporary(format!("cannot start the async runtime: {e}"))
                .hint("the system is out of file descriptors or memory; try again")
        })?
        .block_on(future)
}
