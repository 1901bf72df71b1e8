//! Ctrl-C and SIGTERM during a mode that changes the database's surroundings (setup, cleanup).
//!
//! Every step of those modes is recorded before it acts, so a process killed anywhere is
//! finished or undone by the next run. A signal is still answered better than a kill: the first
//! one lets the current step finish, and the mode stops at its next [`check`] with
//! [`ErrorKind::Interrupted`] (exit 130) and a hint saying how to go on; a second one ends the
//! process at once, as a kill would.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Catches Ctrl-C (SIGINT) and SIGTERM from now on, and returns what resolves on the first of
/// them: from the call, not from the first poll, so that a signal during start-up is not lost.
pub(crate) fn signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM; never, if they cannot be caught.
pub(crate) async fn signalled() {
    match signals() {
        Ok(signal) => signal.await,
        Err(_) => std::future::pending().await,
    }
}

/// Runs `work`, turning the first Ctrl-C or SIGTERM into a request that [`check`] reports at
/// the next step, and a second into an immediate exit with 130. `resume` says how to go on
/// (e.g. "run --self-setup again to finish it, or --self-cleanup to undo it").
pub(crate) async fn guard<T>(resume: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => {
                return done.map_err(|e| match e.kind() {
                    ErrorKind::Interrupted => e.hint(resume.to_string()),
                    _ => e,
                });
            }
            () = signalled() => {
                if REQUESTED.swap(true, Ordering::SeqCst) {
                    crate::output::note(format_args!("interrupted again: stopping now; {resume}"));
                    std::process::exit(i32::from(ErrorKind::Interrupted.exit_code()));
                }
                crate::output::note(format_args!(
                    "interrupted: stopping after the current step (Ctrl-C again stops at once)"
                ));
            }
        }
    }
}

/// Ends the current mode with [`ErrorKind::Interrupted`] if a signal asked it to stop.
pub(crate) fn check() -> Result<()> {
    if REQUESTED.load(Ordering::SeqCst) {
        return Err(Error::new(
            ErrorKind::Interrupted,
            "interrupted: stopped between two steps; what was done is recorded",
        ));
    }
    Ok(())
}
