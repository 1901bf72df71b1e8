//! The task mode (`create-user --create …`): one request, as the task defines it.

use std::process::ExitCode;

use crate::config::Settings;
use crate::db::Target;
use crate::error::Result;
use crate::output::Output;
use crate::run::{Drivers, block_on, perform};
use crate::stream::RowSink;
use crate::task::{Input, Task};

/// Resolves the database, runs the request through [`perform`] and prints the result.
pub(super) fn run<T: Task>(args: T::Args, settings: &Settings, out: &Output) -> Result<ExitCode> {
    let target = Target::of::<T>(settings)?;
    out.detail(format_args!("database: {}", target.location));
    let task_settings = settings.task_settings::<T::Settings>()?;
    // A task that streams rows writes them to stdout as they come; its own output (a count,
    // the next cursor) then goes to stderr.
    let mut sink = RowSink::stdout(out.json());
    let output = block_on(
        Drivers::for_target(&target),
        perform::<T>(&target, &task_settings, args, Input::Stdin, out, &mut sink),
    );
    // What was streamed before a failure is shown, then the error.
    let flushed = sink.finish();
    if sink.closed {
        // The reader had what it wanted (`| head`): as for any filter, that is no failure.
        return Ok(ExitCode::SUCCESS);
    }
    let output = output?;
    flushed?;
    if sink.used {
        out.summary(&output);
    } else {
        out.result(&output);
    }
    Ok(ExitCode::SUCCESS)
}
