//! The control socket of a running fleet: `fleet ps` and `fleet down` ask `fleet up` over it.
//!
//! A unix socket in a private directory (`$XDG_RUNTIME_DIR/commondb/fleet/`, else the data
//! directory's `commondb/fleet/`, mode 0700), itself mode 0600, named after the fleet.toml it
//! runs: only its user reaches it. One request per connection: a line (`ps` or `down`), and one
//! JSON document in answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::instance::Shared;

/// The socket of the fleet that `file` describes.
pub fn path(file: &Path) -> Result<PathBuf, String> {
    let file =
        std::fs::canonicalize(file).map_err(|e| format!("cannot find {}: {e}", file.display()))?;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or("neither XDG_RUNTIME_DIR nor HOME is set: no place for the control socket")?;
    let hash = file
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    Ok(base
        .join("commondb/fleet")
        .join(format!("{hash:016x}.sock")))
}

/// Binds the socket at `path`, in a private directory, mode 0600. A socket left there by a
/// runtime killed outright is replaced: the caller holds the fleet's lock, so none other runs.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    let dir = path.parent().ok_or("the socket has no directory")?;
    commondb::secrets::create_private_dir(dir).map_err(|e| e.message().to_string())?;
    let _ = std::fs::remove_file(path);
    // Created with no access for others from the start (before any instance is spawned, so
    // the umask is this thread's alone to change).
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    Ok(listener)
}

/// Answers requests until the fleet stops; `down` asks it to.
pub fn serve(listener: &UnixListener, shared: &Shared, down: &Sender<()>) {
    while !shared.stopping.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, shared, down),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(stream: UnixStream, shared: &Shared, down: &Sender<()>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let read = BufReader::new(&stream).take(64).read_line(&mut line);
    let reply = match (read, line.trim()) {
        (Ok(_), "ps") => serde_json::json!({ "ok": true, "instances": shared.statuses() }),
        (Ok(_), "down") => {
            let _ = down.send(());
            serde_json::json!({ "ok": true })
        }
        _ => serde_json::json!({ "ok": false, "error": "ask ps or down" }),
    };
    let mut stream = stream;
    let _ = writeln!(stream, "{reply}");
}

/// Asks the running fleet of `file` `command`; its answer.
pub fn ask(file: &Path, command: &str) -> Result<serde_json::Value, (u8, String)> {
    let path = path(file).map_err(|e| (78, e))?;
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        (
            69,
            format!(
                "no fleet is running {} ({}: {e}); start it with `fleet up`",
                file.display(),
                path.display()
            ),
        )
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| writeln!(stream, "{command}"))
        .map_err(|e| (69, format!("cannot ask the fleet: {e}")))?;
    let mut text = String::new();
    BufReader::new(stream)
        .take(4 << 20)
        .read_line(&mut text)
        .map_err(|e| (69, format!("the fleet did not answer: {e}")))?;
    serde_json::from_str(&text).map_err(|e| (69, format!("the fleet's answer is not JSON: {e}")))
}
