//! The values of a backup's rows on their way into a database: parsed from a row's JSON without
//! a copy of its text where none is needed, then turned into what each target column takes (a
//! [`Bound`] value, which the backend seam writes as a binary `COPY` field or binds as a
//! parameter).
//!
//! A value converts to a column's [`Kind`] the way the database's own text input would take
//! it (a number into a text column is its digits, `"42"` into an integer column is 42), so
//! that a backup taken on one backend restores on another.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDateTime};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

#[cfg(test)]
use crate::db::backend::postgres;
use crate::db::backend::postgres::pg_micros;
use crate::db::backend::rows::{Bound, Kind};
use crate::error::{Error, Result};

/// One value of a backup row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(Cow<'a, str>),
    /// `{"$b64": "…"}`, still encoded.
    Bytes(Cow<'a, str>),
}

/// A row's values, borrowing from its line.
struct Row<'a>(Vec<Field<'a>>);

/// Parses line `row` (from 1) of a table's rows, a JSON array.
pub(crate) fn parse_row<'a>(line: &'a [u8], table: &str, row: u64) -> Result<Vec<Field<'a>>> {
    serde_json::from_slice::<Row<'a>>(line)
        .map(|row| row.0)
        .map_err(|e| {
            Error::invalid_input(format!(
                "row {row} of table {table} does not parse: {e}; nothing was changed"
            ))
            .hint("the backup was not written by this program, or by a newer one")
        })
}

impl<'de> de::Deserialize<'de> for Row<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Values;
        impl<'de> Visitor<'de> for Values {
            type Value = Row<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Row<'de>, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(8));
                while let Some(v) = seq.next_element::<Field<'de>>()? {
                    values.push(v);
                }
                Ok(Row(values))
            }
        }
        d.deserialize_seq(Values)
    }
}

impl<'de> de::Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null, a boolean, a number, a string or {\"$b64\": \"…\"}")
    }
    fn visit_unit<E>(self) -> std::result::Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Field<'de>, E> {
        Ok(Field::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Field<'de>, E> {
        Ok(Field::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Field<'de>, E> {
        Ok(i64::try_from(v).map_or(Field::UInt(v), Field::Int))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Field<'de>, E> {
        Ok(Field::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Field<'de>, A::Error> {
        let key: Cow<'de, str> = map
            .next_key()?
            .ok_or_else(|| de::Error::custom("an empty object"))?;
        if key != "$b64" {
            return Err(de::Error::custom("an object that is not bytes"));
        }
        let value: Cow<'de, str> = map.next_value()?;
        if map.next_key::<Cow<'de, str>>()?.is_some() {
            return Err(de::Error::custom("an object that is not bytes"));
        }
        Ok(Field::Bytes(value))
    }
}

/// Where a value goes, for the message that refuses it: the table, the row's number among the
/// table's rows in the backup (from 1), the column.
pub(crate) struct Place<'a> {
    pub table: &'a str,
    pub row: u64,
    pub column: &'a str,
}

impl Place<'_> {
    /// Refuses `value` for this column, which takes `kind`.
    fn refuse(&self, value: &Field, kind: Kind) -> Error {
        let what = match value {
            Field::Text(s) if s.contains('\0') => "text with a NUL character".to_string(),
            _ => value.shown(),
        };
        Error::invalid_input(format!(
            "row {} of table {} holds {what} in column {}, which takes {}; nothing was changed",
            self.row,
            self.table,
            self.column,
            kind.sql_name()
        ))
        .hint("correct that value where the backup was taken and take it again, or restore into a schema whose column takes it")
    }
}

