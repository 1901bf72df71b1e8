//! Accounts that exist: reading, listing, deleting and giving a new password, for `get-user`,
//! `list-users`, `delete-user` and `set-password`. Validation and hashing are `users`'; nothing
//! here knows about modes, configuration or exit codes beyond the [`Error`] kinds.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use commondb::secrets::SecretString;
use commondb::{Error, Result, Tx};
use serde::Serialize;

use crate::paging::Bounds;
use crate::users::{self, HashSettings, NewUser, User, Username};

/// What `get-user` and `delete-user` take.
#[derive(clap::Args, Debug, Serialize)]
pub struct UsernameArgs {
    /// The user's login name
    #[arg(long, value_name = "NAME")]
    pub username: String,
}

impl UsernameArgs {
    /// The arguments of one request.
    pub fn new(username: &str) -> Self {
        UsernameArgs {
            username: username.into(),
        }
    }
}

/// What `set-password` and `login` take.
#[derive(clap::Args, Debug, Serialize)]
pub struct PasswordArgs {
    /// The user's login name
    #[arg(long, value_name = "NAME")]
    pub username: String,
    /// Read the password from the first line of stdin (required: never on the command line)
    #[arg(long)]
    pub password_stdin: bool,
}

impl PasswordArgs {
    /// The arguments of one request.
    pub fn new(username: &str) -> Self {
        PasswordArgs {
            username: username.into(),
            password_stdin: true,
        }
    }

    /// The password, read from the input: `--password-stdin` is required, so that a password
    /// never shows in a process list or a shell history.
    pub fn password<S>(&self, ctx: &mut commondb::Context<'_, S>) -> Result<SecretString> {
        if !self.password_stdin {
            return Err(
                Error::usage("the password is read from standard input only")
                    .hint("add --password-stdin and send the password as the first line of stdin"),
            );
        }
        ctx.read_secret_line("password")
    }
}

/// The name of sample user `n` of run `run`, which [`seed`] writes.
pub fn sample_username(n: u64, run: &str) -> String {
    format!("s{run}-{n}")
}

/// The password of the sample users of run `run`.
pub fn sample_password(run: &str) -> String {
    format!("sample password {run}")
}

/// Writes sample users `0..count` of run `run` (one argon2id hash for all, if `password`).
pub async fn seed(tx: &mut Tx<'_>, run: &str, count: u64, password: bool) -> Result<u64> {
    let hash = password
        .then(|| {
            let secret = SecretString::from(sample_password(run));
            users::hash_password(&secret, &HashSettings::default())
        })
        .transpose()?;
    for n in 0..count {
        let name = sample_username(n, run);
        let user = NewUser::hashed(&name, &format!("{name}@example.com"), hash.clone())?;
        users::insert(tx, user).await?;
    }
    Ok(count)
}

/// An account as the read tasks show it: a [`User`] (the hash never leaves the database's
/// side), told as found rather than as created.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Account(pub User);

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.0;
        write!(
            f,
            "user {} <{}> (id {}, {}), created {}",
            u.username,
            u.email,
            u.id,
            u.password_words(),
            time(&u.created_at)
        )
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A row of `users` as read.
#[derive(sqlx::FromRow)]
struct Stored {
    id: i64,
    username: String,
    email: String,
    password_hash: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<Stored> for Account {
    fn from(row: Stored) -> Account {
        Account(User {
            id: row.id,
            username: row.username,
            email: row.email,
            has_password: row.password_hash.is_some(),
            created_at: row.created_at,
        })
    }
}

fn not_found(username: &Username) -> Error {
    Error::not_found(format!("there is no user \"{}\"", username.as_str()))
}

/// The user called `username`, or `not_found`.
pub async fn get(tx: &mut Tx<'_>, username: Username) -> Result<Account> {
    let row: Option<Stored> = tx
        .fetch_optional(
            "SELECT id, username, email, password_hash, created_at FROM users WHERE username = ?",
            (username.as_str(),),
        )
        .await?;
    row.map(Account::from).ok_or_else(|| not_found(&username))
}

/// What `delete-user` reports.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// The user's id.
    pub id: i64,
    /// The username.
    pub username: String,
    /// How many of the user's sessions went with it.
    pub sessions: u64,
}

impl fmt::Display for Deleted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deleted user {} (id {}) and {} session(s)",
            self.username, self.id, self.sessions
        )
    }
}

