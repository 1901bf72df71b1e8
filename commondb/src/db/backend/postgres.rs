//! PostgreSQL: its dialect, its password verifier (SCRAM-SHA-256), and its fast paths for
//! backups: binary `COPY` out and in, indexes rebuilt after a load, sequences moved past the
//! restored keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::TryStreamExt;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Digest;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgCopyIn};

use super::dialect::{Dialect, ServerDialect, numbered_placeholders, random_bytes};
use super::rows::{BATCH_BYTES, Bound, Kind, Line, Rows, Sink, Table, quoted_list};
use super::{Backend, check_identifier, classify};
use crate::error::{Error, Result};
use crate::task::Right;

/// PostgreSQL's SQL.
pub(crate) struct Postgres;

impl Dialect for Postgres {
    fn quote_char(&self) -> char {
        '"'
    }
    fn begin(&self) -> &'static str {
        "BEGIN"
    }
    fn begin_read_only(&self) -> &'static str {
        "BEGIN READ ONLY"
    }
    fn placeholders<'a>(&self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        numbered_placeholders(sql)
    }
    fn begin_snapshot(&self) -> &'static [&'static str] {
        &["BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"]
    }
    fn begin_restore(&self, tables: &[String]) -> Vec<String> {
        // One round trip; the lock lets readers go on.
        let mut sql = "SET TIME ZONE 'UTC'; BEGIN".to_string();
        if !tables.is_empty() {
            sql.push_str(&format!(
                "; LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                tables.join(", ")
            ));
        }
        vec![sql]
    }
    fn empty(&self, tables: &[String]) -> Vec<String> {
        if tables.is_empty() {
            return Vec::new();
        }
        vec![format!("TRUNCATE {}", tables.join(", "))]
    }
    fn tables(&self) -> &'static str {
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
    }
    fn encryption(&self) -> Option<&'static str> {
        Some(
            "SELECT COALESCE((SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl), '')",
        )
    }
    fn requests_table(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS \"_commondb_requests\" (executable TEXT NOT NULL, id TEXT NOT NULL, answer TEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (executable, id))",
            "CREATE INDEX IF NOT EXISTS \"_commondb_requests_at\" ON \"_commondb_requests\" (executable, at)",
        ]
    }
    fn table_exists(&self) -> &'static str {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
    }
    fn statement_timeout(&self, timeout_ms: u64) -> Option<String> {
        Some(format!("SET statement_timeout = {timeout_ms}"))
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

impl ServerDialect for Postgres {
    fn example_admin_url(&self) -> &'static str {
        "postgres://postgres@127.0.0.1:5432/postgres"
    }
    fn maintenance_database(&self) -> Option<&'static str> {
        Some("postgres")
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
    fn grants(
        &self,
        db: &str,
        tables: &[String],
        rights: &[(String, &[Right])],
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
        // Identity columns need no right on their sequence: INSERT on the table is enough.
        for (t, rights) in rights {
            let list: Vec<&str> = rights.iter().map(|r| r.sql()).collect();
            sql.push(format!("GRANT {} ON TABLE {t} TO {app}", list.join(", ")));
        }
        for t in tables {
            sql.push(format!("GRANT SELECT ON TABLE {t} TO {backup}"));
        }
        sql.push(format!(
            "GRANT SELECT ON TABLE \"_sqlx_migrations\" TO {app}, {backup}"
        ));
        sql.push(format!(
            "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {backup}"
        ));
        sql
    }
    fn held_rights(&self) -> &'static str {
        "SELECT table_name || ':' || privilege_type FROM information_schema.table_privileges \
         WHERE grantee = $1 AND table_schema = 'public' AND table_catalog = current_database()"
    }
    fn revoke(&self, _db: &str, table: &str, right: &str, role: &str) -> String {
        format!("REVOKE {right} ON TABLE {table} FROM {role}")
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

/// The kind of a column of PostgreSQL type `type_name`, if backups carry it.
pub(super) fn kind_of(type_name: &str) -> Option<Kind> {
    Some(match type_name.to_ascii_uppercase().as_str() {
        "INT2" => Kind::Int16,
        "INT4" => Kind::Int32,
        "INT8" => Kind::Int64,
        "FLOAT4" => Kind::Float32,
        "FLOAT8" => Kind::Float64,
        "BOOL" => Kind::Bool,
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" => Kind::Text,
        "BYTEA" => Kind::Bytes,
        "TIMESTAMPTZ" => Kind::TimeTz,
        "TIMESTAMP" => Kind::Time,
        _ => return None,
    })
}

/// PostgreSQL: one binary `COPY … TO STDOUT` per table, its rows decoded here from their
/// binary form straight into JSON (no per-row statement machinery), in the same snapshot.
pub(super) async fn copy_out(
    c: &mut PgConnection,
    table: &str,
    columns: &str,
    kinds: &[Kind],
    out: &mut dyn Sink,
) -> Result<()> {
    let sql = format!(
        "COPY {} ({columns}) TO STDOUT (FORMAT binary)",
        Backend::Postgres.quote(table)
    );
    let mut chunks = c.copy_out_raw(&sql).await?;
    let broken = |why: &str| Error::internal(format!("PostgreSQL's COPY of {table}: {why}"));
    // Bytes received and not yet used: rows may arrive split across chunks.
    let mut data: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut header = false;
    let mut ended = false;
    while let Some(chunk) = chunks.try_next().await? {
        if ended {
            return Err(broken("data after its end"));
        }
        data.extend_from_slice(&chunk);
        let mut at = 0;
        if !header {
            let Some(len) = copy_header_len(&data).map_err(&broken)? else {
                continue;
            };
            at = len;
            header = true;
        }
        while let Some(tuple) = copy_tuple_len(&data[at..], kinds.len()).map_err(&broken)? {
            if tuple == 2 {
                ended = true;
                at += 2;
                break;
            }
            let row = &data[at..at + tuple];
            out.row(&mut |line| encode_copy_binary(row, kinds, table, line))?;
            at += tuple;
        }
        data.drain(..at);
    }
    if !ended || !data.is_empty() {
        return Err(broken("it ended early"));
    }
    Ok(())
}

/// The length of binary `COPY`'s header once `data` holds all of it.
fn copy_header_len(data: &[u8]) -> std::result::Result<Option<usize>, &'static str> {
    if data.len() < 19 {
        return Ok(None);
    }
    if data[..11] != COPY_BINARY_HEADER[..11] {
        return Err("not binary COPY data");
    }
    let extension = i32::from_be_bytes([data[15], data[16], data[17], data[18]]);
    let len = 19 + usize::try_from(extension).map_err(|_| "a negative header extension")?;
    Ok((data.len() >= len).then_some(len))
}

