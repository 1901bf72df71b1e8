//! Sessions: `login` checks a user's password ([`check`], before any write) and issues a
//! session token ([`login`]). The token is shown once; the database keeps only its SHA-256,
//! with an expiry.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use commondb::secrets::SecretString;
use commondb::{Error, Result, Tx};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::passwords::Reserved;
use crate::users::{HashSettings, Username};

/// `login`'s `[task]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// How long a session lasts, in seconds.
    pub session_ttl_secs: u32,
    /// The argon2 costs the users' hashes were made with (`create-user`'s and
    /// `set-password`'s `[task]`): an unknown user's password is checked against a stand-in
    /// hash of these costs, so that it takes as long as a known user's.
    pub argon2_memory_kib: u32,
    /// See `argon2_memory_kib`.
    pub argon2_iterations: u32,
    /// See `argon2_memory_kib`.
    pub argon2_parallelism: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        let hash = HashSettings::default();
        SessionSettings {
            session_ttl_secs: 24 * 3600,
            argon2_memory_kib: hash.argon2_memory_kib,
            argon2_iterations: hash.argon2_iterations,
            argon2_parallelism: hash.argon2_parallelism,
        }
    }
}

impl SessionSettings {
    fn hash(&self) -> HashSettings {
        HashSettings {
            argon2_memory_kib: self.argon2_memory_kib,
            argon2_iterations: self.argon2_iterations,
            argon2_parallelism: self.argon2_parallelism,
        }
    }
}

/// The hash an unknown user's password is checked against, for `settings`' costs: [`NOBODY`]
/// for the defaults; else a hash of a random password made with them, once per process (a
/// service makes it once; a one-shot login pays for it whether or not the user exists).
fn stand_in(settings: &HashSettings) -> Result<Arc<str>> {
    /// argon2's three costs: memory in KiB, passes, lanes.
    type Costs = (u32, u32, u32);
    static MADE: Mutex<Option<(Costs, Arc<str>)>> = Mutex::new(None);
    let costs = (
        settings.argon2_memory_kib,
        settings.argon2_iterations,
        settings.argon2_parallelism,
    );
    let default = HashSettings::default();
    let defaults = (
        default.argon2_memory_kib,
        default.argon2_iterations,
        default.argon2_parallelism,
    );
    if costs == defaults {
        return Ok(Arc::from(NOBODY));
    }
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((for_costs, hash)) = &*made
        && *for_costs == costs
    {
        return Ok(Arc::clone(hash));
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| Error::internal(format!("no random bytes for a stand-in: {e}")))?;
    let secret = SecretString::from(hex::encode(random));
    let hash: Arc<str> = Arc::from(crate::passwords::hash(&secret, settings.params()?)?);
    *made = Some((costs, Arc::clone(&hash)));
    Ok(hash)
}

/// The lifetimes `[task]` may set: a minute to a year.
pub const SESSION_TTL_SECS: RangeInclusive<u32> = 60..=366 * 24 * 3600;

/// The hash an unknown user's password is checked against when the costs are the defaults, so
/// that a login takes the same time whether or not the user exists: argon2id with the costs
/// `create-user` uses by default, of a random password no one kept.
const NOBODY: &str = "$argon2id$v=19$m=19456,t=2,p=1$gMh+Ufxb6/Cfj6Q//xnJDw$5/fJ5thMsxsCmYRmCOX4/aKnjY37aAofUO2G1oynj68";

/// A login, checked as far as it can be without the database, its token drawn; once its
/// password is checked ([`check`]), the user and the hash it was checked against.
pub struct Attempt {
    username: Username,
    password: SecretString,
    token: String,
    ttl: chrono::Duration,
    /// What an unknown user's password is checked against.
    stand_in: Arc<str>,
    /// The argon2 buffer the check will use, reserved before any connection is taken, so that
    /// no login holds a connection while it waits for one.
    buffer: Option<Reserved>,
    checked: Option<(i64, String)>,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attempt({})", self.username.as_str())
    }
}

impl Attempt {
    /// Validates the name and the settings and draws the session token.
    pub fn new(
        username: &str,
        password: SecretString,
        settings: &SessionSettings,
    ) -> Result<Attempt> {
        commondb::config::in_range(
            "[task] setting session_ttl_secs",
            settings.session_ttl_secs,
            SESSION_TTL_SECS,
            || "fix session_ttl_secs in the [task] table".to_string(),
        )?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::internal(format!("no random bytes for a token: {e}")))?;
        Ok(Attempt {
            // An unknown or invalid name is a wrong login like any other, not an invalid
            // request: the answer must not tell names that exist from names that cannot.
            username: Username::parse(username).unwrap_or_else(|_| Username::nobody()),
            password,
            token: hex::encode(bytes),
            ttl: chrono::Duration::seconds(i64::from(settings.session_ttl_secs)),
            stand_in: stand_in(&settings.hash())?,
            buffer: Some(Reserved::wait()),
            checked: None,
        })
    }
}

