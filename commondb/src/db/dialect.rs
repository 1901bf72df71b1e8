//! What differs between the database servers: the SQL text of setup and cleanup, identifier
//! quoting, placeholders, and how a role's password is sent.
//!
//! A [`Dialect`] only builds SQL; `server.rs` runs it, in one flow for both servers. Every
//! identifier passed in has already been checked by [`super::schema::quote_identifier`]'s
//! pattern, so quoting here cannot be escaped.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Digest;

use crate::error::{Error, Result};

/// The SQL that setup, cleanup and the checks run on one kind of server.
pub(crate) trait Dialect: Sync {
    /// Quotes a validated identifier.
    fn quote(&self, name: &str) -> String;
    /// The longest role name the server accepts.
    fn max_role_len(&self) -> usize;
    /// One row, one `BIGINT`: 1 if the server-wide setup lock was taken, else 0.
    fn try_lock(&self) -> &'static str;
    /// Releases the setup lock.
    fn unlock(&self) -> &'static str;
    /// `COUNT(*)` of databases named by the one parameter.
    fn database_exists(&self) -> &'static str;
    /// Creates database `db` (quoted).
    fn create_database(&self, db: &str) -> String;
    /// Drops database `db` (quoted), ending other sessions on it.
    fn drop_database(&self, db: &str) -> String;
    /// Ids of other sessions using the database named by the one parameter, where the server
    /// needs them ended before a drop.
    fn other_sessions(&self) -> Option<&'static str>;
    /// Ends session `id`.
    fn kill_session(&self, id: i64) -> String;
    /// `COUNT(*)` of roles named by the one parameter.
    fn role_exists(&self) -> &'static str;
    /// Creates login role `role` (quoted) with the password given as a server-side verifier.
    fn create_role(&self, role: &str, verifier: &str) -> String;
    /// Sets the password of `role` (quoted).
    fn set_password(&self, role: &str, verifier: &str) -> String;
    /// Revokes what `role` (quoted) was granted in the current database, before the role is
    /// dropped from a database that stays.
    fn revoke_in_database(&self, role: &str) -> Option<String>;
    /// Drops `role` (quoted).
    fn drop_role(&self, role: &str) -> String;
    /// The names of the current database's tables.
    fn tables(&self) -> &'static str;
    /// The grants that give `app` read and write on `tables`, `backup` read on them, and both
    /// read on the migrations table; database-level rights too where the server has them.
    fn grants(
        &self,
        db: &str,
        tables: &[String],
        app: &str,
        backup: &str,
        created_db: bool,
    ) -> Vec<String>;
    /// The password as the server stores it, so that the clear text never reaches the server,
    /// its logs or its statement statistics.
    fn verifier(&self, password: &SecretString) -> Result<String>;
    /// Creates the table in which setup records what it created.
    fn marker_table(&self) -> &'static str;
    /// Records `item` (a validated name) as created or found by setup, unless recorded already.
    fn mark(&self, item: &str, created: bool) -> String;
}

/// The session settings of a task's connection to MySQL/MariaDB (what sqlx would send in a
/// round trip of its own at connect): `||` concatenates, as in standard SQL and on the other
/// backends; no silent engine substitution; times in UTC. The character set, utf8mb4, is agreed
/// in the handshake.
pub(crate) const MYSQL_SESSION: &str = "SET sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION'), time_zone = '+00:00'";

/// The table in which setup records what it created, so that cleanup drops only that.
pub(crate) const MARKER_TABLE: &str = "_commondb_setup";

pub(crate) struct Postgres;
pub(crate) struct MySql;

