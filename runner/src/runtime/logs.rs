//! The services' log files, and `fleet logs`.
//!
//! Every line the runtime prints is also appended to `<dir>/<service>.log` (the runtime's own
//! lines to `fleet.log`), each line stamped with the time in UTC:
//! `2026-12-01T03:04:05.123Z create-user.0 | text`. A file past `logs.max_bytes` is rotated
//! (`.log.1` is the newest of the `logs.keep` old ones). The directory is private (0700), the
//! files 0600 and never followed through a symbolic link. `fleet logs` reads the files, so it
//! works while the fleet runs and after it has stopped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use super::output::each_line;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::config::Logs;

/// The log files of a running fleet.
pub struct LogFiles {
    dir: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// Each service's open file, and its size.
    open: Mutex<HashMap<String, (File, u64)>>,
}

/// Where the logs of the fleet that `file` describes go: `logs.dir` (relative to the
/// fleet.toml's directory), else `$XDG_STATE_HOME/commondb/fleet/<id>`, else
/// `~/.local/state/commondb/fleet/<id>` (`<id>` names the fleet.toml's absolute path).
pub fn dir(file: &Path, logs: &Logs, id: &str) -> Result<PathBuf, String> {
    if let Some(dir) = &logs.dir {
        let base = std::fs::canonicalize(file)
            .ok()
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        return Ok(base.join(dir));
    }
    let state = directories::ProjectDirs::from("", "", "commondb")
        .and_then(|d| d.state_dir().map(Path::to_path_buf))
        .ok_or("neither XDG_STATE_HOME nor HOME is set: no place for the logs (set logs.dir)")?;
    Ok(state.join("fleet").join(id))
}