/// The length of the tuple `data` starts with, once it holds all of it (2 for the trailer).
fn copy_tuple_len(data: &[u8], width: usize) -> std::result::Result<Option<usize>, &'static str> {
    let Some(count) = data.get(..2) else {
        return Ok(None);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Some(2));
    }
    if usize::try_from(count) != Ok(width) {
        return Err("a row with another number of columns");
    }
    let mut at = 2;
    for _ in 0..width {
        let Some(len) = data.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += usize::try_from(len).unwrap_or(0);
        if data.len() < at {
            return Ok(None);
        }
    }
    Ok(Some(at))
}

/// Encodes one complete binary `COPY` tuple (as [`copy_tuple_len`] measured it) as a row
/// line, exactly as the other backends' rows are encoded.
fn encode_copy_binary(tuple: &[u8], kinds: &[Kind], table: &str, buf: &mut Vec<u8>) -> Result<()> {
    let wrong = |what: &str| Error::internal(format!("PostgreSQL sent {what} for table {table}"));
    let mut line = Line(buf);
    let mut at = 2;
    for (i, kind) in kinds.iter().enumerate() {
        line.start(i);
        let len = i32::from_be_bytes(
            tuple[at..at + 4]
                .try_into()
                .map_err(|_| wrong("a cut row"))?,
        );
        at += 4;
        let Ok(len) = usize::try_from(len) else {
            line.json(&())?;
            continue;
        };
        let v = &tuple[at..at + len];
        at += len;
        macro_rules! number {
            ($t:ty) => {
                <$t>::from_be_bytes(
                    v.try_into()
                        .map_err(|_| wrong("a number of another size"))?,
                )
            };
        }
        match kind {
            Kind::Int16 => line.json(&number!(i16))?,
            Kind::Int32 => line.json(&number!(i32))?,
            Kind::Int64 => line.json(&number!(i64))?,
            Kind::Float32 => line.float(f64::from(number!(f32)), table)?,
            Kind::Float64 => line.float(number!(f64), table)?,
            Kind::Bool => line.json(&(v.first().copied().unwrap_or(0) != 0))?,
            Kind::Text => {
                line.json(std::str::from_utf8(v).map_err(|_| wrong("text that is not UTF-8"))?)?
            }
            Kind::Bytes => line.bytes(v)?,
            Kind::TimeTz | Kind::Time => {
                let time = from_pg_micros(number!(i64)).ok_or_else(|| {
                        Error::config(format!(
                            "table {table} holds an infinite or out-of-range timestamp, which a backup cannot carry"
                        ))
                    })?;
                line.time(time)?;
            }
            Kind::UInt64 | Kind::Dynamic => return Err(wrong("a type it has no columns of")),
        }
    }
    line.end();
    Ok(())
}

