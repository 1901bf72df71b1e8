//! The backup file: zstd-compressed JSON lines, written under a temporary name and renamed
//! into place; its file checksum is checked before a restore uses it, and the rest as it is
//! read.
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
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Backend;
use crate::error::{Error, Result};
use crate::output::Progress;

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
/// The writer hashes and compresses lines in blocks of about this size.
const BLOCK: usize = 64 << 10;
const MAX_ROW_GUESS: usize = 4 << 10;
/// No line of a backup is longer than this; a longer one means a damaged file.
const MAX_LINE: u64 = 256 << 20;
/// The footer: a skippable frame (magic, length 36) holding `CDBK` and a SHA-256.
const FOOTER_MAGIC: u32 = 0x184D_2A5C;
/// What every footer starts with, before the hash.
const FOOTER_TAG: [u8; 12] = footer_tag();

const fn footer_tag() -> [u8; 12] {
    let magic = FOOTER_MAGIC.to_le_bytes();
    let len = 36u32.to_le_bytes();
    [
        magic[0], magic[1], magic[2], magic[3], len[0], len[1], len[2], len[3], b'C', b'D', b'B',
        b'K',
    ]
}
const FOOTER_LEN: usize = FOOTER_TAG.len() + 32;
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
    /// Its domain, when that is not the executable itself: any executable of the domain may
    /// restore it. (Absent from the backups of a domain of one, byte for byte as before.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
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

