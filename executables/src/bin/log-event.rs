//! `log-event`: appends an event (a kind and a JSON object) to an append-only log, the `events`
//! domain it shares with `list-events`. The domain code is in `executables::events`.

use commondb::{Case, Context, Grant, Migrations, Repeat, Result, Right, Task, Tx};
use executables::events::{self, Event, LogArgs, NewEvent};

struct LogEvent;

impl Task for LogEvent {
    const NAME: &'static str = "log-event";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "Append an event to the log";
    const VERB: &'static str = "log";
    const MIGRATIONS: &'static Migrations = events::MIGRATIONS;
    const GRANTS: &'static [Grant] = &[Grant::on("events", &[Right::Select, Right::Insert])];
    const DOMAIN: &'static str = events::DOMAIN;
    const PORT: u16 = 7402;
    const CREATES: bool = true;
    const SINGLE_STATEMENT: bool = true;
    type Args = LogArgs;
    type Request = NewEvent;
    type Output = Event;
    type Settings = ();

    fn prepare(args: LogArgs, _ctx: &mut Context<'_, ()>) -> Result<NewEvent> {
        NewEvent::new(&args)
    }

    async fn execute(tx: &mut Tx<'_>, event: NewEvent) -> Result<Event> {
        events::append(tx, event).await
    }

    fn sample(n: u64, run: &str) -> LogArgs {
        LogArgs::sample(n, run)
    }

    fn invalid_sample() -> LogArgs {
        LogArgs::new("sample.event", "not json")
    }

    // An event logged twice is two entries: a log has no unique key.
    fn on_repeat() -> Repeat {
        Repeat::Succeeds
    }

    fn cases() -> Vec<Case<LogArgs>> {
        events::cases()
    }
}

fn main() -> std::process::ExitCode {
    commondb::main::<LogEvent>()
}
