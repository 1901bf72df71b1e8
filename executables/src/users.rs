//! Users: the domain of `create-user`, `get-user`, `list-users`, `delete-user`,
//! `set-password` and `login`. Validation, password hashing and storing a new user; nothing
//! here knows about modes, configuration or exit codes beyond the [`Error`] kinds.

use std::fmt;
use std::ops::RangeInclusive;

use chrono::{DateTime, SubsecRound, Utc};
use commondb::secrets::SecretString;
use commondb::{Case, Error, ErrorKind, Migrations, Result, Tx};
use serde::{Deserialize, Serialize};

/// The domain's name: its executables share the database `users.sqlite3` (or the database
/// their URL names) and its backups.
pub const DOMAIN: &str = "users";

/// What the domain's database was named after before the domain had more executables than
/// `create-user`: each of them declares it ([`commondb::Task::FORMERLY`]), so that none starts
/// a new, empty `users.sqlite3` beside an old `create-user.sqlite3`.
pub const FORMERLY: &[&str] = &["create-user"];

/// The domain's schema: `users`, and the `sessions` that `login` opens.
pub const MIGRATIONS: &Migrations = &Migrations {
    sqlite: sqlx::migrate!("migrations/users/sqlite"),
    postgres: sqlx::migrate!("migrations/users/postgres"),
    mysql: sqlx::migrate!("migrations/users/mysql"),
};

/// What `create-user --create` takes.
#[derive(clap::Args, Debug, Serialize)]
pub struct CreateArgs {
    /// Login name: 3 to 32 of a-z, 0-9, '.', '_', '-', starting with a letter
    #[arg(long, value_name = "NAME")]
    pub username: String,
    /// Email address, like name@example.com
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
    /// Read a password from the first line of stdin; only its argon2id hash is stored
    #[arg(long)]
    pub password_stdin: bool,
}

impl CreateArgs {
    /// The arguments of one request.
    pub fn new(username: &str, email: &str, password_stdin: bool) -> Self {
        CreateArgs {
            username: username.into(),
            email: email.into(),
            password_stdin,
        }
    }

    /// Sample request `n` of run `run`: unique per `n` and `run`, no password (so that load
    /// tests measure the database, not argon2).
    pub fn sample(n: u64, run: &str) -> Self {
        Self::new(
            &format!("s{run}-{n}"),
            &format!("s{run}-{n}@example.com"),
            false,
        )
    }
}

/// `create-user`'s own self-test cases, run in order on one scratch database.
pub fn cases() -> Vec<Case<CreateArgs>> {
    let hashed = "SELECT COUNT(*) FROM users \
                  WHERE password_hash LIKE '$argon2id$%' AND password_hash NOT LIKE '%horse%'";
    vec![
        Case::new(
            "a username with capitals is refused",
            CreateArgs::new("Alice", "a@example.com", false),
        )
        .fails_with(ErrorKind::InvalidInput),
        Case::new(
            "a user without a password is created",
            CreateArgs::new("alice", "alice@example.com", false),
        ),
        Case::new(
            "a taken username is refused with any email",
            CreateArgs::new("alice", "other@example.com", false),
        )
        .fails_with(ErrorKind::Conflict),
        Case::new(
            "a password from stdin is stored only as its argon2id hash",
            CreateArgs::new("carol", "c@example.com", true),
        )
        .input("correct horse battery staple\n")
        .then_count(hashed, 1),
        Case::new(
            "an empty password is refused",
            CreateArgs::new("dave", "d@example.com", true),
        )
        .input("\n")
        .fails_with(ErrorKind::InvalidInput),
    ]
}