/// PostgreSQL's binary `COPY` header: signature, flags, no extension.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// One binary `COPY … FROM STDIN` per table, which the server takes in about half the time of
/// the text format (it parses no numbers or timestamps), fed a MiB at a time.
pub(super) async fn copy_in(c: &mut PgConnection, rows: &mut dyn Rows) -> Result<()> {
    let (names, _) = rows.columns();
    let sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        Backend::Postgres.quote(rows.table()),
        quoted_list(Backend::Postgres, names.iter().map(String::as_str))
    );
    let table = rows.table().to_string();
    let mut copy = c.copy_in_raw(&sql).await?;
    match feed(&mut copy, rows).await {
        Ok(()) => {
            copy.finish()
                .await
                .map_err(|e| classify::refused_rows(e, &table, None))?;
            Ok(())
        }
        Err(e) => {
            let _ = copy.abort("the restore failed").await;
            Err(e)
        }
    }
}

async fn feed(copy: &mut PgCopyIn<&mut PgConnection>, rows: &mut dyn Rows) -> Result<()> {
    let mut data = Vec::with_capacity(BATCH_BYTES + 4096);
    data.extend_from_slice(COPY_BINARY_HEADER);
    let kinds = rows.columns().1.to_vec();
    let width = i16::try_from(kinds.len())
        .map_err(|_| Error::internal("a table with more columns than COPY takes"))?;
    loop {
        let ended = rows.batch(&mut |values| {
            data.extend_from_slice(&width.to_be_bytes());
            for (v, kind) in values.zip(&kinds) {
                copy_field(&v?, *kind, &mut data);
            }
            Ok(data.len() >= BATCH_BYTES)
        })?;
        let refused = |e| classify::refused_rows(e, rows.table(), None);
        if ended {
            data.extend_from_slice(&(-1i16).to_be_bytes());
            copy.send(data).await.map_err(refused)?;
            return Ok(());
        }
        copy.send(std::mem::replace(
            &mut data,
            Vec::with_capacity(BATCH_BYTES + 4096),
        ))
        .await
        .map_err(refused)?;
    }
}

