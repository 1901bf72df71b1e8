//! MySQL and MariaDB: their dialect, their password hash (`mysql_native_password`), and how
//! backups read their typed columns.

use chrono::{DateTime, NaiveDateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha1::Digest;
use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::{AssertSqlSafe, Row};

use super::dialect::{Dialect, ServerDialect};
use super::rows::{Kind, Line};
use super::{Backend, check_identifier};
use crate::error::Result;
use crate::task::Right;

/// The session settings of a task's connection to MySQL/MariaDB (what sqlx would send in a
/// round trip of its own at connect): `||` concatenates, as in standard SQL and on the other
/// backends; no silent engine substitution; times in UTC. The character set, utf8mb4, is agreed
/// in the handshake.
pub(crate) const SESSION: &str = "SET sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION'), time_zone = '+00:00'";

/// MySQL's and MariaDB's SQL.
pub(crate) struct MySql;

impl Dialect for MySql {
    fn quote_char(&self) -> char {
        '`'
    }
    fn begin(&self) -> &'static str {
        "START TRANSACTION"
    }
    fn begin_read_only(&self) -> &'static str {
        "START TRANSACTION READ ONLY"
    }
    fn session(&self) -> Option<&'static str> {
        Some(SESSION)
    }
    fn begin_snapshot(&self) -> &'static [&'static str] {
        &[
            SESSION,
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        ]
    }
    fn begin_restore(&self, tables: &[String]) -> Vec<String> {
        let mut sql = vec![SESSION.to_string(), "START TRANSACTION".to_string()];
        // Shared next-key locks on every row and gap: writers wait, snapshot readers don't.
        for t in tables {
            sql.push(format!("SELECT COUNT(*) FROM {t} LOCK IN SHARE MODE"));
        }
        sql
    }
    fn tables(&self) -> &'static str {
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1"
    }
    fn encryption(&self) -> Option<&'static str> {
        Some(
            "SELECT COALESCE((SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_VERSION'), '')",
        )
    }
    fn requests_table(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS `_commondb_requests` (executable VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, answer MEDIUMTEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (executable, id), KEY `_commondb_requests_at` (executable, at))",
        ]
    }
    fn table_exists(&self) -> &'static str {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?"
    }
    fn statement_timeout(&self, timeout_ms: u64) -> Option<String> {
        let secs = timeout_ms.div_ceil(1000).max(1);
        Some(format!(
            "SET SESSION innodb_lock_wait_timeout = {secs}, lock_wait_timeout = {secs}"
        ))
    }
    fn default_pool_size(&self) -> usize {
        16
    }
    fn one_writer(&self) -> bool {
        false
    }
    fn over_sockets(&self) -> bool {
        true
    }
}

impl ServerDialect for MySql {
    fn example_admin_url(&self) -> &'static str {
        "mysql://root@127.0.0.1:3306/"
    }
    fn maintenance_database(&self) -> Option<&'static str> {
        None
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
    fn grants(
        &self,
        db: &str,
        tables: &[String],
        rights: &[(String, &[Right])],
        app: &str,
        backup: &str,
        _created_db: bool,
    ) -> Vec<String> {
        let (app, backup) = (user(app), user(backup));
        let mut sql = Vec::new();
        for (t, rights) in rights {
            let list: Vec<&str> = rights.iter().map(|r| r.sql()).collect();
            sql.push(format!(
                "GRANT {} ON {db}.{t} TO {app}@'%'",
                list.join(", ")
            ));
        }
        for t in tables {
            sql.push(format!("GRANT SELECT ON {db}.{t} TO {backup}@'%'"));
        }
        sql.push(format!(
            "GRANT SELECT ON {db}.`_sqlx_migrations` TO {app}@'%', {backup}@'%'"
        ));
        sql
    }
    fn held_rights(&self) -> &'static str {
        "SELECT CONCAT(TABLE_NAME, ':', PRIVILEGE_TYPE) FROM information_schema.TABLE_PRIVILEGES \
         WHERE GRANTEE = CONCAT('''', ?, '''@''%''') AND TABLE_SCHEMA = DATABASE()"
    }
    fn revoke(&self, db: &str, table: &str, right: &str, role: &str) -> String {
        format!("REVOKE {right} ON {db}.{table} FROM {}@'%'", user(role))
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

/// MySQL's `mysql_native_password` hash: `*` and the upper-case hex of SHA1(SHA1(password)).
pub(crate) fn mysql_native_hash(password: &str) -> String {
    let twice = sha1::Sha1::digest(sha1::Sha1::digest(password.as_bytes()));
    format!("*{}", hex::encode_upper(twice))
}

/// MySQL/MariaDB, from `information_schema.columns`' `data_type` and `column_type` (the
/// protocol's column flags call a `utf8mb4_bin` text column binary).
pub(super) fn kind_of(data_type: &str, column_type: &str) -> Option<Kind> {
    let column_type = column_type.to_ascii_lowercase();
    Some(match data_type.to_ascii_lowercase().as_str() {
        "tinyint" if column_type.starts_with("tinyint(1)") => Kind::Bool,
        "tinyint" | "smallint" | "int" | "mediumint" | "bigint" => {
            if column_type.contains("unsigned") {
                Kind::UInt64
            } else {
                Kind::Int64
            }
        }
        "float" => Kind::Float32,
        "double" => Kind::Float64,
        "char" | "varchar" | "text" | "tinytext" | "mediumtext" | "longtext" | "enum" => Kind::Text,
        "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => Kind::Bytes,
        "datetime" => Kind::Time,
        "timestamp" => Kind::TimeTz,
        _ => return None,
    })
}

/// The columns of `table` with their types, from `information_schema` (the protocol's column
/// flags call a `utf8mb4_bin` text column binary).
pub(super) async fn columns(
    c: &mut MySqlConnection,
    table: &str,
) -> Result<Vec<(String, String, Option<Kind>)>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(column_type AS CHAR) \
         FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(column, data_type, column_type)| {
            let kind = kind_of(&data_type, &column_type);
            (column, column_type, kind)
        })
        .collect())
}

