//! `login`: checks a user's password and opens a session: a random token, printed once, of
//! which only the SHA-256 is stored, with an expiry. A wrong password and an unknown user get
//! the same answer, in the same time. Its role may read `users` and add `sessions`, and
//! nothing else.

use commondb::{Case, Context, ErrorKind, Grant, Migrations, Repeat, Result, Right, Task, Tx};
use executables::accounts::{self, PasswordArgs};
use executables::sessions::{self, Attempt, Session, SessionSettings};
use executables::users;

struct Login;

impl Task for Login {
    const NAME: &'static str = "login";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "Check a user's password and open a session";
    const VERB: &'static str = "login";
    const MIGRATIONS: &'static Migrations = users::MIGRATIONS;
    const DOMAIN: &'static str = users::DOMAIN;
    const FORMERLY: &'static [&'static str] = users::FORMERLY;
    const SEEDS: bool = true;
    const CREATES: bool = true;
    // The argon2 check reads and takes tens of milliseconds: not under a write lock.
    const READS_FIRST: bool = true;
    const SINGLE_STATEMENT: bool = true;
    // INSERT … SELECT … FROM users reads users too.
    const GRANTS: &'static [Grant] = &[
        Grant::on("users", &[Right::Select]),
        Grant::on("sessions", &[Right::Insert]),
    ];
    type Args = PasswordArgs;
    type Request = Attempt;
    type Output = Session;
    type Settings = SessionSettings;

    fn prepare(args: PasswordArgs, ctx: &mut Context<'_, SessionSettings>) -> Result<Attempt> {
        let password = args.password(ctx)?;
        Attempt::new(&args.username, password, ctx.settings())
    }

    async fn read_first(tx: &mut Tx<'_>, attempt: Attempt) -> Result<Attempt> {
        sessions::check(tx, attempt).await
    }

    async fn execute(tx: &mut Tx<'_>, attempt: Attempt) -> Result<Session> {
        sessions::login(tx, attempt).await
    }

    async fn seed(tx: &mut Tx<'_>, run: &str, count: u64) -> Result<u64> {
        accounts::seed(tx, run, count, true).await
    }

    fn sample(n: u64, run: &str) -> PasswordArgs {
        PasswordArgs::new(&accounts::sample_username(n, run))
    }

    fn sample_input(_: u64, run: &str) -> Option<String> {
        Some(format!("{}\n", accounts::sample_password(run)))
    }

    fn invalid_sample() -> PasswordArgs {
        // Sent without a password on its input.
        PasswordArgs::new("alice")
    }

    fn on_repeat() -> Repeat {
        Repeat::Succeeds
    }

    fn cases() -> Vec<Case<PasswordArgs>> {
        // A user whose password is "correct horse battery staple" (argon2id, the default costs).
        let lena = "INSERT INTO users (username, email, password_hash, created_at) VALUES \
                    ('lena', 'lena@example.com', \
                    '$argon2id$v=19$m=19456,t=2,p=1$tTm72wYUU3vLpOzTtBm9eg$cWTyb6zCU2KD8UOdrnzPoeOzo8+Ika7UO0C1R4KYuGs', \
                    CURRENT_TIMESTAMP)";
        vec![
            Case::new(
                "the right password opens a session",
                PasswordArgs::new("lena"),
            )
            .given(lena)
            .input("correct horse battery staple\n")
            .then_count(
                "SELECT COUNT(*) FROM sessions WHERE expires_at > created_at \
                     AND user_id = (SELECT id FROM users WHERE username = 'lena')",
                1,
            ),
            Case::new("a wrong password is refused", PasswordArgs::new("lena"))
                .input("wrong horse\n")
                .fails_with(ErrorKind::Permission),
            Case::new(
                "an unknown user gets the same answer as a wrong password",
                PasswordArgs::new("nobody"),
            )
            .input("correct horse battery staple\n")
            .fails_with(ErrorKind::Permission),
            Case::new(
                "an invalid name gets the same answer too",
                PasswordArgs::new("Not A Name"),
            )
            .input("correct horse battery staple\n")
            .fails_with(ErrorKind::Permission),
        ]
    }
}

fn main() -> std::process::ExitCode {
    commondb::main::<Login>()
}