/// Appends `value` as one field of PostgreSQL's binary `COPY` format (its length, then the
/// type's binary form) for a column of `kind`, which the backup side converted it for.
pub(crate) fn copy_field(value: &Bound, kind: Kind, out: &mut Vec<u8>) {
    match (value, kind) {
        (Bound::Null, _) => out.extend_from_slice(&(-1i32).to_be_bytes()),
        // In range: the backup side checked it.
        (Bound::I64(v), Kind::Int16) => put(out, &(*v as i16).to_be_bytes()),
        (Bound::I64(v), Kind::Int32) => put(out, &(*v as i32).to_be_bytes()),
        (Bound::I64(v), _) => put(out, &v.to_be_bytes()),
        (Bound::U64(v), _) => put(out, &v.to_be_bytes()),
        (Bound::F64(v), Kind::Float32) => put(out, &(*v as f32).to_be_bytes()),
        (Bound::F64(v), _) => put(out, &v.to_be_bytes()),
        (Bound::Bool(v), _) => put(out, &[u8::from(*v)]),
        (Bound::Text(s), _) => put(out, s.as_bytes()),
        (Bound::Bytes(b), _) => put(out, b),
        // In range: the backup side checked it.
        (Bound::Time(t), _) => put(out, &pg_micros(*t).unwrap_or(i64::MAX).to_be_bytes()),
    }
}

/// One binary `COPY` field: its length, then its bytes.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// PostgreSQL's timestamps count microseconds from 2000-01-01 (UTC); `i64::MAX` and
/// `i64::MIN` are its `infinity` and `-infinity`.
const PG_EPOCH_SECONDS: i64 = 946_684_800;

/// A PostgreSQL timestamp as a time, unless it is infinite or out of chrono's range.
pub(crate) fn from_pg_micros(micros: i64) -> Option<DateTime<Utc>> {
    if micros == i64::MAX || micros == i64::MIN {
        return None;
    }
    micros
        .checked_add(PG_EPOCH_SECONDS * 1_000_000)
        .and_then(DateTime::from_timestamp_micros)
}

/// Microseconds since 2000-01-01, PostgreSQL's timestamps, rounded to the nearest (half to
/// even) as its text input rounds a finer fraction.
pub(crate) fn pg_micros(t: NaiveDateTime) -> Option<i64> {
    let t = t.and_utc();
    let seconds = t.timestamp().checked_sub(PG_EPOCH_SECONDS)?;
    let nanos = i64::from(t.timestamp_subsec_nanos());
    let (micros, rest) = (nanos / 1000, nanos % 1000);
    let up = rest > 500 || (rest == 500 && micros % 2 == 1);
    seconds
        .checked_mul(1_000_000)?
        .checked_add(micros + i64::from(up))
}

/// Drops the primary-key and unique constraints and the other indexes of `targets` that can be
/// rebuilt afterwards (a table that a foreign key references keeps its own), and returns the
/// statements that re-create them, as the database itself spells them, with their tables.
pub(super) async fn detach_indexes(
    c: &mut PgConnection,
    targets: &[Table],
) -> Result<Vec<(String, String)>> {
    let mut drop = Vec::new();
    let mut rebuild = Vec::new();
    for t in targets {
        let table = Backend::Postgres.quote(&t.name);
        let referenced: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = to_regclass($1))",
        )
        .bind(&table)
        .fetch_one(&mut *c)
        .await?;
        if referenced {
            continue;
        }
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT quote_ident(conname::text), pg_get_constraintdef(oid) FROM pg_constraint              WHERE conrelid = to_regclass($1) AND contype IN ('p', 'u') ORDER BY contype, conname",
        )
        .bind(&table)
        .fetch_all(&mut *c)
        .await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i              WHERE i.indrelid = to_regclass($1)              AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)              ORDER BY 1",
        )
        .bind(&table)
        .fetch_all(&mut *c)
        .await?;
        for (name, definition) in constraints {
            drop.push(format!("ALTER TABLE {table} DROP CONSTRAINT {name}"));
            rebuild.push((
                t.name.clone(),
                format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"),
            ));
        }
        for (name, definition) in indexes {
            drop.push(format!("DROP INDEX {name}"));
            rebuild.push((t.name.clone(), definition));
        }
    }
    for sql in drop {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *c).await?;
    }
    Ok(rebuild)
}

