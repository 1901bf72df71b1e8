//! The backup file: zstd-compressed JSON lines, written under a temporary name and renamed
//! into place, verified end to end before a restore uses it.
//!
//! ```text
//! {"format":"commondb-backup","format_version":1,"executable":"create-user",…,"tables":[…]}
//! {"table":"users"}
//! [1,"alice","alice@example.com",null,"2026-11-23T10:15:00.123456+00:00"]
//! …
//! {"end":"commondb-backup","rows":1,"sha256":"…"}
//! ```
//!
//! The first line is the [`Header`]; then each table's name and its rows, one JSON array per
//! row in the header's column order; last the trailer, whose SHA-256 covers every byte before
//! it. After the compressed frame comes a zstd *skippable* frame (which `zstd -d` passes over)
//! holding the SHA-256 of every compressed byte before it, so that no flipped bit anywhere in
//! the file goes unnoticed, not even one in a zstd header that would decompress the same.
//! A value is `null`, a number, `true`/`false`, a string (text, and timestamps in RFC 3339
//! UTC) or `{"$b64":"…"}` (bytes). `zstd -dc FILE | head` shows a backup to a person.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Backend;
use crate::error::{Error, Result};

/// The format's name, the header's first field.
pub const FORMAT: &str = "commondb-backup";
/// The newest format version this program reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;
/// The file name's ending.
pub const EXTENSION: &str = ".jsonl.zst";
/// What a safety backup's name carries before the extension.
const SAFETY_SUFFIX: &str = "-pre-restore";
/// zstd's level: 1 is several times faster than gzip's default and compresses better.
const LEVEL: i32 = 1;
/// No line of a backup is longer than this; a longer one means a damaged file.
const MAX_LINE: u64 = 256 << 20;
/// The footer: a skippable frame (magic, length 36) holding `CDBK` and a SHA-256.
const FOOTER_MAGIC: u32 = 0x184D_2A5C;
const FOOTER_LEN: usize = 8 + 4 + 32;
/// How a zstd frame starts.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes the file as the decoder reads it, all but the footer, which it keeps aside.
struct Footed {
    file: File,
    pos: u64,
    body: u64,
    hash: Sha256,
    footer: Vec<u8>,
}

impl Read for Footed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        let data = &buf[..n];
        let in_body = usize::try_from(self.body.saturating_sub(self.pos))
            .unwrap_or(usize::MAX)
            .min(n);
        self.hash.update(&data[..in_body]);
        self.footer.extend_from_slice(&data[in_body..]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// By `--self-backup`.
    Backup,
    /// By `--self-restore`, of the data it was about to replace.
    Safety,
}

/// What a backup holds, written as its first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version it was written in.
    pub format_version: u32,
    /// The executable that wrote it.
    pub executable: String,
    /// That executable's version.
    pub executable_version: String,
    /// The schema version of the database it was taken from.
    pub schema_version: i64,
    /// The backend it was taken from.
    pub backend: Backend,
    /// When the snapshot was taken.
    pub created_at: DateTime<Utc>,
    /// Why it was taken.
    pub kind: Kind,
    /// The tables, in the order they follow.
    pub tables: Vec<TableInfo>,
}

/// A table in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// Its name.
    pub name: String,
    /// Its columns, in the order of every row's values.
    pub columns: Vec<String>,
    /// How many rows it has.
    pub rows: u64,
}

impl Header {
    /// Every table's rows.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

#[derive(Serialize, Deserialize)]
struct TableStart {
    table: String,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    end: String,
    rows: u64,
    sha256: String,
}

/// The name of a backup taken at `at`.
pub fn file_name(exe: &str, at: DateTime<Utc>, kind: Kind) -> String {
    let suffix = match kind {
        Kind::Backup => "",
        Kind::Safety => SAFETY_SUFFIX,
    };
    format!(
        "{exe}-{}{suffix}{EXTENSION}",
        at.format("%Y%m%dT%H%M%S%.6fZ")
    )
}

/// A backup file found in the backup directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its path.
    pub path: PathBuf,
    /// Why it was taken (from its name).
    pub kind: Kind,
}