#[derive(sqlx::FromRow)]
struct Id {
    id: i64,
}

/// Removes the user called `username` and their sessions, or fails with `not_found` and
/// removes nothing.
pub async fn delete(tx: &mut Tx<'_>, username: Username) -> Result<Deleted> {
    let row: Option<Id> = tx
        .fetch_optional(
            "SELECT id FROM users WHERE username = ?",
            (username.as_str(),),
        )
        .await?;
    let id = row.ok_or_else(|| not_found(&username))?.id;
    let sessions = tx
        .execute("DELETE FROM sessions WHERE user_id = ?", (id,))
        .await?;
    // Another delete of the same user may have come first: then this one found nothing.
    if tx.execute("DELETE FROM users WHERE id = ?", (id,)).await? == 0 {
        return Err(not_found(&username));
    }
    Ok(Deleted {
        id,
        username: username.as_str().to_string(),
        sessions,
    })
}

/// A new password, hashed, for an existing user.
#[derive(Debug)]
pub struct NewPassword {
    username: Username,
    hash: String,
}

impl NewPassword {
    /// Validates the name and hashes the password.
    pub fn new(username: &str, password: &SecretString, settings: &HashSettings) -> Result<Self> {
        Ok(NewPassword {
            username: Username::parse(username)?,
            hash: users::hash_password(password, settings)?,
        })
    }
}

/// What `set-password` reports.
#[derive(Debug, Serialize)]
pub struct PasswordSet {
    /// The username.
    pub username: String,
}

impl fmt::Display for PasswordSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "set a new password for user {}", self.username)
    }
}

/// Gives the user their new password's hash, or fails with `not_found`.
pub async fn set_password(tx: &mut Tx<'_>, new: NewPassword) -> Result<PasswordSet> {
    let changed = tx
        .execute(
            "UPDATE users SET password_hash = ? WHERE username = ?",
            (new.hash.as_str(), new.username.as_str()),
        )
        .await?;
    if changed == 0 {
        return Err(not_found(&new.username));
    }
    Ok(PasswordSet {
        username: new.username.as_str().to_string(),
    })
}

/// The most users one listing streams (a service answers at most
/// [`commondb::MAX_SERVED_ROWS`] at once).
pub const MAX_LIMIT: u32 = 1_000_000_000;

/// What `list-users --list` takes.
#[derive(clap::Args, Debug, Serialize)]
pub struct ListArgs {
    /// Only users whose name starts with this
    #[arg(long, value_name = "TEXT")]
    pub prefix: Option<String>,
    /// Only users created at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub created_since: Option<String>,
    /// Only users created before this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub created_before: Option<String>,
    /// Only users after this id: the `next` of the previous page
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
    /// At most this many users, 1 to 1000000000 (streamed: memory stays flat; over --serve at
    /// most 10000)
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u32,
}

impl ListArgs {
    /// A listing of up to `limit` users whose name starts with `prefix`.
    pub fn new(prefix: Option<&str>, after: Option<i64>, limit: u32) -> Self {
        ListArgs {
            prefix: prefix.map(String::from),
            created_since: None,
            created_before: None,
            after,
            limit,
        }
    }
}

/// A validated listing.
#[derive(Debug)]
pub struct Listing {
    /// The usernames from this one …
    from: String,
    /// … to before this one: every name that starts with the prefix, and no other (names are
    /// compared byte by byte on every backend, and `~` sorts after every character a name may
    /// hold), so that the unique index on `username` finds them.
    to: String,
    since: DateTime<Utc>,
    before: DateTime<Utc>,
    bounds: Bounds,
}

/// The earliest and latest times every backend stores (MySQL's `DATETIME` range).
fn bounds() -> (DateTime<Utc>, DateTime<Utc>) {
    let day = |y, m, d| {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .unwrap_or_default()
    };
    (day(1000, 1, 1), day(9999, 12, 31))
}

fn parse_time(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(text).map_err(|e| {
        Error::invalid_input(format!(
            "{flag} {} is not a time: {e}",
            commondb::error::shown(text, 40)
        ))
        .hint("give an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")
    })?;
    let (first, last) = bounds();
    let t = t.with_timezone(&Utc);
    if t < first || t > last {
        return Err(Error::invalid_input(format!(
            "{flag} {text} is out of range: years 1000 to 9999"
        )));
    }
    Ok(t)
}

