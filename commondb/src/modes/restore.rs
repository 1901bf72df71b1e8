//! `--self-restore`: the newest backup (or `--from FILE`) back, all or nothing, after asking.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::backup;
use crate::config::Settings;
use crate::db::Target;
use crate::error::Result;
use crate::output::Output;
use crate::run::{Drivers, block_on};
use crate::task::Task;

/// Chooses and verifies the backup, asks unless `yes`, restores and prints the report.
pub(super) fn run<T: Task>(
    from: Option<PathBuf>,
    yes: bool,
    trust_file: bool,
    settings: &Settings,
    out: &Output,
) -> Result<ExitCode> {
    let target = Target::of::<T>(settings)?;
    let path = backup::choose(&target, T::DOMAIN, from, trust_file)?;
    // A damaged or foreign file is refused before the question and before anything.
    let header = backup::verify::<T>(&path, target.backend())?;
    if !yes {
        super::confirm(
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
    Ok(ExitCode::SUCCESS)
}