/// The backups of `exe` in `dir`, newest first (their names sort by time). Files of other
/// executables and partial files are not listed.
pub fn list(dir: &Path, exe: &str) -> Result<Vec<Entry>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::permission(format!(
                "cannot read the backup directory {}: {e}",
                dir.display()
            ))
            .hint("check its permissions, or set backup_dir"));
        }
    };
    let prefix = format!("{exe}-");
    let mut entries: Vec<(String, Entry)> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_prefix(&prefix)?.strip_suffix(EXTENSION)?;
            let (stamp, kind) = match stem.strip_suffix(SAFETY_SUFFIX) {
                Some(stamp) => (stamp, Kind::Safety),
                None => (stem, Kind::Backup),
            };
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.fZ").ok()?;
            let path = e.path();
            Some((stamp.to_string(), Entry { path, kind }))
        })
        .collect();
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// Writes a backup: header, tables and rows, trailer; into place only by [`Writer::finish`].
pub struct Writer {
    out: zstd::Encoder<'static, Hashing<BufWriter<tempfile::NamedTempFile>>>,
    hash: Sha256,
    rows: u64,
    dir: PathBuf,
    name: String,
}

impl Writer {
    /// Starts backup `name` in `dir` with `header`. Until [`Writer::finish`] the data goes to a
    /// hidden partial file named after the process, which no listing takes for a backup.
    pub fn create(dir: &Path, name: String, header: &Header) -> Result<Writer> {
        crate::secrets::create_private_dir(dir)?;
        remove_stale_partials(dir);
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".partial-{}-", std::process::id()))
            .tempfile_in(dir)
            .map_err(|e| write_error(dir, &e))?;
        let sink = Hashing {
            inner: BufWriter::with_capacity(1 << 16, tmp),
            hash: Sha256::new(),
        };
        let mut out = zstd::Encoder::new(sink, LEVEL).map_err(internal)?;
        out.include_checksum(true).map_err(internal)?;
        let mut writer = Writer {
            out,
            hash: Sha256::new(),
            rows: 0,
            dir: dir.to_path_buf(),
            name,
        };
        let line = serde_json::to_vec(header).map_err(internal)?;
        writer.line(&line)?;
        Ok(writer)
    }

    /// Starts the rows of `table`.
    pub fn table(&mut self, table: &str) -> Result<()> {
        let line = serde_json::to_vec(&TableStart {
            table: table.to_string(),
        })
        .map_err(internal)?;
        self.line(&line)
    }

    /// Writes one row: a JSON array without its line ending.
    pub fn row(&mut self, row: &[u8]) -> Result<()> {
        self.rows += 1;
        self.line(row)
    }

    fn line(&mut self, line: &[u8]) -> Result<()> {
        self.hash.update(line);
        self.hash.update(b"\n");
        self.out
            .write_all(line)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| write_error(&self.dir, &e))
    }

    /// Writes the trailer, syncs the file to disk and renames it into place (never over another
    /// file), then syncs the directory. Returns the backup's path and size.
    pub fn finish(mut self) -> Result<(PathBuf, u64)> {
        let trailer = Trailer {
            end: FORMAT.to_string(),
            rows: self.rows,
            sha256: hex(&self.hash.clone().finalize()),
        };
        let line = serde_json::to_vec(&trailer).map_err(internal)?;
        self.out
            .write_all(&line)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| write_error(&self.dir, &e))?;
        let dir = self.dir;
        let tmp = self
            .out
            .finish()
            .and_then(|Hashing { mut inner, hash }| {
                inner.write_all(&FOOTER_MAGIC.to_le_bytes())?;
                inner.write_all(&36u32.to_le_bytes())?;
                inner.write_all(b"CDBK")?;
                inner.write_all(&hash.finalize())?;
                inner.into_inner().map_err(|e| e.into_error())
            })
            .map_err(|e| write_error(&dir, &e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| write_error(&dir, &e))?;
        let size = tmp
            .as_file()
            .metadata()
            .map_err(|e| write_error(&dir, &e))?
            .len();
        let path = dir.join(&self.name);
        tmp.persist_noclobber(&path).map_err(|e| {
            Error::temporary(format!(
                "cannot name the backup {}: {}",
                path.display(),
                e.error
            ))
            .hint("another backup took the same name at the same microsecond; run it again")
        })?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| write_error(&dir, &e))?;
        Ok((path, size))
    }
}