/// Encodes a row of MySQL/MariaDB, whose columns have fixed types.
pub(super) fn encode_row(
    row: &MySqlRow,
    kinds: &[Kind],
    table: &str,
    mut line: Line,
) -> Result<()> {
    for (i, kind) in kinds.iter().enumerate() {
        line.start(i);
        match kind {
            Kind::Int16 => line.json(&row.try_get::<Option<i16>, _>(i)?)?,
            Kind::Int32 => line.json(&row.try_get::<Option<i32>, _>(i)?)?,
            Kind::Int64 => line.json(&row.try_get::<Option<i64>, _>(i)?)?,
            Kind::UInt64 => line.json(&row.try_get::<Option<u64>, _>(i)?)?,
            Kind::Bool => line.json(&row.try_get::<Option<bool>, _>(i)?)?,
            Kind::Text | Kind::Dynamic => line.json(&row.try_get::<Option<&str>, _>(i)?)?,
            Kind::Float32 => match row.try_get::<Option<f32>, _>(i)? {
                Some(v) => line.float(f64::from(v), table)?,
                None => line.json(&())?,
            },
            Kind::Float64 => match row.try_get::<Option<f64>, _>(i)? {
                Some(v) => line.float(v, table)?,
                None => line.json(&())?,
            },
            Kind::Bytes => match row.try_get::<Option<Vec<u8>>, _>(i)? {
                Some(v) => line.bytes(&v)?,
                None => line.json(&())?,
            },
            Kind::TimeTz => match row.try_get::<Option<DateTime<Utc>>, _>(i)? {
                Some(v) => line.time(v)?,
                None => line.json(&())?,
            },
            Kind::Time => match row.try_get::<Option<NaiveDateTime>, _>(i)? {
                Some(v) => line.time(v.and_utc())?,
                None => line.json(&())?,
            },
        }
    }
    line.end();
    Ok(())
}

/// The `AUTO_INCREMENT` column of `table`, if the restored keys reached its type's largest value.
pub(super) async fn exhausted_key(c: &mut MySqlConnection, table: &str) -> Result<Option<String>> {
    let auto: Option<(String, String)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR) \
         FROM information_schema.columns WHERE table_schema = DATABASE() \
         AND table_name = ? AND extra LIKE '%auto_increment%'",
    )
    .bind(table)
    .fetch_optional(&mut *c)
    .await?;
    let Some((column, column_type)) = auto else {
        return Ok(None);
    };
    let Some(largest) = mysql_largest(&column_type) else {
        return Ok(None);
    };
    check_identifier(&column)?;
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE {} >= {largest}",
        Backend::MySql.quote(table),
        Backend::MySql.quote(&column)
    );
    let at_end: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut *c)
        .await?;
    Ok((at_end > 0).then_some(column))
}

/// The largest value of a MySQL/MariaDB integer column type (`bigint(20) unsigned`, say).
fn mysql_largest(column_type: &str) -> Option<u64> {
    let t = column_type.to_ascii_lowercase();
    let bits = [
        ("tinyint", 8),
        ("smallint", 16),
        ("mediumint", 24),
        ("bigint", 64),
        ("int", 32),
    ]
    .iter()
    .find(|(name, _)| t.starts_with(name))?
    .1;
    Some(if t.contains("unsigned") {
        u64::MAX >> (64 - bits)
    } else {
        u64::MAX >> (65 - bits)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_integer_types_have_their_largest_values() {
        assert_eq!(mysql_largest("bigint(20)"), Some(i64::MAX as u64));
        assert_eq!(mysql_largest("BIGINT UNSIGNED"), Some(u64::MAX));
        assert_eq!(mysql_largest("int(11)"), Some(i32::MAX as u64));
        assert_eq!(mysql_largest("int(10) unsigned"), Some(u32::MAX as u64));
        assert_eq!(mysql_largest("mediumint"), Some(8_388_607));
        assert_eq!(mysql_largest("tinyint(4)"), Some(127));
        assert_eq!(mysql_largest("smallint unsigned"), Some(65_535));
        assert_eq!(mysql_largest("varchar(3)"), None);
    }

    #[test]
    fn the_mysql_hash_matches_the_server_function() {
        // SELECT PASSWORD('password') on MariaDB.
        assert_eq!(
            mysql_native_hash("password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }
}
