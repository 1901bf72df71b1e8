//! The entry point every executable calls: parse, run the mode ([`crate::modes`]), map the
//! outcome to an exit code; and what the modes share: [`perform`] (one request, as the task
//! mode and the self-test run it), [`execute_in`] (the task's handler and its commit, shared
//! with `--serve`) and [`block_on`].

use std::future::Future;
use std::process::ExitCode;

use crate::cli;
use crate::config::{self, Sources};
use crate::db::requests::{self, RequestId};
use crate::db::{self, Target, Tx};
use crate::error::{Error, Result};
use crate::modes;
use crate::output::Output;
use crate::perf;
use crate::protocol::phase;
use crate::stream::RowSink;
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
    if let Err(e) = follow_parent() {
        eprintln!("{}: error: {}", T::NAME, e.message());
        return ExitCode::from(e.exit_code());
    }
    let inv = cli::parse::<T>();
    perf::start(main_at, inv.performance_report);
    let out = Output::new(T::NAME, inv.json, inv.verbosity);
    out.install();
    let outcome = Sources::standard(T::NAME, inv.config.as_deref())
        .and_then(|sources| config::load(&sources))
        .and_then(|settings| {
            perf::mark(phase::CONFIG);
            modes::run::<T>(inv.mode, &settings, &out)
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

/// With [`crate::protocol::PARENT_PID_VAR`] set (by a supervisor such as `fleet`): SIGTERM when
/// that parent dies, even by `kill -9`, so that no instance outlives its supervisor; and no
/// start at all if it is already gone (it may have died before this process asked).
fn follow_parent() -> Result<()> {
    let Some(value) = std::env::var_os(crate::protocol::PARENT_PID_VAR) else {
        return Ok(());
    };
    let parent: i32 = value.to_str().and_then(|v| v.parse().ok()).ok_or_else(|| {
        Error::usage(format!(
            "{} is not a process id",
            crate::protocol::PARENT_PID_VAR
        ))
    })?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .map_err(|e| Error::internal(format!("cannot follow the parent process: {e}")))?;
    let now = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if now != Some(parent) {
        return Err(Error::unavailable(format!(
            "the process that started this one ({parent}) is gone"
        )));
    }
    Ok(())
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
    sink: &mut RowSink,
) -> Result<T::Output> {
    let request = T::prepare(args, &mut Context::new(task_settings, input))?;
    perf::mark(phase::PREPARE);
    let (mut conn, setup) = db::open(target, T::MIGRATIONS).await?;
    perf::mark(phase::CONNECT);
    if let Some(report) = setup {
        out.note(report.summary());
    }
    let output = async {
        let request = if T::READS_FIRST {
            let read_only = db::Begin {
                check: true,
                single: false,
                read_only: true,
            };
            let mut tx = conn
                .begin_with(&target.location, T::MIGRATIONS, read_only)
                .await?;
            let read = T::read_first(&mut tx, request).await;
            tx.settle(read).await?
        } else {
            request
        };
        let begin = db::Begin {
            check: !T::READS_FIRST,
            single: T::SINGLE_STATEMENT,
            read_only: T::READ_ONLY,
        };
        let tx = conn
            .begin_with(&target.location, T::MIGRATIONS, begin)
            .await?
            .with_sink(sink);
        perf::mark(phase::BEGIN);
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
    perf::mark(phase::TASK);
    let settled = tx.settle(executed).await;
    if settled.is_ok() {
        perf::mark(phase::COMMIT);
    }
    settled
}

/// Executes a prepared request that carries an id ([`crate::db::requests`]) in `tx`, an
/// explicit transaction (never a single-statement one: the id's row goes with the task's
/// effect), records the id with the answer, and commits; or rolls back if either failed. The
/// answer is the JSON `--serve` sends ([`crate::protocol::Answer`]), without the newline.
///
/// `stop` ends it before the commit, as for [`execute_in`]. A request seen before fails here
/// (its id's row exists, or its task refuses first): the caller looks the first answer up.
pub(crate) async fn execute_once<T: Task>(
    mut tx: Tx<'_>,
    request: T::Request,
    stop: impl Future<Output = Error>,
    id: &RequestId,
) -> Result<String> {
    let executed = {
        let work = async {
            let output = T::execute(&mut tx, request).await?;
            let answer = requests::answer_text(&output)?;
            requests::record(&mut tx, T::NAME, id, &answer).await?;
            Ok(answer)
        };
        tokio::select! {
            biased;
            e = stop => return Err(e),
            executed = work => executed,
        }
    };
    perf::mark(phase::TASK);
    tx.settle(executed).await
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