/// Removes partial files left by backups that were killed (their process is gone).
fn remove_stale_partials(dir: &Path) {
    let Ok(read) = fs::read_dir(dir) else { return };
    for entry in read.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".partial-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// One item of a backup, as [`Reader::next_item`] yields them.
pub enum Item<'a> {
    /// The rows that follow belong to this table.
    Table(String),
    /// One row, a JSON array.
    Row(&'a [u8]),
    /// The end: the trailer checked out.
    End,
}

/// The decompressed lines of a backup file, each hashed as it is accepted.
struct Lines {
    path: PathBuf,
    lines: BufReader<zstd::Decoder<'static, BufReader<Footed>>>,
    hash: Sha256,
    line: Vec<u8>,
}

impl Lines {
    /// Reads the next line into `self.line`, without its ending; `false` at the end.
    fn read(&mut self) -> Result<bool> {
        self.line.clear();
        let n = (&mut self.lines)
            .take(MAX_LINE)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| damaged(&self.path, &format!("it cannot be decompressed ({e})")))?;
        if n == 0 {
            return Ok(false);
        }
        if self.line.pop() != Some(b'\n') {
            return Err(self.damaged("its last line is cut off (truncated?)"));
        }
        Ok(true)
    }

    /// Counts the current line into the content checksum.
    fn hash(&mut self) {
        self.hash.update(&self.line);
        self.hash.update(b"\n");
    }

    /// Compares the file's own SHA-256 with the footer's, once the decoder has read it all.
    fn check_footer(&mut self) -> Result<()> {
        let footed = self.lines.get_mut().get_mut().get_mut();
        footed
            .read_to_end(&mut Vec::new())
            .map_err(|e| damaged(&self.path, &format!("it cannot be read ({e})")))?;
        let computed = footed.hash.clone().finalize();
        let footer = &footed.footer;
        let ok = footer.len() == FOOTER_LEN
            && footer[..4] == FOOTER_MAGIC.to_le_bytes()
            && footer[4..8] == 36u32.to_le_bytes()
            && &footer[8..12] == b"CDBK"
            && footer[12..] == computed[..];
        if ok {
            Ok(())
        } else {
            Err(self.damaged("its file checksum does not match"))
        }
    }

    fn damaged(&self, why: &str) -> Error {
        damaged(&self.path, why)
    }
}

fn damaged(path: &Path, why: &str) -> Error {
    Error::invalid_input(format!(
        "the backup {} is damaged: {why}; nothing was changed",
        path.display()
    ))
    .hint("restore another backup with --from FILE (--self-backup lists where they are)")
}

/// Reads a backup line by line, checking its structure and, at the end, its checksums.
pub struct Reader {
    src: Lines,
    header: Header,
    /// Rows seen in all, and per table; the table being read.
    rows: u64,
    counts: Vec<u64>,
    current: Option<usize>,
    done: bool,
}