/// A session that was opened: its token, shown once.
#[derive(Debug, Serialize)]
pub struct Session {
    /// Whose.
    pub username: String,
    /// The token: 64 hex digits. Only its hash is stored.
    pub token: String,
    /// When it ends, in UTC.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "logged in as {} until {}; the session token (shown only now):",
            self.username,
            self.expires_at.to_rfc3339_opts(SecondsFormat::Micros, true)
        )?;
        write!(f, "{}", self.token)
    }
}

#[derive(sqlx::FromRow)]
struct Credentials {
    id: i64,
    password_hash: Option<String>,
}

/// The one answer to a wrong username, a wrong password and a user without a password.
fn refused() -> Error {
    Error::permission("the username or the password is wrong")
}

/// Checks the password against the user's hash (or, for an unknown user, against the stand-in
/// of the same costs, which takes as long) on the blocking pool. Runs in a read-only transaction of its own
/// (`READS_FIRST`): the slow hash holds no write lock.
pub async fn check(tx: &mut Tx<'_>, mut attempt: Attempt) -> Result<Attempt> {
    let found: Option<Credentials> = tx
        .fetch_optional(
            "SELECT id, password_hash FROM users WHERE username = ?",
            (attempt.username.as_str(),),
        )
        .await?;
    let (id, hash) = match found {
        Some(Credentials {
            id,
            password_hash: Some(hash),
        }) => (Some(id), hash),
        _ => (None, attempt.stand_in.to_string()),
    };
    let password = attempt.password.clone();
    let checked_hash = hash.clone();
    // Reserved in prepare, before the connection: taken here, it is returned once the check
    // is done.
    let mut buffer = attempt.buffer.take().unwrap_or_else(Reserved::wait);
    let matches = tokio::task::spawn_blocking(move || {
        crate::passwords::verify_in(&mut buffer, &password, &checked_hash)
    })
    .await
    .map_err(|e| Error::internal(format!("checking the password failed: {e}")))?;
    match id.filter(|_| matches) {
        Some(id) => {
            attempt.checked = Some((id, hash));
            Ok(attempt)
        }
        None => Err(refused()),
    }
}

/// Opens the session of a checked attempt: stores the token's hash, if the user still has the
/// password that was checked (else it was changed, or the user deleted, meanwhile: refused).
pub async fn login(tx: &mut Tx<'_>, attempt: Attempt) -> Result<Session> {
    let (id, hash) = attempt
        .checked
        .ok_or_else(|| Error::internal("a login reached its write before its password check"))?;
    let now = Utc::now().trunc_subsecs(6);
    let expires_at = now + attempt.ttl;
    let token_hash = hex::encode(sha2::Sha256::digest(attempt.token.as_bytes()));
    let opened = tx
        .execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
             SELECT ?, id, ?, ? FROM users WHERE id = ? AND password_hash = ?",
            (token_hash.as_str(), now, expires_at, id, hash.as_str()),
        )
        .await?;
    if opened == 0 {
        return Err(refused());
    }
    Ok(Session {
        username: attempt.username.as_str().to_string(),
        token: attempt.token,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_hash_is_argon2id_with_the_default_costs() {
        let parsed = argon2::password_hash::phc::PasswordHash::new(NOBODY).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        let params = argon2::Params::try_from(&parsed).unwrap();
        let default = argon2::Params::default();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
    }

    #[test]
    fn the_stand_in_has_the_configured_costs() {
        let default = stand_in(&HashSettings::default()).unwrap();
        assert_eq!(&*default, NOBODY);
        let cheap = HashSettings {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            argon2_parallelism: 1,
        };
        let made = stand_in(&cheap).unwrap();
        assert!(made.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{made}");
        // Made once per process for the same costs.
        assert_eq!(made, stand_in(&cheap).unwrap());
    }

    #[test]
    fn tokens_are_fresh_and_invalid_names_are_only_wrong_logins() {
        let settings = SessionSettings::default();
        let pw = || SecretString::from("x".to_string());
        // One at a time: each attempt holds one of the argon2 buffers until it is dropped.
        let a = Attempt::new("alice", pw(), &settings).unwrap().token;
        let b = Attempt::new("alice", pw(), &settings).unwrap().token;
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        drop(Attempt::new("Not A Name", pw(), &settings).unwrap());
        let short = SessionSettings {
            session_ttl_secs: 1,
            ..SessionSettings::default()
        };
        assert!(Attempt::new("alice", pw(), &short).is_err());
    }
}