impl LogFiles {
    /// The log files in `dir` (created private if need be).
    pub fn open(dir: &Path, logs: &Logs) -> Result<LogFiles, String> {
        commondb::secrets::create_private_dir(dir).map_err(|e| e.message().to_string())?;
        Ok(LogFiles {
            dir: dir.to_path_buf(),
            max_bytes: logs.max_bytes,
            keep: logs.keep,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Appends `line` (without its newline) to `service`'s file, stamped, rotating it first
    /// if it is full. A file that cannot be written loses the line, not the fleet.
    pub fn write(&self, service: &str, line: &str) {
        let stamped = format!(
            "{} {line}\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
        );
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let full = open
            .get(service)
            .is_some_and(|(_, size)| size + stamped.len() as u64 > self.max_bytes);
        if full {
            open.remove(service);
            self.rotate(service);
        }
        if !open.contains_key(service) {
            match open_append(&self.path(service)) {
                Ok(file) => {
                    let size = file.metadata().map_or(0, |m| m.len());
                    open.insert(service.to_string(), (file, size));
                }
                Err(_) => return,
            }
        }
        if let Some((file, size)) = open.get_mut(service)
            && file.write_all(stamped.as_bytes()).is_ok()
        {
            *size += stamped.len() as u64;
        }
    }

    fn path(&self, service: &str) -> PathBuf {
        self.dir.join(format!("{service}.log"))
    }

    /// `service.log` becomes `.log.1`, `.log.1` becomes `.log.2`, …; the oldest past `keep`
    /// is removed.
    fn rotate(&self, service: &str) {
        let current = self.path(service);
        let old = |n: u32| PathBuf::from(format!("{}.{n}", current.display()));
        if self.keep == 0 {
            let _ = std::fs::remove_file(&current);
            return;
        }
        let _ = std::fs::remove_file(old(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(old(n), old(n + 1));
        }
        let _ = std::fs::rename(&current, old(1));
    }
}

/// Opens `path` to append, creating it mode 0600, never through a symbolic link.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// The longest line `fleet logs` shows whole.
const MAX_LINE: u64 = 64 * 1024;

/// `fleet logs`: the last `n` lines of `service` (or of every service, merged in time order),
/// then with `follow` every new line as it comes, until interrupted.
pub fn show(dir: &Path, service: Option<&str>, n: usize, follow: bool) -> Result<(), String> {
    let services = match service {
        Some(s) => vec![s.to_string()],
        None => logged_services(dir)?,
    };
    if let Some(s) = service
        && !dir.join(format!("{s}.log")).exists()
    {
        return Err(format!(
            "no log of {s:?} in {} (is it a service of this fleet, and has it run?)",
            dir.display()
        ));
    }
    let mut lines: Vec<String> = Vec::new();
    let mut ends = Vec::new();
    for s in &services {
        let path = dir.join(format!("{s}.log"));
        let (tail, end) = last_lines(&path, n)?;
        lines.extend(tail);
        ends.push((path, end));
    }
    by_time(&mut lines);
    let skip = lines.len().saturating_sub(n);
    let mut stdout = std::io::stdout().lock();
    for line in &lines[skip..] {
        if writeln!(stdout, "{line}").is_err() {
            return Ok(());
        }
    }
    let _ = stdout.flush();
    drop(stdout);
    if follow {
        follow_files(ends);
    }
    Ok(())
}

/// Sorts lines of several files by their stamps (which sort as text), keeping the order of
/// lines with the same stamp: each file's order.
fn by_time(lines: &mut [String]) {
    let stamp = |l: &String| l.split(' ').next().unwrap_or("").to_string();
    lines.sort_by_cached_key(stamp);
}

fn logged_services(dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "no logs in {} ({e}); has this fleet run? (fleet up)",
            dir.display()
        )
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".log").map(String::from))
        .collect();
    names.sort();
    Ok(names)
}

/// The last `n` lines of the file at `path` (each cut at [`MAX_LINE`]), read from at most the
/// last `n` × 4 KiB of it, and where the file ended.
fn last_lines(path: &Path, n: usize) -> Result<(Vec<String>, u64), String> {
    let mut file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let end = file.metadata().map_or(0, |m| m.len());
    let window = (n as u64).saturating_mul(4096).max(4096);
    let from = end.saturating_sub(window);
    file.seek(SeekFrom::Start(from))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = Vec::new();
    each_line(file.take(end - from), MAX_LINE as usize, |l| {
        lines.push(l.to_string())
    });
    if from > 0 && !lines.is_empty() {
        lines.remove(0); // the first is likely a part of a line
    }
    let skip = lines.len().saturating_sub(n);
    Ok((lines.split_off(skip), end))
}

/// A log file being followed: the file open (so that its tail is still read after a rotation
/// renamed it), its inode, and how far it was read.
struct Followed {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    at: u64,
}

/// The whole lines appended to `file` since byte `at` (at most 1 MiB a round); `at` moves past
/// them, a line still being written waits for the next round.
fn appended(file: &mut File, at: &mut u64) -> Vec<String> {
    let size = file.metadata().map_or(0, |m| m.len());
    if size <= *at || file.seek(SeekFrom::Start(*at)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file
        .take((size - *at).min(1 << 20))
        .read_to_end(&mut bytes)
        .is_err()
    {
        return Vec::new();
    }
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    *at += end as u64 + 1;
    bytes[..end]
        .split(|b| *b == b'\n')
        .map(|l| {
            String::from_utf8_lossy(&l[..l.len().min(MAX_LINE as usize)])
                .trim_end_matches('\r')
                .to_string()
        })
        .collect()
}

/// Prints what is appended to each file from where it was, every 200 ms, until the output
/// closes. When a file is rotated (its path names another inode), the rest of the old one is
/// read through the handle still open, then the new one from its start.
fn follow_files(files: Vec<(PathBuf, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let mut files: Vec<Followed> = files
        .into_iter()
        .map(|(path, at)| {
            let file = File::open(&path).ok();
            let inode = file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.ino());
            Followed {
                path,
                file,
                inode,
                at,
            }
        })
        .collect();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut lines = Vec::new();
        for f in &mut files {
            let now = std::fs::metadata(&f.path).map_or(0, |m| m.ino());
            if now != f.inode || f.file.is_none() {
                if let Some(old) = f.file.as_mut() {
                    lines.extend(appended(old, &mut f.at));
                }
                f.file = File::open(&f.path).ok();
                f.inode = now;
                f.at = 0;
            }
            if let Some(file) = f.file.as_mut() {
                lines.extend(appended(file, &mut f.at));
            }
        }
        by_time(&mut lines);
        let mut stdout = std::io::stdout().lock();
        for line in &lines {
            if writeln!(stdout, "{line}").is_err() {
                return;
            }
        }
        if stdout.flush().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_appended_lines_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "one\ntwo\nhal").unwrap();
        let mut file = File::open(&path).unwrap();
        let mut at = 0;
        assert_eq!(appended(&mut file, &mut at), ["one", "two"]);
        assert_eq!(at, 8);
        std::fs::write(&path, "one\ntwo\nhalf\n").unwrap();
        assert_eq!(appended(&mut file, &mut at), ["half"]);
        assert!(appended(&mut file, &mut at).is_empty());
    }

    #[test]
    fn a_full_file_is_rotated_and_the_oldest_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs {
            dir: None,
            max_bytes: 4096,
            keep: 2,
        };
        let files = LogFiles::open(dir.path(), &logs).unwrap();
        for i in 0..400 {
            files.write("svc", &format!("svc.0 | line {i:04} {}", "x".repeat(20)));
        }
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len());
        assert!(size("svc.log").unwrap() <= 4096);
        assert!(size("svc.log.1").unwrap() <= 4096);
        assert!(size("svc.log.2").is_ok());
        assert!(size("svc.log.3").is_err());
        let (tail, _) = last_lines(&dir.path().join("svc.log"), 3).unwrap();
        assert_eq!(tail.len(), 3);
        assert!(
            tail[2].ends_with(&format!("line 0399 {}", "x".repeat(20))),
            "{tail:?}"
        );
    }
}