/// A validated username: 3 to 32 characters of `a-z`, `0-9`, `.`, `_`, `-`, starting with a
/// letter. Lowercase only, so that two names never differ by case alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// What a username may look like, for error messages and `--help`.
    pub const RULE: &'static str = "3 to 32 characters: lowercase letters a-z, digits, '.', '_' or '-', starting with a letter";

    /// Validates `name`.
    pub fn parse(name: &str) -> Result<Username> {
        let valid = (3..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if valid {
            Ok(Username(name.to_string()))
        } else {
            Err(
                Error::invalid_input(format!("username {} is not valid", shown(name)))
                    .hint(format!("a username has {}", Self::RULE)),
            )
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name no user has (it is too short to be valid): what a lookup of an invalid name
    /// searches for, so that it fails as an unknown name would.
    pub fn nobody() -> Username {
        Username(String::new())
    }
}

/// A validated email address, by the WHATWG definition that browsers apply to
/// `<input type=email>`: a local part of letters, digits and ``.!#$%&'*+/=?^_`{|}~-``, an `@`,
/// and a domain of dot-separated labels of letters, digits and inner hyphens (each at most 63
/// characters); at most 254 characters in all, 64 before the `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// What an address may look like, for error messages.
    pub const RULE: &'static str = "an address like name@example.com: before the @ letters, digits \
        and .!#$%&'*+/=?^_`{|}~-; after it, labels of letters, digits and hyphens joined by dots";

    /// Validates `address`.
    pub fn parse(address: &str) -> Result<Email> {
        let valid = address.len() <= 254
            && address.split_once('@').is_some_and(|(local, domain)| {
                (1..=64).contains(&local.len())
                    && local
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c))
                    && domain.split('.').all(valid_label)
            });
        if valid {
            Ok(Email(address.to_string()))
        } else {
            Err(
                Error::invalid_input(format!("email {} is not valid", shown(address)))
                    .hint(format!("give {}", Self::RULE)),
            )
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A user's input, quoted and cut short for an error message (so that control characters or a
/// huge value cannot mess up a terminal).
fn shown(value: &str) -> String {
    commondb::error::shown(value, 64)
}

/// How passwords are hashed: argon2id with these costs. The defaults are OWASP's
/// recommendation (19 MiB, 2 passes, 1 lane); load tests may lower them in `[task]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashSettings {
    /// Memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// Number of passes.
    pub argon2_iterations: u32,
    /// Degree of parallelism.
    pub argon2_parallelism: u32,
}

impl Default for HashSettings {
    fn default() -> Self {
        HashSettings {
            argon2_memory_kib: argon2::Params::DEFAULT_M_COST,
            argon2_iterations: argon2::Params::DEFAULT_T_COST,
            argon2_parallelism: argon2::Params::DEFAULT_P_COST,
        }
    }
}

/// The costs `[task]` may set (the README documents them): argon2 itself would take up to
/// 4 TiB and 2^32 passes, which ends in an allocation failure or a hash that never finishes.
pub const ARGON2_MEMORY_KIB: RangeInclusive<u32> = 8..=1024 * 1024;
/// The number of passes `[task]` may set.
pub const ARGON2_ITERATIONS: RangeInclusive<u32> = 1..=64;
/// The degree of parallelism `[task]` may set.
pub const ARGON2_PARALLELISM: RangeInclusive<u32> = 1..=64;

impl HashSettings {
    /// The argon2 parameters, if every cost is within its documented range.
    pub fn params(&self) -> Result<argon2::Params> {
        let costs = [
            (
                "argon2_memory_kib",
                self.argon2_memory_kib,
                ARGON2_MEMORY_KIB,
            ),
            (
                "argon2_iterations",
                self.argon2_iterations,
                ARGON2_ITERATIONS,
            ),
            (
                "argon2_parallelism",
                self.argon2_parallelism,
                ARGON2_PARALLELISM,
            ),
        ];
        for (name, value, range) in costs {
            commondb::config::in_range(&format!("[task] setting {name}"), value, range, || {
                format!(
                    "fix {name} in the [task] table or {}",
                    commondb::config::env_var(&format!("task.{name}"))
                )
            })?;
        }
        argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        )
        .map_err(|e| {
            Error::config(format!("the argon2 settings are not valid: {e}"))
                .hint("argon2_memory_kib must be at least 8 × argon2_parallelism")
        })
    }
}

/// Hashes `password` with argon2id and a random salt, as a PHC string (`$argon2id$v=19$…`).
pub fn hash_password(password: &SecretString, settings: &HashSettings) -> Result<String> {
    crate::passwords::hash(password, settings.params()?)
}

/// A user ready to be stored: validated, password hashed, timestamp taken.
#[derive(Debug)]
pub struct NewUser {
    username: Username,
    email: Email,
    password_hash: Option<String>,
    created_at: DateTime<Utc>,
}

impl NewUser {
    /// Validates the fields and takes `password_hash` as it is (seeds share one hash).
    pub fn hashed(username: &str, email: &str, password_hash: Option<String>) -> Result<NewUser> {
        Ok(NewUser {
            username: Username::parse(username)?,
            email: Email::parse(email)?,
            password_hash,
            created_at: Utc::now().trunc_subsecs(6),
        })
    }

    /// Validates the fields and hashes the password, if one is given.
    pub fn new(
        username: &str,
        email: &str,
        password: Option<SecretString>,
        settings: &HashSettings,
    ) -> Result<NewUser> {
        let username = Username::parse(username)?;
        let email = Email::parse(email)?;
        let password_hash = password.map(|p| hash_password(&p, settings)).transpose()?;
        Ok(NewUser {
            username,
            email,
            password_hash,
            // Microseconds: what every backend stores, so a stored time reads back equal.
            created_at: Utc::now().trunc_subsecs(6),
        })
    }
}

/// A stored user, as printed (the hash never leaves the database).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    /// The id the database gave it.
    pub id: i64,
    /// The username.
    pub username: String,
    /// The email address.
    pub email: String,
    /// Whether a password is set.
    pub has_password: bool,
    /// When it was created, in UTC.
    pub created_at: DateTime<Utc>,
}

