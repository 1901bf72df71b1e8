//! The task mode (`create-user --create …`): one request, as the task defines it.

use std::process::ExitCode;

use crate::config::Settings;
use crate::db::Target;
use crate::error::Result;
use crate::output::Output;
use crate::run::{Drivers, block_on, perform};
use crate::task::{Input, Task};

/// Resolves the database, runs the request through [`perform`] and prints the result.
pub(super) fn run<T: Task>(args: T::Args, settings: &Settings, out: &Output) -> Result<ExitCode> {
    let target = Target::of::<T>(settings)?;
    out.detail(format_args!("database: {}", target.location));
    let task_settings = settings.task_settings::<T::Settings>()?;
    let output = block_on(
        Drivers::for_target(&target),
        perform::<T>(&target, &task_settings, args, Input::Stdin, out),
    )?;
    out.result(&output);
    Ok(ExitCode::SUCCESS)
}
