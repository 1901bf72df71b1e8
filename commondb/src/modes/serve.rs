//! `--serve`: the task as a long-running socket service, until SIGTERM.

use std::process::ExitCode;

use crate::config::Settings;
use crate::db::Target;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::perf;
use crate::serve;
use crate::task::Task;

/// Serves on `listen` (none: the configured or default addresses) on a multi-thread runtime.
pub(super) fn run<T: Task>(
    listen: &[String],
    settings: &Settings,
    out: &Output,
) -> Result<ExitCode> {
    perf::disable();
    let target = Target::of::<T>(settings)?;
    let task_settings = settings.task_settings::<T::Settings>()?;
    // Every core serves sockets; requests wait on the database, not on each other.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::temporary(format!("cannot start the async runtime: {e}"))
                .hint("the system is out of threads, file descriptors or memory")
        })?;
    let served = runtime.block_on(serve::main::<T>(target, task_settings, listen, out));
    // Not waiting for a read of stdin that will never return (`--listen stdio`).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    served?;
    Ok(ExitCode::SUCCESS)
}