/// Moves PostgreSQL's sequences past the restored keys, so that later inserts do not collide
/// (never backwards: a key handed out before stays handed out). SQLite and MySQL/MariaDB move
/// their counters past explicitly inserted keys by themselves.
pub(super) async fn reset_sequences(c: &mut PgConnection, table: &str) -> Result<()> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 \
         AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
    )
    .bind(table)
    .fetch_all(&mut *c)
    .await?;
    let quoted_table = Backend::Postgres.quote(table);
    for column in columns {
        check_identifier(&column)?;
        let sql = format!(
            "SELECT setval(s.seq, GREATEST(m.top, COALESCE(pg_sequence_last_value(s.seq), 0))) \
             FROM (SELECT pg_get_serial_sequence($1, $2)::regclass AS seq) s, \
                  (SELECT MAX({}) AS top FROM {quoted_table}) m \
             WHERE m.top IS NOT NULL AND s.seq IS NOT NULL",
            Backend::Postgres.quote(&column)
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&quoted_table)
            .bind(&column)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// The serial or identity column of `table` whose sequence the restored keys used up.
pub(super) async fn exhausted_key(c: &mut PgConnection, table: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_depend d \
                 JOIN pg_sequence s ON s.seqrelid = d.objid \
                 JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                 WHERE d.classid = 'pg_class'::regclass AND d.refobjid = to_regclass($1) \
                 AND pg_sequence_last_value(s.seqrelid) >= s.seqmax LIMIT 1",
    )
    .bind(Backend::Postgres.quote(table))
    .fetch_optional(&mut *c)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary `COPY` tuple of `fields` (None: NULL).
    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut t = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                Some(v) => {
                    t.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    t.extend_from_slice(v);
                }
                None => t.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        t
    }

    #[test]
    fn binary_copy_tuples_are_measured_only_once_whole_and_encoded_as_rows() {
        let mut header = COPY_BINARY_HEADER.to_vec();
        for cut in 0..header.len() {
            assert_eq!(copy_header_len(&header[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(copy_header_len(&header), Ok(Some(19)));
        header[0] = b'X';
        assert!(copy_header_len(&header).is_err());

        let kinds = [
            Kind::Int64,
            Kind::Text,
            Kind::Bool,
            Kind::TimeTz,
            Kind::Bytes,
            Kind::Float32,
        ];
        let micros = 1_000_001i64.to_be_bytes();
        let row = tuple(&[
            Some(&42i64.to_be_bytes()),
            Some("tab\t\"q\" ü".as_bytes()),
            Some(&[1]),
            Some(&micros),
            Some(&[0, 255]),
            Some(&1.5f32.to_be_bytes()),
        ]);
        for cut in 0..row.len() {
            assert_eq!(copy_tuple_len(&row[..cut], kinds.len()), Ok(None), "{cut}");
        }
        assert_eq!(copy_tuple_len(&row, kinds.len()), Ok(Some(row.len())));
        assert_eq!(
            copy_tuple_len(&(-1i16).to_be_bytes(), kinds.len()),
            Ok(Some(2))
        );
        assert!(copy_tuple_len(&row, 2).is_err(), "a row of another width");
        let mut line = Vec::new();
        encode_copy_binary(&row, &kinds, "t", &mut line).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"[42,"tab\t\"q\" ü",true,"2000-01-01T00:00:01.000001+00:00",{"$b64":"AP8="},1.5]"#
        );
        let nulls = tuple(&[None; 6]);
        let mut line = Vec::new();
        encode_copy_binary(&nulls, &kinds, "t", &mut line).unwrap();
        assert_eq!(line, b"[null,null,null,null,null,null]");
        let infinity = tuple(&[None, None, None, Some(&i64::MAX.to_be_bytes()), None, None]);
        let e = encode_copy_binary(&infinity, &kinds, "t", &mut Vec::new()).unwrap_err();
        assert!(e.message().contains("infinite"), "{}", e.message());
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
    fn the_lock_key_is_commondb() {
        let key = i64::from_be_bytes(*b"commondb").to_string();
        assert!(Postgres.try_lock().contains(&key) && Postgres.unlock().contains(&key));
    }
}