impl Field<'_> {
    /// The value converted for a column of `kind` the way PostgreSQL's text input would take
    /// it, on every backend alike, or an error naming the place where that input would refuse
    /// it. So a backup restores on one backend exactly when it restores on another, and no
    /// backend rounds, truncates or reinterprets a value on its way in: no fraction goes into
    /// an integer, no integer past a column's range, no NUL into text.
    pub(crate) fn value(&self, kind: Kind, at: &Place) -> Result<Bound<'_>> {
        let wrong = || at.refuse(self, kind);
        Ok(match (kind, self) {
            (_, Field::Null) => Bound::Null,
            (Kind::Int16 | Kind::Int32 | Kind::Int64, _) => {
                let v = self.integer().ok_or_else(wrong)?;
                let fits = match kind {
                    Kind::Int16 => i16::try_from(v).is_ok(),
                    Kind::Int32 => i32::try_from(v).is_ok(),
                    _ => true,
                };
                if !fits {
                    return Err(wrong());
                }
                Bound::I64(v)
            }
            (Kind::UInt64, Field::UInt(u)) => Bound::U64(*u),
            (Kind::UInt64, _) => {
                Bound::U64(u64::try_from(self.integer().ok_or_else(wrong)?).map_err(|_| wrong())?)
            }
            (Kind::Float32, _) => {
                let wide = self.float().ok_or_else(wrong)?;
                let v = wide as f32;
                let overflow = wide.is_finite() && v.is_infinite();
                let underflow = wide != 0.0 && v == 0.0;
                if overflow || underflow {
                    return Err(wrong());
                }
                Bound::F64(wide)
            }
            (Kind::Float64, _) => Bound::F64(self.float().ok_or_else(wrong)?),
            (Kind::Bool, _) => Bound::Bool(self.boolean().ok_or_else(wrong)?),
            (Kind::Text | Kind::Dynamic, Field::Text(s)) if s.contains('\0') => {
                return Err(wrong());
            }
            (Kind::Text | Kind::Dynamic, Field::Text(s)) => Bound::Text(Cow::Borrowed(s)),
            (Kind::Text, Field::Int(i)) => Bound::Text(Cow::Owned(i.to_string())),
            (Kind::Text, Field::UInt(u)) => Bound::Text(Cow::Owned(u.to_string())),
            (Kind::Text, Field::Float(f)) => {
                Bound::Text(Cow::Owned(serde_json::to_string(f).map_err(|_| wrong())?))
            }
            (Kind::Text, Field::Bool(b)) => Bound::Text(Cow::Borrowed(if *b { "t" } else { "f" })),
            // As bytea's text output shows them.
            (Kind::Text, Field::Bytes(b64)) => {
                Bound::Text(Cow::Owned(format!("\\x{}", hex::encode(bytes(b64, at)?))))
            }
            (Kind::Bytes | Kind::Dynamic, Field::Bytes(b64)) => Bound::Bytes(bytes(b64, at)?),
            (Kind::Bytes, Field::Text(s)) => Bound::Bytes(bytea_input(s).ok_or_else(wrong)?),
            (Kind::TimeTz | Kind::Time, Field::Text(s)) => Bound::Time(
                parse_time(s)
                    .filter(|t| pg_micros(*t).is_some())
                    .ok_or_else(wrong)?,
            ),
            // Whatever the value's own type is, as SQLite keeps it; a number past a 64-bit
            // signed integer has no place there but text.
            (Kind::Dynamic, Field::Int(i)) => Bound::I64(*i),
            (Kind::Dynamic, Field::UInt(_)) => return Err(wrong()),
            (Kind::Dynamic, Field::Float(f)) => Bound::F64(*f),
            (Kind::Dynamic, Field::Bool(b)) => Bound::I64(i64::from(*b)),
            _ => return Err(wrong()),
        })
    }

    /// Appends the value as one field of PostgreSQL's binary `COPY` format for a column of
    /// `kind`: the value PostgreSQL's text input would have made of it, or an error where
    /// that input would have refused it.
    #[cfg(test)]
    pub(crate) fn copy_binary(&self, out: &mut Vec<u8>, kind: Kind, at: &Place) -> Result<()> {
        postgres::copy_field(&self.value(kind, at)?, kind, out);
        Ok(())
    }
    fn integer(&self) -> Option<i64> {
        match self {
            Field::Int(i) => Some(*i),
            Field::Bool(b) => Some(i64::from(*b)),
            Field::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// As PostgreSQL's `float8` input takes it: `NaN` and `Infinity` are values, but a number
    /// too large or too small for a double is refused, not rounded to infinity or zero.
    fn float(&self) -> Option<f64> {
        match self {
            Field::Int(i) => Some(*i as f64),
            Field::UInt(u) => Some(*u as f64),
            Field::Float(f) => Some(*f),
            Field::Text(s) => {
                let s = s.trim();
                let v: f64 = s.parse().ok()?;
                let digits = s.split(['e', 'E']).next().unwrap_or("");
                let named = s.trim_start_matches(['+', '-']).to_ascii_lowercase();
                let overflow = v.is_infinite() && !named.starts_with("inf");
                let underflow = v == 0.0 && digits.bytes().any(|b| (b'1'..=b'9').contains(&b));
                (!overflow && !underflow).then_some(v)
            }
            _ => None,
        }
    }

    /// As PostgreSQL's `bool` input takes it: `1`/`0`, and any prefix of `true`, `false`,
    /// `yes`, `no`, or `on`, `of(f)`, in any case.
    fn boolean(&self) -> Option<bool> {
        match self {
            Field::Bool(b) => Some(*b),
            Field::Int(0) => Some(false),
            Field::Int(1) => Some(true),
            Field::Text(s) => {
                let s = s.trim().to_ascii_lowercase();
                let prefix_of = |word: &str| word.starts_with(s.as_str());
                match s.as_bytes().first()? {
                    b't' if prefix_of("true") => Some(true),
                    b'f' if prefix_of("false") => Some(false),
                    b'y' if prefix_of("yes") => Some(true),
                    b'n' if prefix_of("no") => Some(false),
                    _ if s == "on" || s == "1" => Some(true),
                    _ if s == "of" || s == "off" || s == "0" => Some(false),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The value as a message shows it: strings quoted and cut short.
    fn shown(&self) -> String {
        match self {
            Field::Null => "null".into(),
            Field::Bool(b) => b.to_string(),
            Field::Int(i) => i.to_string(),
            Field::UInt(u) => u.to_string(),
            Field::Float(f) => f.to_string(),
            Field::Text(s) if s.chars().count() > 40 => {
                format!("{:?}…", s.chars().take(40).collect::<String>())
            }
            Field::Text(s) => format!("{s:?}"),
            Field::Bytes(_) => "bytes".into(),
        }
    }
}

/// A string as PostgreSQL's `bytea` input takes it: `\x` and hexadecimal digit pairs (with
/// white space between pairs), or the escape format (`\\` and `\ooo` octal escapes).
fn bytea_input(s: &str) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        return digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).ok().filter(|p| p.len() == 2)?;
                u8::from_str_radix(pair, 16).ok()
            })
            .collect();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, after)) = rest.split_first() {
        rest = after;
        if b != b'\\' {
            out.push(b);
        } else if rest.first() == Some(&b'\\') {
            out.push(b'\\');
            rest = &rest[1..];
        } else if rest.len() >= 3
            && (b'0'..=b'3').contains(&rest[0])
            && rest[1..3].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push((rest[0] - b'0') * 64 + (rest[1] - b'0') * 8 + (rest[2] - b'0'));
            rest = &rest[3..];
        } else {
            return None;
        }
    }
    Some(out)
}

