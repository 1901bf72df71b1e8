//! The control socket of a running fleet: `fleet ps` and `fleet down` ask `fleet up` over it.
//!
//! A unix socket in a private directory (`$XDG_RUNTIME_DIR/commondb/fleet/`, else the data
//! directory's `commondb/fleet/`, mode 0700), itself mode 0600, named after the fleet.toml it
//! runs: only its user reaches it. One request per connection: a line (`ps`, `runs MS`, `down`,
//! `start SERVICE`, `stop SERVICE`, `restart SERVICE`, `scale SERVICE N`), and one JSON
//! document in answer (`"ok"`, and what was done or the error).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::config::MAX_SCALE;
use super::instance::{Instance, Shared, Want};

/// The name of the fleet that `file` describes, for its socket, lock and logs: a hash of the
/// file's absolute path (an editor that saves by replacing the file keeps it).
pub fn id(file: &Path) -> Result<String, String> {
    let file =
        std::fs::canonicalize(file).map_err(|e| format!("cannot find {}: {e}", file.display()))?;
    let hash = file
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    Ok(format!("{hash:016x}"))
}

/// The socket of the fleet that `file` describes.
pub fn path(file: &Path) -> Result<PathBuf, String> {
    let id = id(file)?;
    let dirs = directories::ProjectDirs::from("", "", "commondb")
        .ok_or("neither XDG_RUNTIME_DIR nor HOME is set: no place for the control socket")?;
    let base = dirs.runtime_dir().unwrap_or(dirs.data_dir());
    Ok(base.join("fleet").join(format!("{id}.sock")))
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

/// Answers requests until the fleet stops, each connection on a thread of its own (a restart
/// takes a while; `fleet ps` meanwhile is answered); `down` asks it to stop.
pub fn serve(listener: &UnixListener, shared: &Arc<Shared>, down: &Sender<()>) {
    let busy = Arc::new(AtomicUsize::new(0));
    while !shared.stopping.load(Ordering::Acquire) {
        match listener.accept() {
            // Bounded: a client that opens connections without end gets them closed.
            Ok((stream, _)) if busy.load(Ordering::Acquire) < MAX_CLIENTS => {
                busy.fetch_add(1, Ordering::AcqRel);
                let (shared, down, busy) = (Arc::clone(shared), down.clone(), Arc::clone(&busy));
                std::thread::spawn(move || {
                    answer(stream, &shared, &down);
                    busy.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The most control connections answered at once.
const MAX_CLIENTS: usize = 16;

fn answer(stream: UnixStream, shared: &Arc<Shared>, down: &Sender<()>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let read = BufReader::new(&stream).take(256).read_line(&mut line);
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match (read, words.as_slice()) {
        (Err(e), _) => {
            serde_json::json!({ "ok": false, "error": format!("reading the request failed: {e}") })
        }
        (Ok(_), ["ps"]) => serde_json::json!({ "ok": true, "instances": ps(shared) }),
        (Ok(_), ["runs", ms]) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => serde_json::json!({
                "ok": true,
                "runs": shared.reports.summary(Duration::from_millis(ms)),
            }),
            _ => serde_json::json!({ "ok": false, "error": "runs takes a number of milliseconds" }),
        },
        (Ok(_), ["down"]) => {
            let _ = down.send(());
            serde_json::json!({ "ok": true })
        }
        (Ok(_), [command @ ("start" | "stop" | "restart"), service]) => {
            act(shared, service, |svc| match *command {
                "start" => start(shared, svc),
                "stop" => stop(shared, svc),
                _ => restart(shared, svc, true),
            })
        }
        (Ok(_), ["scale", service, n]) => match n.parse::<u32>() {
            Ok(n) if (1..=MAX_SCALE).contains(&n) => {
                act(shared, service, |svc| scale(shared, svc, n))
            }
            _ => {
                serde_json::json!({ "ok": false, "error": format!("scale {n:?} is not a number from 1 to {MAX_SCALE}") })
            }
        },
        _ => {
            serde_json::json!({ "ok": false, "error": "ask ps, runs MS, down, start SERVICE, stop SERVICE, restart SERVICE or scale SERVICE N" })
        }
    };
    let mut stream = stream;
    let _ = writeln!(stream, "{reply}");
}

/// `fleet ps`: each instance, with its memory and the requests it has answered.
fn ps(shared: &Shared) -> Vec<serde_json::Value> {
    shared
        .instances()
        .iter()
        .map(|i| {
            let mut status = i.status();
            status["rss_kib"] = i.pid().and_then(crate::fleet::rss_kib).into();
            status["requests"] = i.route().and_then(|a| requests_served(&a)).into();
            status
        })
        .collect()
}

/// The requests an instance has answered, from its `/metrics`.
fn requests_served(address: &str) -> Option<u64> {
    Some(
        fetch_metrics(address)?
            .lines()
            .filter(|l| l.starts_with("commondb_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// The `/metrics` text of the instance at `address` (one second at most, 1 MiB at most).
pub fn fetch_metrics(address: &str) -> Option<String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let addr = address.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        stream,
        "GET {} HTTP/1.0\r\nHost: {address}\r\n\r\n",
        commondb::protocol::METRICS_PATH
    )
    .ok()?;
    let mut text = String::new();
    stream.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// Runs `f` on service `name` under its control lock (one command at a time per service);
/// its answer, or why the service is unknown.
fn act(
    shared: &Shared,
    name: &str,
    f: impl FnOnce(&str) -> Result<String, String>,
) -> serde_json::Value {
    let Some(svc) = shared.services.get(name) else {
        let names: Vec<&str> = shared.services.keys().map(String::as_str).collect();
        return serde_json::json!({ "ok": false, "error": format!("there is no service {name:?}; the services are: {}", names.join(", ")) });
    };
    let _one_at_a_time = svc.control.lock().unwrap_or_else(|e| e.into_inner());
    match f(name) {
        Ok(done) => {
            serde_json::json!({ "ok": true, "done": done, "instances": ps_of(shared, name) })
        }
        Err(e) => serde_json::json!({ "ok": false, "error": e, "instances": ps_of(shared, name) }),
    }
}

fn ps_of(shared: &Shared, name: &str) -> Vec<serde_json::Value> {
    shared.of(name).iter().map(|i| i.status()).collect()
}

/// How long a started instance has to be ready before a command gives up waiting.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Waits until `inst` is ready with a process other than `old`.
fn ready_again(shared: &Shared, inst: &Instance, old: Option<u32>) -> Result<(), String> {
    let ready = shared.wait_until(READY_WITHIN, || {
        inst.is_ready() && inst.pid().is_some() && inst.pid() != old
    });
    if ready {
        Ok(())
    } else {
        Err(format!(
            "{} is not ready after {} s; see `fleet logs {}`",
            inst.label(),
            READY_WITHIN.as_secs(),
            inst.service
        ))
    }
}

/// `fleet start`: every stopped (or failed, or finished) instance started again.
fn start(shared: &Shared, name: &str) -> Result<String, String> {
    let stopped: Vec<_> = shared
        .of(name)
        .into_iter()
        .filter(|i| i.want() == Want::Stop)
        .collect();
    for inst in &stopped {
        shared.set_want(inst, Want::Run);
    }
    for inst in &stopped {
        ready_again(shared, inst, None)?;
    }
    Ok(format!("started {} instance(s) of {name}", stopped.len()))
}

/// `fleet stop`: every instance drained and stopped, together; they stay stopped.
fn stop(shared: &Shared, name: &str) -> Result<String, String> {
    let all = shared.of(name);
    std::thread::scope(|s| {
        for inst in &all {
            s.spawn(|| shared.stop(inst, Want::Stop));
        }
    });
    Ok(format!("stopped {} instance(s) of {name}", all.len()))
}

/// `fleet restart`: one instance at a time, each drained, stopped, started and ready before
/// the next; the others serve meanwhile. Instances wanted stopped are started too, unless
/// `stopped_too` is false (a restart for a new executable leaves them stopped).
pub fn restart(shared: &Shared, name: &str, stopped_too: bool) -> Result<String, String> {
    let all: Vec<_> = shared
        .of(name)
        .into_iter()
        .filter(|i| stopped_too || i.want() != Want::Stop)
        .collect();
    for inst in &all {
        let old = inst.pid();
        // One in backoff starts at once; one running is drained and stopped first.
        if !shared.start_now(inst) {
            shared.stop(inst, Want::Restart);
        }
        ready_again(shared, inst, old)?;
    }
    Ok(format!("restarted {} instance(s) of {name}", all.len()))
}

/// `fleet scale`: instances added (and ready) or the last ones drained and removed.
fn scale(shared: &Arc<Shared>, name: &str, n: u32) -> Result<String, String> {
    let all = shared.of(name);
    let now = all.len() as u32;
    if n > now {
        let next = all.iter().map(|i| i.index + 1).max().unwrap_or(0);
        let added: Vec<_> = (0..n - now).map(|k| shared.add(name, next + k)).collect();
        for inst in &added {
            ready_again(shared, inst, None)?;
        }
    } else if n < now {
        let retired = &all[n as usize..];
        std::thread::scope(|s| {
            for inst in retired {
                s.spawn(|| shared.stop(inst, Want::Retire));
            }
        });
        if !shared.wait_until(READY_WITHIN, || shared.of(name).len() as u32 == n) {
            return Err(format!(
                "{name} still has {} instance(s) after {} s; see `fleet logs {name}`",
                shared.of(name).len(),
                READY_WITHIN.as_secs()
            ));
        }
    }
    Ok(format!("{name} scaled from {now} to {n} instance(s)"))
}

/// Asks the running fleet of `file` `command`; its answer (waiting up to `wait`, or without end
/// for `None`: a restart takes as long as its instances take to be ready).
pub fn ask(
    file: &Path,
    command: &str,
    wait: Option<Duration>,
) -> Result<serde_json::Value, (u8, String)> {
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
        .set_read_timeout(wait)
        .and_then(|()| writeln!(stream, "{command}"))
        .map_err(|e| (69, format!("cannot ask the fleet: {e}")))?;
    let mut text = String::new();
    BufReader::new(stream)
        .take(4 << 20)
        .read_line(&mut text)
        .map_err(|e| (69, format!("the fleet did not answer: {e}")))?;
    serde_json::from_str(&text).map_err(|e| (69, format!("the fleet's answer is not JSON: {e}")))
}
