//! `--self-status`: where the database is and how its schema compares, read-only.

use std::process::ExitCode;

use crate::config::Settings;
use crate::db::{Target, status};
use crate::error::Result;
use crate::output::Output;
use crate::run::{Drivers, block_on};
use crate::task::Task;

/// Prints the report; exits with the code of what is wrong, if something is.
pub(super) fn run<T: Task>(settings: &Settings, out: &Output) -> Result<ExitCode> {
    let target = Target::of::<T>(settings)?;
    let listen = &settings.serve.listen;
    // The brokers the configuration names are checked too, which takes sockets.
    let drivers = match crate::serve::brokers_among(listen) {
        true => Drivers::Io,
        false => Drivers::for_target(&target),
    };
    let secrets = crate::serve::login::BrokerSecrets::of(&target);
    let (mut report, brokers) = block_on(drivers, async {
        let report = status::run(&target, T::MIGRATIONS).await?;
        let brokers = crate::serve::probe_brokers(listen, T::NAME, &secrets).await;
        Ok((report, brokers))
    })?;
    let unreachable = brokers.iter().find(|b| !b.reachable).cloned();
    report.brokers = brokers;
    out.result(&report);
    if let Some(kind) = report.failure() {
        out.note(format_args!("{}: {}", kind, report.advice()));
        return Ok(ExitCode::from(kind.exit_code()));
    }
    if let Some(broker) = unreachable {
        let kind = crate::error::ErrorKind::Unavailable;
        out.note(format_args!(
            "{kind}: the broker {} does not answer: start it, or check serve.listen",
            broker.address
        ));
        return Ok(ExitCode::from(kind.exit_code()));
    }
    Ok(ExitCode::SUCCESS)
}