impl Reader {
    /// Opens a backup and reads its header. A file that is not a backup, or one of a format
    /// newer than this program's, is refused.
    pub fn open(path: &Path) -> Result<Reader> {
        let unreadable = |e: io::Error| {
            Error::no_input(format!("cannot read {}: {e}", path.display()))
                .hint("check the file's permissions")
        };
        let mut file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::no_input(format!("{} does not exist", path.display()))
                    .hint("give the path of a backup, or leave --from out to restore the newest")
            }
            _ => unreadable(e),
        })?;
        let mut magic = [0u8; 4];
        let head = file.read(&mut magic).unwrap_or(0);
        if head == 4 && magic != ZSTD_MAGIC {
            return Err(Error::invalid_input(format!(
                "{} is not a commondb backup (not zstd-compressed); nothing was changed",
                path.display()
            ))
            .hint("give a file that --self-backup wrote"));
        }
        io::Seek::rewind(&mut file).map_err(unreadable)?;
        let len = file.metadata().map_err(unreadable)?.len();
        let footed = Footed {
            file,
            pos: 0,
            body: len.saturating_sub(FOOTER_LEN as u64),
            hash: Sha256::new(),
            footer: Vec::with_capacity(FOOTER_LEN),
        };
        let decoder = zstd::Decoder::new(footed).map_err(internal)?;
        let mut src = Lines {
            path: path.to_path_buf(),
            lines: BufReader::with_capacity(1 << 16, decoder),
            hash: Sha256::new(),
            line: Vec::new(),
        };
        if !src.read()? {
            return Err(src.damaged("it is empty"));
        }
        let header: Header = serde_json::from_slice(&src.line)
            .ok()
            .filter(|h: &Header| h.format == FORMAT)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "{} is not a commondb backup; nothing was changed",
                    path.display()
                ))
                .hint("give a file that --self-backup wrote")
            })?;
        if header.format_version > FORMAT_VERSION {
            return Err(Error::invalid_input(format!(
                "{} is in backup format version {}, newer than this program's ({FORMAT_VERSION})",
                path.display(),
                header.format_version
            ))
            .hint("restore it with a newer version of this executable"));
        }
        src.hash();
        Ok(Reader {
            src,
            counts: vec![0; header.tables.len()],
            header,
            rows: 0,
            current: None,
            done: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next item. After [`Item::End`] the whole file has been checked: its structure, row
    /// counts and checksums.
    pub fn next_item(&mut self) -> Result<Item<'_>> {
        if self.done {
            return Ok(Item::End);
        }
        let src = &mut self.src;
        if !src.read()? {
            return Err(src.damaged("it ends before its trailer (truncated?)"));
        }
        match src.line.first() {
            Some(b'[') => {
                let Some(table) = self.current else {
                    return Err(src.damaged("a row comes before any table"));
                };
                self.counts[table] += 1;
                self.rows += 1;
                src.hash();
                Ok(Item::Row(&src.line))
            }
            Some(b'{') if src.line.starts_with(b"{\"table\"") => {
                let start: TableStart = serde_json::from_slice(&src.line)
                    .map_err(|_| src.damaged("a table line does not parse"))?;
                let Some(index) = self
                    .header
                    .tables
                    .iter()
                    .position(|t| t.name == start.table)
                else {
                    return Err(src.damaged("it holds a table its header does not list"));
                };
                self.current = Some(index);
                src.hash();
                Ok(Item::Table(start.table))
            }
            Some(b'{') => {
                let trailer: Trailer = serde_json::from_slice(&src.line)
                    .ok()
                    .filter(|t: &Trailer| t.end == FORMAT)
                    .ok_or_else(|| src.damaged("a line is neither a row nor a table"))?;
                if trailer.sha256 != hex(&src.hash.clone().finalize()) {
                    return Err(src.damaged("its checksum does not match its content"));
                }
                let expected: Vec<u64> = self.header.tables.iter().map(|t| t.rows).collect();
                if trailer.rows != self.rows || expected != self.counts {
                    return Err(src.damaged("its row counts do not match its header"));
                }
                if src.read()? {
                    return Err(src.damaged("it goes on after its trailer"));
                }
                src.check_footer()?;
                self.done = true;
                Ok(Item::End)
            }
            _ => Err(src.damaged("a line is neither a row nor a table")),
        }
    }

    /// Reads the whole file, checking it; returns its header.
    pub fn verify(mut self) -> Result<Header> {
        while !matches!(self.next_item()?, Item::End) {}
        Ok(self.header)
    }
}