impl Listing {
    /// Checks the prefix, the times, the cursor and the limit.
    pub fn new(args: &ListArgs) -> Result<Listing> {
        let (from, to) = match &args.prefix {
            None => (String::new(), "~".to_string()),
            Some(prefix) => {
                let valid = prefix.len() <= 32
                    && prefix
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
                if !valid {
                    return Err(Error::invalid_input(format!(
                        "--prefix {} cannot begin a username",
                        commondb::error::shown(prefix, 40)
                    ))
                    .hint(format!("a username has {}", Username::RULE)));
                }
                (prefix.clone(), format!("{prefix}~"))
            }
        };
        let (first, last) = bounds();
        let since = match &args.created_since {
            Some(t) => parse_time("--created-since", t)?,
            None => first,
        };
        let before = match &args.created_before {
            Some(t) => parse_time("--created-before", t)?,
            None => last,
        };
        Ok(Listing {
            from,
            to,
            since,
            before,
            bounds: Bounds::up_to(args.after, args.limit, MAX_LIMIT)?,
        })
    }
}

impl commondb::Row for Account {
    const COLUMNS: &'static [&'static str] = &["id", "username", "email", "password", "created_at"];

    fn cells(&self) -> Vec<String> {
        let u = &self.0;
        let password = if u.has_password { "yes" } else { "no" };
        vec![
            u.id.to_string(),
            u.username.clone(),
            u.email.clone(),
            password.to_string(),
            time(&u.created_at),
        ]
    }
}

/// What a listing says after its rows: how many, and where the next page begins.
#[derive(Debug, Serialize)]
pub struct Listed {
    /// How many users were listed.
    pub count: u64,
    /// The cursor of the next page (`--after`), if there are more users.
    pub next: Option<i64>,
}

impl fmt::Display for Listed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.next {
            Some(next) => write!(f, "{} user(s); more with --after {next}", self.count),
            None => write!(f, "{} user(s)", self.count),
        }
    }
}

/// Streams the users the listing selects, by id (keyset pagination: a page costs the same
/// wherever it starts), each as it is read: memory stays flat whatever the limit.
pub async fn list(tx: &mut Tx<'_>, listing: Listing) -> Result<Listed> {
    let mut cut = listing.bounds.cut();
    let count = tx
        .stream(
            "SELECT id, username, email, password_hash, created_at FROM users \
             WHERE id > ? AND username >= ? AND username < ? AND created_at >= ? AND created_at < ? \
             ORDER BY id LIMIT ?",
            (
                listing.bounds.after,
                listing.from.as_str(),
                listing.to.as_str(),
                listing.since,
                listing.before,
                listing.bounds.fetch(),
            ),
            |row: Stored| Ok(cut.admit(row.id).then(|| Account::from(row))),
        )
        .await?;
    Ok(Listed {
        count,
        next: cut.next(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use commondb::ErrorKind;

    #[test]
    fn listings_are_checked_before_the_database() {
        let l = Listing::new(&ListArgs::new(Some("a_b"), Some(7), 1)).unwrap();
        assert_eq!((l.from.as_str(), l.to.as_str()), ("a_b", "a_b~"));
        // `~` sorts after every character a username may hold.
        assert!(['a', 'z', '0', '9', '.', '_', '-'].iter().all(|c| *c < '~'));
        Listing::new(&ListArgs::new(None, None, MAX_LIMIT)).unwrap();
        for bad in [
            ListArgs::new(Some("A"), None, 10),
            ListArgs::new(Some("a%"), None, 10),
            ListArgs::new(Some(&"a".repeat(33)), None, 10),
            ListArgs::new(None, None, 0),
            ListArgs::new(None, None, MAX_LIMIT + 1),
            ListArgs::new(None, Some(-1), 10),
        ] {
            let e = Listing::new(&bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        let mut timed = ListArgs::new(None, None, 10);
        timed.created_since = Some("2026-12-01T00:00:00+01:00".into());
        let l = Listing::new(&timed).unwrap();
        assert_eq!(time(&l.since), "2026-11-30T23:00:00.000000Z");
        for bad in ["yesterday", "2026-13-01T00:00:00Z", "0999-01-01T00:00:00Z"] {
            timed.created_since = Some(bad.into());
            assert!(Listing::new(&timed).is_err(), "{bad}");
        }
    }
}