/// A timestamp as backups carry it (RFC 3339), or as SQLite or PostgreSQL's text may hold
/// one: `YYYY-MM-DD[ T]HH:MM[:SS[.f]]`, with an offset (`+00`, `+0530`, `+05:30`) or taken to
/// be UTC without one, or a date alone (midnight UTC).
pub(crate) fn parse_time(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.naive_utc());
    }
    for sep in [" ", "T"] {
        for time in ["%H:%M:%S%.f", "%H:%M"] {
            let format = format!("%Y-%m-%d{sep}{time}");
            if let Ok(t) = DateTime::parse_from_str(s, &format!("{format}%#z")) {
                return Some(t.naive_utc());
            }
            if let Ok(t) = NaiveDateTime::parse_from_str(s, &format) {
                return Some(t);
            }
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

fn bytes(b64: &str, at: &Place) -> Result<Vec<u8>> {
    BASE64.decode(b64).map_err(|_| {
        Error::invalid_input(format!(
            "row {} of table {} holds bytes that are not base64 in column {}; nothing was changed",
            at.row, at.table, at.column
        ))
        .hint("the backup was not written by this program, or by a newer one")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> Field<'_> {
        let mut row = parse_row(json.as_bytes(), "t", 1).unwrap();
        assert_eq!(row.len(), 1);
        row.remove(0)
    }

    #[test]
    fn rows_parse_borrowing_what_needs_no_unescaping() {
        let row = parse_row(
            br#"[null,true,-3,18446744073709551615,1.5,"plain","a\"b",{"$b64":"aGk="}]"#,
            "t",
            1,
        )
        .unwrap();
        assert_eq!(row[0], Field::Null);
        assert_eq!(row[1], Field::Bool(true));
        assert_eq!(row[2], Field::Int(-3));
        assert_eq!(row[3], Field::UInt(u64::MAX));
        assert_eq!(row[4], Field::Float(1.5));
        assert!(matches!(&row[5], Field::Text(Cow::Borrowed("plain"))));
        assert_eq!(row[6], Field::Text("a\"b".into()));
        assert_eq!(row[7], Field::Bytes("aGk=".into()));
        // Exactly the double that was written, not one unit in the last place off.
        assert_eq!(one("[-1.5e-300]"), Field::Float(-1.5e-300));
        assert_eq!(one("[0.1]"), Field::Float(0.1));
        for bad in [
            &b"[1,"[..],
            b"{\"a\":1}",
            b"[[1]]",
            b"[{\"x\":\"aGk=\"}]",
            b"[{}]",
        ] {
            assert!(
                parse_row(bad, "t", 1).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    const AT: Place = Place {
        table: "t",
        row: 1,
        column: "c",
    };

    /// The binary field, without its length.
    fn binary(f: &Field, kind: Kind) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        f.copy_binary(&mut out, kind, &AT)?;
        let len = i32::from_be_bytes(out[..4].try_into().unwrap());
        assert_eq!(len as usize, out.len() - 4);
        Ok(out[4..].to_vec())
    }

    #[test]
    fn values_take_the_binary_form_of_their_column() {
        assert_eq!(
            binary(&one("[7]"), Kind::Int16).unwrap(),
            7i16.to_be_bytes()
        );
        assert_eq!(
            binary(&one("[\"42\"]"), Kind::Int32).unwrap(),
            42i32.to_be_bytes()
        );
        assert_eq!(
            binary(&one("[true]"), Kind::Int64).unwrap(),
            1i64.to_be_bytes()
        );
        assert_eq!(
            binary(&one("[2]"), Kind::Float64).unwrap(),
            2f64.to_be_bytes()
        );
        assert_eq!(binary(&one("[1]"), Kind::Bool).unwrap(), [1]);
        assert_eq!(binary(&one("[\"off\"]"), Kind::Bool).unwrap(), [0]);
        assert_eq!(binary(&one("[12]"), Kind::Text).unwrap(), b"12");
        assert_eq!(
            binary(&one("[{\"$b64\":\"aGk=\"}]"), Kind::Bytes).unwrap(),
            b"hi"
        );
        let mut null = Vec::new();
        Field::Null
            .copy_binary(&mut null, Kind::Int64, &AT)
            .unwrap();
        assert_eq!(null, (-1i32).to_be_bytes());
        assert_eq!(
            binary(&one("[{\"$b64\":\"aGk=\"}]"), Kind::Text).unwrap(),
            b"\\x6869"
        );
        for (json, kind) in [
            ("[70000]", Kind::Int16),
            ("[1.5]", Kind::Int64),
            ("[\"x\"]", Kind::Int64),
            ("[2]", Kind::Bool),
            ("[\"yesterday\"]", Kind::TimeTz),
            ("[1e300]", Kind::Float32),
            ("[1e-300]", Kind::Float32),
            ("[\"1e400\"]", Kind::Float64),
            ("[\"1e-400\"]", Kind::Float64),
            ("[\"\\\\q\"]", Kind::Bytes),
            ("[true]", Kind::TimeTz),
            ("[\"a\\u0000b\"]", Kind::Text),
            ("[18446744073709551615]", Kind::Int64),
            ("[-1]", Kind::UInt64),
            ("[\"10000-01-01\"]", Kind::Time),
        ] {
            let e = binary(&one(json), kind).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput, "{json}");
            let says = format!(
                "in column c, which takes {}; nothing was changed",
                kind.sql_name()
            );
            assert!(e.message().contains(&says), "{json}: {}", e.message());
        }
        let e = binary(&Field::Text("x".repeat(100).into()), Kind::Int64).unwrap_err();
        assert!(
            e.message().contains(&format!("\"{}\"…", "x".repeat(40))),
            "{}",
            e.message()
        );
    }

    #[test]
    fn sqlite_columns_without_a_type_keep_each_value_as_it_is_but_never_round_one() {
        let dynamic = |json: &str| one(json).value(Kind::Dynamic, &AT).map(Bound::into_owned);
        assert_eq!(dynamic("[5]").unwrap(), Bound::I64(5));
        assert_eq!(dynamic("[1.5]").unwrap(), Bound::F64(1.5));
        assert_eq!(dynamic("[\"x\"]").unwrap(), Bound::Text("x".into()));
        assert_eq!(dynamic("[true]").unwrap(), Bound::I64(1));
        assert!(dynamic("[18446744073709551615]").is_err());
        assert!(dynamic("[\"\\u0000\"]").is_err());
        let e = one("[\"x\"]")
            .value(
                Kind::Int64,
                &Place {
                    table: "users",
                    row: 7,
                    column: "id",
                },
            )
            .unwrap_err();
        assert!(
            e.message()
                .starts_with("row 7 of table users holds \"x\" in column id"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn text_converts_as_postgres_text_input_would_take_it() {
        let bool_of = |s: &str| binary(&Field::Text(s.into()), Kind::Bool).ok();
        for s in ["t", "TR", "true", "y", "Yes", "on", "1", " true "] {
            assert_eq!(bool_of(s), Some(vec![1]), "{s}");
        }
        for s in ["f", "fal", "FALSE", "n", "no", "of", "off", "0"] {
            assert_eq!(bool_of(s), Some(vec![0]), "{s}");
        }
        for s in ["", "o", "truex", "2", "maybe"] {
            assert_eq!(bool_of(s), None, "{s:?}");
        }
        let bytea = |s: &str| binary(&Field::Text(s.into()), Kind::Bytes).ok();
        assert_eq!(bytea("\\x41 42"), Some(b"AB".to_vec()));
        assert_eq!(bytea("a\\\\b\\001"), Some(b"a\\b\x01".to_vec()));
        assert_eq!(bytea("plain"), Some(b"plain".to_vec()));
        assert_eq!(bytea("\\x4"), None);
        assert_eq!(bytea("\\9"), None);
        let float = |s: &str| binary(&Field::Text(s.into()), Kind::Float64).ok();
        assert_eq!(
            float("NaN").map(|b| f64::from_be_bytes(b.try_into().unwrap()).is_nan()),
            Some(true)
        );
        assert_eq!(
            float("-Infinity"),
            Some(f64::NEG_INFINITY.to_be_bytes().to_vec())
        );
        assert_eq!(float(" 0.0e5 "), Some(0f64.to_be_bytes().to_vec()));
    }

    #[test]
    fn timestamps_become_microseconds_since_2000_rounded_as_postgres_rounds() {
        let micros = |s: &str| {
            i64::from_be_bytes(
                binary(&Field::Text(s.into()), Kind::TimeTz)
                    .unwrap()
                    .try_into()
                    .unwrap(),
            )
        };
        assert_eq!(micros("2000-01-01T00:00:00Z"), 0);
        assert_eq!(micros("2000-01-01T00:00:01.000001+00:00"), 1_000_001);
        assert_eq!(micros("2000-01-01 01:00:00"), 3_600_000_000);
        assert_eq!(micros("2000-01-01T01:00:00+01:00"), 0);
        assert_eq!(micros("1999-12-31T23:59:59Z"), -1_000_000);
        assert_eq!(micros("2000-01-01T00:00:00.0000015Z"), 2);
        assert_eq!(micros("2000-01-01T00:00:00.0000025Z"), 2);
        assert_eq!(micros("2000-01-01T00:00:00.000002501Z"), 3);
    }

    #[test]
    fn timestamps_parse_in_the_forms_backups_sqlite_and_postgres_hold() {
        let want =
            NaiveDateTime::parse_from_str("2026-11-23 10:15:00.123456", "%Y-%m-%d %H:%M:%S%.f")
                .unwrap();
        for s in [
            "2026-11-23T10:15:00.123456+00:00",
            "2026-11-23T11:15:00.123456+01:00",
            "2026-11-23T10:15:00.123456Z",
            "2026-11-23 10:15:00.123456",
            "2026-11-23T10:15:00.123456",
            "2026-11-23 10:15:00.123456+00",
            "2026-11-23 15:45:00.123456+0530",
            " 2026-11-23 10:15:00.123456 ",
        ] {
            assert_eq!(parse_time(s), Some(want), "{s}");
        }
        let minute =
            NaiveDateTime::parse_from_str("2026-11-23 10:15:00", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(parse_time("2026-11-23 10:15"), Some(minute));
        assert_eq!(parse_time("2026-11-23T11:15+01"), Some(minute));
        let midnight =
            NaiveDateTime::parse_from_str("2026-11-23 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(parse_time("2026-11-23"), Some(midnight));
        for s in ["yesterday", "2026-11-23 25:00", "23/11/2026", ""] {
            assert_eq!(parse_time(s), None, "{s:?}");
        }
    }
}