impl User {
    /// Whether it has a password, in words.
    pub fn password_words(&self) -> &'static str {
        if self.has_password {
            "with a password"
        } else {
            "no password"
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "created user {} <{}> (id {}, {}) at {}",
            self.username,
            self.email,
            self.id,
            self.password_words(),
            self.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }
}

/// Stores `user`; a taken username is a conflict and writes nothing.
pub async fn insert(tx: &mut Tx<'_>, user: NewUser) -> Result<User> {
    let id = tx
        .insert(
            "INSERT INTO users (username, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
            "id",
            (
                user.username.as_str(),
                user.email.as_str(),
                user.password_hash.as_deref(),
                user.created_at,
            ),
        )
        .await
        .map_err(|e| {
            e.on_conflict(|| format!("username \"{}\" is already taken", user.username.as_str()))
        })?;
    Ok(User {
        id,
        username: user.username.0,
        email: user.email.0,
        has_password: user.password_hash.is_some(),
        created_at: user.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use commondb::ErrorKind;

    #[test]
    fn usernames_follow_the_rule() {
        for ok in [
            "abc",
            "alice",
            "a.b_c-d",
            "x123456789012345678901234567890x",
        ] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Alice",
            "1abc",
            "_abc",
            "al ice",
            "alïce",
            "a\u{0}bc",
            &"a".repeat(33),
            "",
        ] {
            let e = Username::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
            assert!(e.hint_text().unwrap().contains("3 to 32"));
        }
    }

    #[test]
    fn emails_follow_the_whatwg_rule() {
        for ok in [
            "a@b",
            "alice@example.com",
            "a.b+tag@sub-domain.example.org",
            "x!#$%&'*+/=?^_`{|}~-@e.co",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        let long_local = format!("{}@e.com", "a".repeat(65));
        let long_label = format!("a@{}.com", "b".repeat(64));
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a@b@c",
            "a b@c.d",
            "a@-b.com",
            "a@b-.com",
            "a@b..com",
            "a@.com",
            "a@b.com.",
            "a@exa mple.com",
            "a\n@b.c",
            &long_local,
            &long_label,
        ] {
            assert_eq!(
                Email::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_quote_the_input_safely_and_briefly() {
        let e = Username::parse("bad\u{1b}[31mname").unwrap_err();
        assert!(!e.message().contains('\u{1b}'), "{}", e.message());
        let e = Email::parse(&"x".repeat(1000)).unwrap_err();
        assert!(e.message().len() < 120, "{}", e.message());
    }

    #[test]
    fn passwords_are_stored_as_salted_argon2id_hashes() {
        let cheap = HashSettings {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            argon2_parallelism: 1,
        };
        let pw = SecretString::from("correct horse");
        let a = hash_password(&pw, &cheap).unwrap();
        let b = hash_password(&pw, &cheap).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert!(!a.contains("correct horse"));
        assert_ne!(a, b, "each hash has its own salt");
    }

    #[test]
    fn impossible_argon2_settings_are_a_configuration_error() {
        let bad = HashSettings {
            argon2_memory_kib: 1,
            argon2_iterations: 1,
            argon2_parallelism: 1,
        };
        let e = hash_password(&SecretString::from("x"), &bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        let cheap = HashSettings {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            argon2_parallelism: 1,
        };
        for (bad, name) in [
            (
                HashSettings {
                    argon2_memory_kib: u32::MAX,
                    ..cheap.clone()
                },
                "argon2_memory_kib",
            ),
            (
                HashSettings {
                    argon2_iterations: u32::MAX,
                    ..cheap.clone()
                },
                "argon2_iterations",
            ),
            (
                HashSettings {
                    argon2_parallelism: 0,
                    ..cheap.clone()
                },
                "argon2_parallelism",
            ),
            (
                HashSettings {
                    argon2_parallelism: 1 << 20,
                    ..cheap.clone()
                },
                "argon2_parallelism",
            ),
        ] {
            let e = hash_password(&SecretString::from("x"), &bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(
                e.message().contains(name) && e.message().contains(" to "),
                "{}",
                e.message()
            );
        }
    }
}
