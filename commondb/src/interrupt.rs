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

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
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
