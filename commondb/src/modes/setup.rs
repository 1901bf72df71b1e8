//! `--self-setup`: create the database, its roles and its schema (idempotent, interruptible).

use std::process::ExitCode;

use crate::config::Settings;
use crate::db::{Target, setup};
use crate::error::Result;
use crate::interrupt;
use crate::output::Output;
use crate::run::{Drivers, block_on};
use crate::task::Task;

/// Sets the database up and prints the report.
pub(super) fn run<T: Task>(rotate: bool, settings: &Settings, out: &Output) -> Result<ExitCode> {
    let target = Target::of::<T>(settings)?;
    // The durable brokers the configuration's listeners name get their stream or queues too,
    // so that clients may publish before any worker started.
    let serve = &settings.serve;
    let brokers = crate::serve::login::BrokerSecrets::of(&target);
    let setup = async {
        let mut report = match rotate {
            true => setup::rotate(&target, T::MIGRATIONS).await?,
            false => setup::run(&target, T::MIGRATIONS).await?,
        };
        report.brokers =
            crate::serve::set_up_brokers(&serve.listen, T::NAME, serve, &brokers).await?;
        Ok(report)
    };
    out.result(&block_on(
        Drivers::Io,
        interrupt::guard(
            "run --self-setup again to finish it, or --self-cleanup to undo it",
            setup,
        ),
    )?);
    Ok(ExitCode::SUCCESS)
}
