//! `list-users`: users by name prefix and creation time, streamed a row at a time (any number,
//! in flat memory), with a cursor for the next page. A read-only task: its role may only read
//! `users`.

use commondb::{Case, Context, ErrorKind, Grant, Migrations, Repeat, Result, Right, Task, Tx};
use executables::accounts::{self, ListArgs, Listed, Listing, MAX_LIMIT};
use executables::users;

struct ListUsers;

impl Task for ListUsers {
    const NAME: &'static str = "list-users";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "List user accounts, a page at a time";
    const VERB: &'static str = "list";
    const MIGRATIONS: &'static Migrations = users::MIGRATIONS;
    const DOMAIN: &'static str = users::DOMAIN;
    const FORMERLY: &'static [&'static str] = users::FORMERLY;
    const READ_ONLY: bool = true;
    const SINGLE_STATEMENT: bool = true;
    const GRANTS: &'static [Grant] = &[Grant::on("users", &[Right::Select])];
    type Args = ListArgs;
    type Request = Listing;
    type Output = Listed;
    type Settings = ();

    fn prepare(args: ListArgs, _: &mut Context<'_, ()>) -> Result<Listing> {
        Listing::new(&args)
    }

    async fn execute(tx: &mut Tx<'_>, listing: Listing) -> Result<Listed> {
        accounts::list(tx, listing).await
    }

    async fn seed(tx: &mut Tx<'_>, run: &str, count: u64) -> Result<u64> {
        accounts::seed(tx, run, count, false).await
    }

    fn sample(n: u64, run: &str) -> ListArgs {
        ListArgs::new(Some(&accounts::sample_username(n, run)), None, 10)
    }

    fn invalid_sample() -> ListArgs {
        ListArgs::new(None, None, MAX_LIMIT + 1)
    }

    fn on_repeat() -> Repeat {
        Repeat::Succeeds
    }

    fn cases() -> Vec<Case<ListArgs>> {
        vec![
            Case::new(
                "users are listed by name prefix, a page at a time",
                ListArgs::new(Some("lu_"), None, 1),
            )
            .given(
                "INSERT INTO users (username, email, created_at) VALUES \
                 ('lu_a', 'a@example.com', CURRENT_TIMESTAMP), \
                 ('lu_b', 'b@example.com', CURRENT_TIMESTAMP)",
            ),
            Case::new(
                "a prefix no name has lists none",
                ListArgs::new(Some("zz"), None, 10),
            ),
            Case::new(
                "a prefix with capitals is refused",
                ListArgs::new(Some("LU"), None, 10),
            )
            .fails_with(ErrorKind::InvalidInput),
            Case::new(
                "a negative cursor is refused",
                ListArgs::new(None, Some(-1), 10),
            )
            .fails_with(ErrorKind::InvalidInput),
            Case::new(
                "listing writes nothing",
                ListArgs::new(Some("lu_"), None, 10),
            )
            .then_count(
                "SELECT COUNT(*) FROM users WHERE username LIKE 'lu!_%' ESCAPE '!'",
                2,
            ),
        ]
    }
}

fn main() -> std::process::ExitCode {
    commondb::main::<ListUsers>()
}
