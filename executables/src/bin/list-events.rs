//! `list-events`: lists the event log, a page at a time, oldest first. A read-only task of the
//! `events` domain, beside `log-event`: the same database, credentials and backups; its
//! transaction is read-only, and its self-test seeds the log it reads.

use commondb::{Case, Context, Grant, Migrations, Repeat, Result, Right, Task, Tx};
use executables::events::{self, ListArgs, Listing, Page};

struct ListEvents;

impl Task for ListEvents {
    const NAME: &'static str = "list-events";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "List the event log, a page at a time";
    const VERB: &'static str = "list";
    const MIGRATIONS: &'static Migrations = events::MIGRATIONS;
    const GRANTS: &'static [Grant] = &[Grant::on("events", &[Right::Select])];
    const DOMAIN: &'static str = events::DOMAIN;
    const PORT: u16 = 7403;
    const READ_ONLY: bool = true;
    type Args = ListArgs;
    type Request = Listing;
    type Output = Page;
    type Settings = ();

    fn prepare(args: ListArgs, _ctx: &mut Context<'_, ()>) -> Result<Listing> {
        Listing::new(&args)
    }

    async fn execute(tx: &mut Tx<'_>, listing: Listing) -> Result<Page> {
        events::list(tx, listing).await
    }

    fn sample(_n: u64, _run: &str) -> ListArgs {
        ListArgs::new(Some("sample.event"), None, 10)
    }

    fn invalid_sample() -> ListArgs {
        ListArgs::new(None, None, 0)
    }

    // Reading twice reads twice.
    fn on_repeat() -> Repeat {
        Repeat::Succeeds
    }

    async fn seed(tx: &mut Tx<'_>, run: &str, _count: u64) -> Result<u64> {
        events::seed(tx, run).await
    }

    fn cases() -> Vec<Case<ListArgs>> {
        events::list_cases()
    }
}

fn main() -> std::process::ExitCode {
    commondb::main::<ListEvents>()
}