impl Dialect for Postgres {
    fn quote(&self, name: &str) -> String {
        format!("\"{name}\"")
    }
    fn max_role_len(&self) -> usize {
        63
    }
    fn try_lock(&self) -> &'static str {
        // The advisory-lock key is "commondb" as a big-endian integer.
        "SELECT pg_try_advisory_lock(7165065848958116962)::int::bigint"
    }
    fn unlock(&self) -> &'static str {
        "SELECT pg_advisory_unlock(7165065848958116962)::int::bigint"
    }
    fn database_exists(&self) -> &'static str {
        "SELECT COUNT(*) FROM pg_database WHERE datname = $1"
    }
    fn create_database(&self, db: &str) -> String {
        format!("CREATE DATABASE {db}")
    }
    fn drop_database(&self, db: &str) -> String {
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    }
    fn other_sessions(&self) -> Option<&'static str> {
        None
    }
    fn kill_session(&self, id: i64) -> String {
        format!("SELECT pg_terminate_backend({id})")
    }
    fn role_exists(&self) -> &'static str {
        "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1"
    }
    fn create_role(&self, role: &str, verifier: &str) -> String {
        format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '{verifier}'"
        )
    }
    fn set_password(&self, role: &str, verifier: &str) -> String {
        format!("ALTER ROLE {role} PASSWORD '{verifier}'")
    }
    fn revoke_in_database(&self, role: &str) -> Option<String> {
        Some(format!("DROP OWNED BY {role}"))
    }
    fn drop_role(&self, role: &str) -> String {
        format!("DROP ROLE IF EXISTS {role}")
    }
    fn tables(&self) -> &'static str {
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
    }
    fn grants(
        &self,
        db: &str,
        tables: &[String],
        app: &str,
        backup: &str,
        created_db: bool,
    ) -> Vec<String> {
        let mut sql = Vec::new();
        if created_db {
            // New databases let PUBLIC connect and create temporary tables; ours let only its
            // own roles in.
            sql.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
        }
        sql.push(format!("GRANT CONNECT ON DATABASE {db} TO {app}, {backup}"));
        sql.push("REVOKE CREATE ON SCHEMA public FROM PUBLIC".into());
        sql.push(format!("GRANT USAGE ON SCHEMA public TO {app}, {backup}"));
        for t in tables {
            sql.push(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {t} TO {app}"
            ));
            sql.push(format!("GRANT SELECT ON TABLE {t} TO {backup}"));
        }
        sql.push(format!(
            "GRANT SELECT ON TABLE \"_sqlx_migrations\" TO {app}, {backup}"
        ));
        sql.push(format!(
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}"
        ));
        sql.push(format!(
            "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {backup}"
        ));
        sql
    }
    fn verifier(&self, password: &SecretString) -> Result<String> {
        Ok(scram_sha_256(
            password.expose_secret(),
            &random_bytes::<16>()?,
            4096,
        ))
    }
    fn marker_table(&self) -> &'static str {
        "CREATE TABLE IF NOT EXISTS \"_commondb_setup\" (item TEXT PRIMARY KEY, created BOOLEAN NOT NULL)"
    }
    fn mark(&self, item: &str, created: bool) -> String {
        format!(
            "INSERT INTO \"_commondb_setup\" (item, created) VALUES ('{item}', {created}) ON CONFLICT (item) DO NOTHING"
        )
    }
}

impl Dialect for MySql {
    fn quote(&self, name: &str) -> String {
        format!("`{name}`")
    }
    fn max_role_len(&self) -> usize {
        // MySQL's limit; MariaDB allows 80.
        32
    }
    fn try_lock(&self) -> &'static str {
        "SELECT CAST(COALESCE(GET_LOCK('commondb_setup', 0), 0) AS SIGNED)"
    }
    fn unlock(&self) -> &'static str {
        "SELECT CAST(COALESCE(RELEASE_LOCK('commondb_setup'), 0) AS SIGNED)"
    }
    fn database_exists(&self) -> &'static str {
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?"
    }
    fn create_database(&self, db: &str) -> String {
        // utf8mb4_bin: exact comparisons, as on SQLite and PostgreSQL.
        format!("CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    }
    fn drop_database(&self, db: &str) -> String {
        format!("DROP DATABASE IF EXISTS {db}")
    }
    fn other_sessions(&self) -> Option<&'static str> {
        Some(
            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
        )
    }
    fn kill_session(&self, id: i64) -> String {
        format!("KILL CONNECTION {id}")
    }
    fn role_exists(&self) -> &'static str {
        "SELECT COUNT(*) FROM mysql.user WHERE user = ? AND host = '%'"
    }
    fn create_role(&self, role: &str, verifier: &str) -> String {
        format!(
            "CREATE USER {}@'%' IDENTIFIED WITH mysql_native_password AS '{verifier}'",
            user(role)
        )
    }
    fn set_password(&self, role: &str, verifier: &str) -> String {
        format!(
            "ALTER USER {}@'%' IDENTIFIED WITH mysql_native_password AS '{verifier}'",
            user(role)
        )
    }
    fn revoke_in_database(&self, _role: &str) -> Option<String> {
        // DROP USER revokes everything itself.
        None
    }
    fn drop_role(&self, role: &str) -> String {
        format!("DROP USER IF EXISTS {}@'%'", user(role))
    }
    fn tables(&self) -> &'static str {
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1"
    }
    fn grants(
        &self,
        db: &str,
        tables: &[String],
        app: &str,
        backup: &str,
        _created_db: bool,
    ) -> Vec<String> {
        let (app, backup) = (user(app), user(backup));
        let mut sql = Vec::new();
        for t in tables {
            sql.push(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {db}.{t} TO {app}@'%'"
            ));
            sql.push(format!("GRANT SELECT ON {db}.{t} TO {backup}@'%'"));
        }
        sql.push(format!(
            "GRANT SELECT ON {db}.`_sqlx_migrations` TO {app}@'%', {backup}@'%'"
        ));
        sql
    }
    fn verifier(&self, password: &SecretString) -> Result<String> {
        Ok(mysql_native_hash(password.expose_secret()))
    }
    fn marker_table(&self) -> &'static str {
        "CREATE TABLE IF NOT EXISTS `_commondb_setup` (item VARCHAR(100) PRIMARY KEY, created BOOLEAN NOT NULL)"
    }
    fn mark(&self, item: &str, created: bool) -> String {
        format!("INSERT IGNORE INTO `_commondb_setup` (item, created) VALUES ('{item}', {created})")
    }
}