/// The name of a backup of `series` (an executable's database: `backup::series`) taken at `at`.
pub fn file_name(series: &str, at: DateTime<Utc>, kind: Kind) -> String {
    let suffix = match kind {
        Kind::Backup => "",
        Kind::Safety => SAFETY_SUFFIX,
    };
    format!(
        "{series}-{}{suffix}{EXTENSION}",
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

/// The backups of `series` (an executable's database) in `dir`, newest first (their names sort
/// by time). Files of other executables or databases, partial files, and files another user
/// owns or could have changed are not listed: restore never takes one of those for the newest,
/// and retention leaves them alone.
pub fn list(dir: &Path, series: &str) -> Result<Vec<Entry>> {
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
    let prefix = format!("{series}-");
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
            // Only files this user could have written: a regular file (not a symlink), owned
            // by the user, that no one else can change. Anything else is someone else's.
            let meta = e.metadata().ok()?;
            let mine = meta.is_file() && crate::secrets::foreign(&meta, false).is_none();
            if !mine {
                return None;
            }
            let path = e.path();
            Some((stamp.to_string(), Entry { path, kind }))
        })
        .collect();
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// Writes a backup: header, tables and rows, trailer; into place only by [`Writer::finish`].
///
/// The rows are encoded on the caller's thread; a second thread hashes and compresses them a
/// block at a time, so that on two cores a backup takes about the time of its encoding alone.
pub struct Writer {
    /// Lines not yet handed to the compressor.
    pending: Vec<u8>,
    blocks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    compressor: Option<std::thread::JoinHandle<io::Result<Compressed>>>,
    rows: u64,
    /// Bytes of lines handed to the compressor so far.
    sent: u64,
    progress: Progress,
    dir: PathBuf,
    name: String,
}

/// The compressed stream and the hash of every line in it.
type Out = zstd::Encoder<'static, Hashing<BufWriter<tempfile::NamedTempFile>>>;
struct Compressed {
    out: Out,
    content: Sha256,
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
        let (blocks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let compressor = std::thread::Builder::new()
            .name("backup-compress".into())
            .spawn(move || {
                let mut content = Sha256::new();
                for block in received {
                    content.update(&block);
                    out.write_all(&block)?;
                }
                Ok(Compressed { out, content })
            })
            .map_err(internal)?;
        let mut writer = Writer {
            pending: Vec::with_capacity(BLOCK + MAX_ROW_GUESS),
            blocks: Some(blocks),
            compressor: Some(compressor),
            rows: 0,
            sent: 0,
            progress: Progress::none(),
            dir: dir.to_path_buf(),
            name,
        };
        let line = serde_json::to_vec(header).map_err(internal)?;
        writer.line(&line)?;
        Ok(writer)
    }

    /// Shows the rows written on `progress`.
    pub(crate) fn show(&mut self, progress: Progress) {
        self.progress = progress;
    }

    /// Starts the rows of `table`.
    pub fn table(&mut self, table: &str) -> Result<()> {
        let line = serde_json::to_vec(&TableStart {
            table: table.to_string(),
        })
        .map_err(internal)?;
        self.line(&line)
    }

    /// Writes one row: `encode` appends it, a JSON array without its line ending. If it fails,
    /// nothing of the row is kept.
    pub fn row(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        let start = self.pending.len();
        if let Err(e) = encode(&mut self.pending) {
            self.pending.truncate(start);
            return Err(e);
        }
        self.pending.push(b'\n');
        self.rows += 1;
        if self.rows.is_multiple_of(Progress::EVERY) {
            let bytes = self.sent + self.pending.len() as u64;
            self.progress.update(self.rows, bytes);
        }
        self.flush_if_full()
    }

    fn line(&mut self, line: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> Result<()> {
        if self.pending.len() >= BLOCK {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the pending lines to the compressor.
    fn flush(&mut self) -> Result<()> {
        let block = std::mem::replace(&mut self.pending, Vec::with_capacity(BLOCK + MAX_ROW_GUESS));
        self.sent += block.len() as u64;
        if let Some(blocks) = &self.blocks
            && blocks.send(block).is_ok()
        {
            return Ok(());
        }
        // The compressor stopped: its error says why.
        self.compressed().map(drop)
    }

    /// Waits for the compressor to take every block, and takes its stream back.
    fn compressed(&mut self) -> Result<Compressed> {
        self.blocks = None;
        let compressor = self
            .compressor
            .take()
            .ok_or_else(|| internal("the compressor is gone"))?;
        compressor
            .join()
            .map_err(|_| internal("the compressor panicked"))?
            .map_err(|e| write_error(&self.dir, &e))
    }

    /// Writes the trailer, syncs the file to disk and renames it into place (never over another
    /// file), then syncs the directory. Returns the backup's path and size.
    pub fn finish(mut self) -> Result<(PathBuf, u64)> {
        self.flush()?;
        let Compressed { mut out, content } = self.compressed()?;
        let trailer = Trailer {
            end: FORMAT.to_string(),
            rows: self.rows,
            sha256: hex::encode(content.finalize()),
        };
        let line = serde_json::to_vec(&trailer).map_err(internal)?;
        let dir = std::mem::take(&mut self.dir);
        let tmp = out
            .write_all(&line)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.finish())
            .and_then(|Hashing { mut inner, hash }| {
                inner.write_all(&FOOTER_TAG)?;
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

/// A backup that stops before [`Writer::finish`] waits for its compressor, whose partial file
/// goes with it: a failed backup leaves nothing behind.
impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.compressed();
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

/// The decompressed lines of a backup file. A thread of their own decompresses them and hashes
/// them a block at a time, while the caller's thread uses the rows.
struct Lines {
    path: PathBuf,
    blocks: std::sync::mpsc::Receiver<std::result::Result<Block, String>>,
    block: Vec<u8>,
    /// Where the current line is in `block`, and where the next one starts.
    line: std::ops::Range<usize>,
    next: usize,
    /// The SHA-256 of every line but the last, once the end has been read.
    before_last: Option<[u8; 32]>,
}

/// What the decompressing thread passes on.
enum Block {
    /// Whole lines (the last of the file may lack its ending, if the file is damaged).
    Lines(Vec<u8>),
    /// The end, with the hash of every line before the last.
    End([u8; 32]),
}

/// Decompressed bytes are passed on in blocks of about this size.
const READ_BLOCK: usize = 256 << 10;

impl Lines {
    fn start(path: &Path, compressed: io::Take<File>) -> Result<Lines> {
        let decoder = zstd::Decoder::new(compressed).map_err(internal)?;
        let (sender, blocks) = std::sync::mpsc::sync_channel(2);
        std::thread::Builder::new()
            .name("backup-read".into())
            .spawn(move || {
                if let Err(why) = decompress(decoder, &sender) {
                    let _ = sender.send(Err(why));
                }
            })
            .map_err(internal)?;
        Ok(Lines {
            path: path.to_path_buf(),
            blocks,
            block: Vec::new(),
            line: 0..0,
            next: 0,
            before_last: None,
        })
    }

    /// Moves to the next line, without its ending; `false` at the end.
    fn read(&mut self) -> Result<bool> {
        while self.next >= self.block.len() {
            match self.blocks.recv() {
                Ok(Ok(Block::Lines(block))) => {
                    self.block = block;
                    self.next = 0;
                }
                Ok(Ok(Block::End(hash))) => {
                    self.before_last = Some(hash);
                    return Ok(false);
                }
                Ok(Err(why)) => return Err(self.damaged(&why)),
                Err(_) => return Err(internal("the decompressing thread stopped")),
            }
        }
        let rest = &self.block[self.next..];
        let Some(end) = memchr::memchr(b'\n', rest) else {
            return Err(self.damaged("its last line is cut off (truncated?)"));
        };
        self.line = self.next..self.next + end;
        self.next += end + 1;
        Ok(true)
    }

    /// The current line.
    fn line(&self) -> &[u8] {
        &self.block[self.line.clone()]
    }

    fn damaged(&self, why: &str) -> Error {
        damaged(&self.path, why)
    }
}

/// The decompressing thread: passes on blocks of whole lines, each hashed once the next is
/// read, and at the end the hash of every line but the last (the trailer, which holds it).
/// Stops quietly when the reader is gone; says why when the file is damaged.
fn decompress(
    mut decoder: zstd::Decoder<'static, BufReader<io::Take<File>>>,
    sender: &std::sync::mpsc::SyncSender<std::result::Result<Block, String>>,
) -> std::result::Result<(), String> {
    let pass = |block| sender.send(Ok(block)).is_ok();
    let mut hash = Sha256::new();
    let mut held: Option<Vec<u8>> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BLOCK * 2);
    loop {
        let len = buf.len();
        buf.resize(len + READ_BLOCK, 0);
        let n = decoder
            .read(&mut buf[len..])
            .map_err(|e| format!("it cannot be decompressed ({e})"))?;
        buf.truncate(len + n);
        if n == 0 {
            if let Some(last) = held.take() {
                let body = last.len().saturating_sub(1);
                let cut = memchr::memrchr(b'\n', &last[..body]).map_or(0, |i| i + 1);
                hash.update(&last[..cut]);
                if !pass(Block::Lines(last)) {
                    return Ok(());
                }
            }
            if !buf.is_empty() && !pass(Block::Lines(buf)) {
                return Ok(());
            }
            pass(Block::End(hash.finalize().into()));
            return Ok(());
        }
        let Some(end) = memchr::memrchr(b'\n', &buf[len..]) else {
            if buf.len() as u64 > MAX_LINE {
                return Err(format!(
                    "a line is longer than any backup holds ({} MiB)",
                    MAX_LINE >> 20
                ));
            }
            continue;
        };
        let rest = buf.split_off(len + end + 1);
        let whole = std::mem::replace(&mut buf, rest);
        if let Some(previous) = held.replace(whole) {
            hash.update(&previous);
            if !pass(Block::Lines(previous)) {
                return Ok(());
            }
        }
    }
}

/// Compares the SHA-256 of the file's first `body` bytes with its footer's: one pass over the
/// compressed bytes, by position (the file's offset stays where it is), which refuses any
/// flipped bit or truncation before a single line is used, even the header's.
fn check_file(file: &File, body: u64, path: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let unreadable = |e: io::Error| damaged(path, &format!("it cannot be read ({e})"));
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = 0;
    while pos < body {
        let want = usize::try_from(body - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = file.read_at(&mut buf[..want], pos).map_err(unreadable)?;
        if n == 0 {
            return Err(damaged(path, "it is shorter than it was a moment ago"));
        }
        hash.update(&buf[..n]);
        pos += n as u64;
    }
    let mut footer = [0u8; FOOTER_LEN];
    let n = file.read_at(&mut footer, body).map_err(unreadable)?;
    if n != FOOTER_LEN || footer[..12] != FOOTER_TAG {
        return Err(damaged(
            path,
            "it does not end with a backup's checksum (truncated, or not a commondb backup?)",
        ));
    }
    if footer[12..] != hash.finalize()[..] {
        return Err(damaged(path, "its file checksum does not match (altered?)"));
    }
    Ok(())
}

/// Opens a file that should be a backup: refuses one that is not zstd at all, and returns it
/// with the length of its body (all but the footer).
fn open_compressed(path: &Path) -> Result<(File, u64)> {
    let unreadable = |e: io::Error| {
        Error::no_input(format!("cannot read {}: {e}", path.display()))
            .hint("check the file's permissions")
    };
    // Non-blocking, so that opening a FIFO does not wait for a writer; a backup is a regular
    // file, and anything else (a FIFO, a device, a directory) is refused before a byte is read.
    let mut file = crate::secrets::without_waiting(std::fs::OpenOptions::new().read(true), true)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::no_input(format!("{} does not exist", path.display()))
                    .hint("give the path of a backup, or leave --from out to restore the newest")
            }
            _ => unreadable(e),
        })?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(Error::no_input(format!(
            "{} is not a regular file; nothing was changed",
            path.display()
        ))
        .hint("give the path of a backup file that --self-backup wrote"));
    }
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
    Ok((file, len.saturating_sub(FOOTER_LEN as u64)))
}

/// A backup's first line as its header: refuses a foreign file and a newer format.
fn parse_header(line: &[u8], path: &Path) -> Result<Header> {
    let header: Header = serde_json::from_slice(line)
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
    check_tables(&header, path)?;
    Ok(header)
}

/// Refuses a header whose tables a restore could not load as listed: a name that is no
/// identifier, a table listed twice or without columns, a column listed twice (which one of
/// the two would the row's values go to?).
fn check_tables(header: &Header, path: &Path) -> Result<()> {
    let refuse = |what: String| {
        Error::invalid_input(format!(
            "the backup {} lists {what}; nothing was changed",
            path.display()
        ))
        .hint("the backup was not written by this program, or by a newer one: restore another with --from FILE")
    };
    let named = |name: &str| format!("\"{}\"", name.escape_default());
    for (i, table) in header.tables.iter().enumerate() {
        if crate::db::backend::check_identifier(&table.name).is_err() {
            return Err(refuse(format!(
                "table {}, which is not a valid SQL identifier",
                named(&table.name)
            )));
        }
        if header.tables[..i].iter().any(|t| t.name == table.name) {
            return Err(refuse(format!("table {} twice", table.name)));
        }
        if table.columns.is_empty() {
            return Err(refuse(format!("table {} without columns", table.name)));
        }
        for (j, column) in table.columns.iter().enumerate() {
            if crate::db::backend::check_identifier(column).is_err() {
                return Err(refuse(format!(
                    "column {}.{}, which is not a valid SQL identifier",
                    table.name,
                    named(column)
                )));
            }
            if table.columns[..j].contains(column) {
                return Err(refuse(format!("column {}.{column} twice", table.name)));
            }
        }
    }
    Ok(())
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
    /// Bytes of the rows read so far, for `progress`.
    bytes: u64,
    progress: Progress,
}

impl Reader {
    /// Opens a backup, reads its header and checks the file checksum. A file that is not a
    /// backup, one of a format newer than this program's, and a damaged or truncated one are
    /// refused. The rest (structure, row counts, the content checksum) is checked as the rows
    /// are read: [`Item::End`] comes only when all of it held.
    pub fn open(path: &Path) -> Result<Reader> {
        let (file, body) = open_compressed(path)?;
        check_file(&file, body, path)?;
        let mut src = Lines::start(path, file.take(body))?;
        if !src.read()? {
            return Err(src.damaged("it is empty"));
        }
        let header = parse_header(src.line(), path)?;
        Ok(Reader {
            src,
            counts: vec![0; header.tables.len()],
            header,
            rows: 0,
            current: None,
            done: false,
            bytes: 0,
            progress: Progress::none(),
        })
    }

    /// Shows the rows read on `progress`.
    pub(crate) fn show(&mut self, progress: Progress) {
        self.progress = progress;
    }

    /// The header, once the file checksum held.
    pub fn into_header(self) -> Header {
        self.header
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
        let line = src.line();
        match line.first() {
            Some(b'[') => {
                let Some(table) = self.current else {
                    return Err(src.damaged("a row comes before any table"));
                };
                self.counts[table] += 1;
                self.rows += 1;
                self.bytes += line.len() as u64 + 1;
                if self.rows.is_multiple_of(Progress::EVERY) {
                    self.progress.update(self.rows, self.bytes);
                }
                Ok(Item::Row(src.line()))
            }
            Some(b'{') if line.starts_with(b"{\"table\"") => {
                let start: TableStart = serde_json::from_slice(line)
                    .map_err(|_| src.damaged("a table line does not parse"))?;
                let Some(index) = self
                    .header
                    .tables
                    .iter()
                    .position(|t| t.name == start.table)
                else {
                    return Err(src.damaged("it holds a table its header does not list"));
                };
                if self.current.is_some_and(|c| c >= index) {
                    return Err(src.damaged("its tables are not in its header's order"));
                }
                self.current = Some(index);
                Ok(Item::Table(start.table))
            }
            Some(b'{') => {
                let trailer: Trailer = serde_json::from_slice(line)
                    .ok()
                    .filter(|t: &Trailer| t.end == FORMAT)
                    .ok_or_else(|| src.damaged("a line is neither a row nor a table"))?;
                // The trailer is the last line: the hash of all before it comes with the end.
                if src.read()? {
                    return Err(src.damaged("it goes on after its trailer"));
                }
                if src.before_last.map(hex::encode) != Some(trailer.sha256) {
                    return Err(src.damaged("its checksum does not match its content"));
                }
                let expected: Vec<u64> = self.header.tables.iter().map(|t| t.rows).collect();
                if trailer.rows != self.rows || expected != self.counts {
                    return Err(src.damaged("its row counts do not match its header"));
                }
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

/// The header of the backup at `path`, read alone: its first line, without the file checksum,
/// which would read the whole file. Retention counts a backup as good when this reads, and
/// must stay cheap however large the backups; [`Reader::open`] is the check before a restore.
pub fn header(path: &Path) -> Result<Header> {
    let (file, body) = open_compressed(path)?;
    let decoder = zstd::Decoder::new(file.take(body)).map_err(internal)?;
    let mut line = Vec::new();
    io::BufRead::read_until(
        &mut BufReader::new(decoder).take(MAX_LINE),
        b'\n',
        &mut line,
    )
    .map_err(|e| damaged(path, &format!("it cannot be decompressed ({e})")))?;
    if line.pop() != Some(b'\n') {
        return Err(damaged(path, "it is empty or cut off in its header"));
    }
    parse_header(&line, path)
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
    use std::os::unix::fs::PermissionsExt;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            executable: "notes".into(),
            domain: None,
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
        for row in [r#"[1,"a"]"#, r#"[2,"b"]"#] {
            w.row(|buf| {
                buf.extend_from_slice(row.as_bytes());
                Ok(())
            })
            .unwrap();
        }
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

    /// Opening alone refuses them, before a single line is used.
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
            let e = Reader::open(&bad)
                .err()
                .expect("a flipped byte went unnoticed");
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidInput,
                "byte {i}: {}",
                e.message()
            );
        }
        for len in 0..good.len() {
            fs::write(&bad, &good[..len]).unwrap();
            let e = Reader::open(&bad)
                .err()
                .expect("a truncation went unnoticed");
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidInput,
                "length {len}: {}",
                e.message()
            );
        }
    }

    /// A file whose file checksum holds around `lines`, as a faulty writer could leave one.
    fn forge(dir: &Path, lines: &[String]) -> PathBuf {
        let body = zstd::encode_all(lines.concat().as_bytes(), LEVEL).unwrap();
        let path = dir.join("forged");
        fs::write(&path, footed(body)).unwrap();
        path
    }

    /// `body` with the footer a writer would give it.
    fn footed(mut body: Vec<u8>) -> Vec<u8> {
        let hash = Sha256::digest(&body);
        body.extend_from_slice(&FOOTER_TAG);
        body.extend_from_slice(&hash);
        body
    }

    #[test]
    fn a_sound_file_with_unsound_content_is_refused_as_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let head = format!("{}\n", serde_json::to_string(&header()).unwrap());
        let table = "{\"table\":\"notes\"}\n".to_string();
        let rows = ["[1,\"a\"]\n".to_string(), "[2,\"b\"]\n".to_string()];
        let content = [
            head.clone(),
            table.clone(),
            rows[0].clone(),
            rows[1].clone(),
        ]
        .concat();
        let sha = hex::encode(Sha256::digest(content.as_bytes()));
        let trailer = |rows: u64, sha: &str| {
            format!("{{\"end\":\"{FORMAT}\",\"rows\":{rows},\"sha256\":\"{sha}\"}}\n")
        };
        let read = |lines: &[String]| {
            let path = forge(dir.path(), lines);
            Reader::open(&path).and_then(Reader::verify)
        };
        let whole = [content.clone(), trailer(2, &sha)];
        assert_eq!(
            read(&whole).unwrap().rows(),
            2,
            "the forger itself is wrong"
        );
        let more = [content.clone(), rows[1].clone()].concat();
        let more_sha = hex::encode(Sha256::digest(more.as_bytes()));
        let tableless = [head.clone(), rows[0].clone()].concat();
        let tableless_sha = hex::encode(Sha256::digest(tableless.as_bytes()));
        // The table's line again before its second row: its rows would be loaded in two parts.
        let twice = [
            head.clone(),
            table.clone(),
            rows[0].clone(),
            table.clone(),
            rows[1].clone(),
        ]
        .concat();
        let twice_sha = hex::encode(Sha256::digest(twice.as_bytes()));
        let cases: [(&str, Vec<String>); 6] = [
            (
                "not in its header's order",
                vec![twice, trailer(2, &twice_sha)],
            ),
            (
                "does not match its content",
                vec![content.clone(), trailer(2, &"0".repeat(64))],
            ),
            ("row counts do not match", vec![more, trailer(3, &more_sha)]),
            (
                "after its trailer",
                vec![content.clone(), trailer(2, &sha), rows[0].clone()],
            ),
            (
                "before any table",
                vec![tableless, trailer(1, &tableless_sha)],
            ),
            (
                "cut off",
                vec![content, trailer(2, &sha).trim_end().to_string()],
            ),
        ];
        for (says, lines) in cases {
            let e = read(&lines).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{says}: {}", e.message());
            assert!(e.message().contains(says), "{says}: {}", e.message());
        }
        // A frame damaged before its file checksum was taken: zstd's own checksum notices.
        let mut frame = zstd::stream::Encoder::new(Vec::new(), LEVEL).unwrap();
        frame.include_checksum(true).unwrap();
        frame.write_all(whole.concat().as_bytes()).unwrap();
        let mut body = frame.finish().unwrap();
        let last = body.len() - 1;
        body[last] ^= 0x01;
        let path = dir.path().join("bad-frame");
        fs::write(&path, footed(body)).unwrap();
        let e = Reader::open(&path).and_then(Reader::verify).unwrap_err();
        assert!(
            e.message().contains("cannot be decompressed"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn rows_across_many_blocks_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = header();
        h.tables[0].rows = 50_000;
        let mut w = Writer::create(dir.path(), "many.jsonl.zst".into(), &h).unwrap();
        w.table("notes").unwrap();
        for i in 0..50_000 {
            w.row(|buf| {
                buf.extend_from_slice(format!("[{i},\"{}\"]", "x".repeat(i % 97)).as_bytes());
                Ok(())
            })
            .unwrap();
        }
        let (path, _) = w.finish().unwrap();
        let mut reader = Reader::open(&path).unwrap();
        assert!(matches!(reader.next_item().unwrap(), Item::Table(t) if t == "notes"));
        for i in 0..50_000 {
            let expected = format!("[{i},\"{}\"]", "x".repeat(i % 97));
            match reader.next_item().unwrap() {
                Item::Row(row) => assert_eq!(row, expected.as_bytes(), "row {i}"),
                _ => panic!("row {i} is missing"),
            }
        }
        assert!(matches!(reader.next_item().unwrap(), Item::End));
    }

    #[test]
    fn a_backup_stopped_before_it_finished_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let h = header();
        let mut w = Writer::create(dir.path(), "stopped.jsonl.zst".into(), &h).unwrap();
        w.table("notes").unwrap();
        for i in 0..100_000 {
            w.row(|buf| {
                buf.extend_from_slice(
                    format!("[{i},\"a row long enough to fill blocks\"]").as_bytes(),
                );
                Ok(())
            })
            .unwrap();
        }
        let failed = w.row(|_| Err(Error::internal("the database went away")));
        assert!(failed.is_err());
        drop(w);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
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
    fn a_fifo_or_a_device_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        crate::testing::mkfifo(&fifo);
        // Opening a FIFO for reading waits for a writer, forever: this returns at once.
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
            let e = Reader::open(path).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::NoInput, "{}: {e}", path.display());
            assert!(e.message().contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn files_someone_else_could_have_written_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mine = write(dir.path());
        std::thread::sleep(std::time::Duration::from_millis(2));
        // A newer copy that group or others may change, and a newer symlink to it.
        let shared = write(dir.path());
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o620)).unwrap();
        let link = dir
            .path()
            .join(file_name("notes", Utc::now(), Kind::Backup));
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        let listed: Vec<_> = list(dir.path(), "notes")
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(listed, vec![mine.clone()]);
        if rustix::process::geteuid().is_root() {
            // One owned by another user (only root can make one).
            std::os::unix::fs::chown(&mine, Some(12345), None).unwrap();
            assert!(list(dir.path(), "notes").unwrap().is_empty());
        }
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

    // Fuzzing (issue 12): a file with any bytes, and a well-formed file (checksums right) with
    // any rows, is read or refused as invalid input; never a panic.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        #[test]
        fn any_bytes_are_refused_as_a_backup(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            zstd_magic in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.jsonl.zst");
            let mut bytes = if zstd_magic { ZSTD_MAGIC.to_vec() } else { Vec::new() };
            bytes.extend_from_slice(&body);
            fs::write(&path, &bytes).unwrap();
            let e = Reader::open(&path).and_then(Reader::verify).unwrap_err();
            proptest::prop_assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}", e);
        }

        #[test]
        fn well_formed_files_with_any_rows_are_read_or_refused(
            rows in proptest::collection::vec(
                r#"\[(-?[0-9]{1,25}|"[^"\\]{0,8}"|null|true|\[\]|\{\}|1e999)(,(-?[0-9.]{1,8}|"a"|null)){0,3}\]|[ -~]{0,12}"#,
                0..6,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let h = header();
            let mut w = Writer::create(dir.path(), file_name("notes", h.created_at, Kind::Backup), &h)
                .unwrap();
            w.table("notes").unwrap();
            for row in &rows {
                w.row(|buf| {
                    buf.extend_from_slice(row.as_bytes());
                    Ok(())
                })
                .unwrap();
            }
            let path = w.finish().unwrap().0;
            if let Err(e) = Reader::open(&path).and_then(Reader::verify) {
                proptest::prop_assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}", e);
            }
        }
    }
}
