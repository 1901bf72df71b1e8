//! `--self-backup`: one compressed, checksummed file of the task's tables.

use std::process::ExitCode;

use crate::backup;
use crate::config::Settings;
use crate::db::Target;
use crate::error::Result;
use crate::output::Output;
use crate::run::{Drivers, block_on};
use crate::task::Task;

/// Takes a backup and prints the report.
pub(super) fn run<T: Task>(settings: &Settings, out: &Output) -> Result<ExitCode> {
    let target = Target::of::<T>(settings)?;
    out.result(&block_on(
        Drivers::for_target(&target),
        backup::backup::<T>(&target, backup::file::Kind::Backup),
    )?);
    Ok(ExitCode::SUCCESS)
}