/// Every row of the backup at `path`, checked, by table and sorted: two backups hold the same
/// data exactly when these are equal (the self-test's round-trip check).
pub fn rows(path: &Path) -> Result<std::collections::BTreeMap<String, Vec<Vec<u8>>>> {
    let mut reader = Reader::open(path)?;
    let mut tables: std::collections::BTreeMap<String, Vec<Vec<u8>>> = Default::default();
    let mut current = String::new();
    loop {
        match reader.next_item()? {
            Item::Table(name) => {
                tables.entry(name.clone()).or_default();
                current = name;
            }
            Item::Row(row) => tables
                .entry(current.clone())
                .or_default()
                .push(row.to_vec()),
            Item::End => break,
        }
    }
    tables.values_mut().for_each(|rows| rows.sort());
    Ok(tables)
}

/// Reads only the header of the backup at `path`.
pub fn header(path: &Path) -> Result<Header> {
    Reader::open(path).map(|r| r.header)
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

fn write_error(dir: &Path, e: &io::Error) -> Error {
    let kind = match e.kind() {
        io::ErrorKind::PermissionDenied => crate::error::ErrorKind::Permission,
        _ => crate::error::ErrorKind::Temporary,
    };
    Error::new(
        kind,
        format!("cannot write a backup in {}: {e}", dir.display()),
    )
    .hint("check free space and permissions there, or set backup_dir; no backup was written")
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("backup file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            executable: "notes".into(),
            executable_version: "0.1.0".into(),
            schema_version: 1,
            backend: Backend::Sqlite,
            created_at: Utc::now(),
            kind: Kind::Backup,
            tables: vec![TableInfo {
                name: "notes".into(),
                columns: vec!["id".into(), "text".into()],
                rows: 2,
            }],
        }
    }

    fn write(dir: &Path) -> PathBuf {
        let h = header();
        let mut w =
            Writer::create(dir, file_name("notes", h.created_at, Kind::Backup), &h).unwrap();
        w.table("notes").unwrap();
        w.row(br#"[1,"a"]"#).unwrap();
        w.row(br#"[2,"b"]"#).unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn a_written_backup_verifies_and_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path());
        assert_eq!(Reader::open(&path).unwrap().verify().unwrap().rows(), 2);
        let listed = list(dir.path(), "notes").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, path);
        assert!(list(dir.path(), "note").unwrap().is_empty());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a partial file was left behind");
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path());
        let good = fs::read(&path).unwrap();
        let bad = dir.path().join("bad");
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x10;
            fs::write(&bad, &bytes).unwrap();
            let e = Reader::open(&bad).and_then(Reader::verify).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidInput,
                "byte {i}: {}",
                e.message()
            );
        }
        for len in 0..good.len() {
            fs::write(&bad, &good[..len]).unwrap();
            let e = Reader::open(&bad).and_then(Reader::verify).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidInput,
                "length {len}: {}",
                e.message()
            );
        }
    }

    #[test]
    fn a_foreign_file_and_a_missing_one_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        fs::write(&other, b"hello").unwrap();
        let e = Reader::open(&other).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = Reader::open(&dir.path().join("missing")).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::NoInput);
    }

    #[test]
    fn stale_partials_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".partial-999999999-abc");
        let live = dir
            .path()
            .join(format!(".partial-{}-abc", std::process::id()));
        fs::write(&stale, b"x").unwrap();
        fs::write(&live, b"x").unwrap();
        write(dir.path());
        assert!(!stale.exists());
        assert!(live.exists());
    }
}