/// A MySQL account name: a quoted `` `role` `` becomes `'role'` (the host is added by the caller).
fn user(quoted: &str) -> String {
    format!("'{}'", quoted.trim_matches('`'))
}

/// Rewrites `?` placeholders to PostgreSQL's `$1`, `$2`, …, leaving `?` inside string
/// literals, quoted identifiers and comments alone.
pub(crate) fn numbered_placeholders(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('?') {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `N` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::internal(format!("the operating system gave no random bytes: {e}")))?;
    Ok(bytes)
}

/// A strong password: 32 characters from an alphabet of 62 (190 bits), so it needs no quoting.
pub(crate) fn generate_password() -> Result<SecretString> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(32);
    while password.len() < 32 {
        for b in random_bytes::<64>()? {
            // Rejection sampling keeps every character equally likely (248 = 4 × 62).
            if b < 248 && password.len() < 32 {
                password.push(ALPHABET[b as usize % 62] as char);
            }
        }
    }
    Ok(SecretString::from(password))
}

/// PostgreSQL's SCRAM-SHA-256 verifier (RFC 7677), as `psql`'s `\password` sends it:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
pub(crate) fn scram_sha_256(password: &str, salt: &[u8], iterations: u32) -> String {
    type HmacSha256 = Hmac<sha2::Sha256>;
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes()
    };
    // Hi() of RFC 5802: PBKDF2 with HMAC-SHA-256 and one block.
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &block);
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &u);
        salted.iter_mut().zip(u.iter()).for_each(|(s, x)| *s ^= x);
    }
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = sha2::Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    )
}

/// MySQL's `mysql_native_password` hash: `*` and the upper-case hex of SHA1(SHA1(password)).
pub(crate) fn mysql_native_hash(password: &str) -> String {
    let twice = sha1::Sha1::digest(sha1::Sha1::digest(password.as_bytes()));
    format!("*{}", hex::encode_upper(twice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_literals_and_comments() {
        assert_eq!(
            numbered_placeholders("INSERT INTO t (a, b) VALUES (?, ?) RETURNING id"),
            "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id"
        );
        assert_eq!(
            numbered_placeholders("SELECT '?', \"a?\", ? -- why?\n, ?"),
            "SELECT '?', \"a?\", $1 -- why?\n, $2"
        );
        assert!(matches!(
            numbered_placeholders("SELECT 1"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_scram_verifier_follows_rfc_7677() {
        // Expected value computed independently with Python's hashlib.pbkdf2_hmac and hmac.
        assert_eq!(
            scram_sha_256("pencil", b"0123456789abcdef", 4096),
            "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$\
             nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20="
        );
    }

    #[test]
    fn the_mysql_hash_matches_the_server_function() {
        // SELECT PASSWORD('password') on MariaDB.
        assert_eq!(
            mysql_native_hash("password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_different() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.expose_secret().len(), 32);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn the_lock_key_is_commondb() {
        let key = i64::from_be_bytes(*b"commondb").to_string();
        assert!(Postgres.try_lock().contains(&key) && Postgres.unlock().contains(&key));
    }
}
