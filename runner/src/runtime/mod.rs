//! `fleet`: one command that starts a family of commondb executables as services, keeps them
//! alive and stops them together, configured by one `fleet.toml`.
//!
//! `fleet init` writes a `fleet.toml` for the executables beside `fleet`; `fleet up` sets each
//! service's database up once (`--self-setup`), starts every instance with `--serve` (each
//! service once what it `depends_on` is ready), shows all their output interleaved and
//! prefixed, restarts an instance that exits (exponential backoff with jitter, reset after a
//! healthy run; too many failures in a row and the instance is `failed`), and on Ctrl-C or
//! SIGTERM stops every instance's process group: SIGTERM, the grace period, then SIGKILL.
//! With `[gateway]`, one HTTP entry point routes `POST /<service>` to the service's ready
//! instances ([`gateway`]). `fleet ps|start|stop|restart|scale|down` control the running
//! fleet over its control socket ([`control`]); `fleet logs` reads its log files ([`logs`]).

mod config;
mod control;
mod export;
mod gateway;
mod instance;
mod logs;
mod output;
mod reports;
mod top;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use config::Fleet;
pub use config::find_executable;
use instance::{ServiceRt, Shared};
use output::Out;

#[derive(Parser, Debug)]
#[command(
    name = "fleet",
    version,
    about = "Start a family of commondb executables as services, keep them alive, stop them together"
)]
struct Cli {
    /// The fleet's configuration
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        default_value = "fleet.toml",
        global = true
    )]
    file: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a fleet.toml for the commondb executables next to fleet
    Init,
    /// Set up and start every service; Ctrl-C (or `fleet down`) stops them all
    Up {
        /// Run in the background, its output in a private log file; return once every
        /// instance is ready
        #[arg(short = 'd', long)]
        detach: bool,
        /// Restart a service (one instance at a time) when its executable file changes
        #[arg(long)]
        watch: bool,
    },
    /// Show every instance of the running fleet: pid, state, uptime, restarts, last exit
    Ps {
        /// One JSON document instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Stop the running fleet gracefully (the gateway's requests in flight answered first),
    /// and wait until it has
    Down {
        /// Say it in JSON
        #[arg(long)]
        json: bool,
    },
    /// Start a service's stopped (or failed) instances, and wait until they are ready
    Start(One),
    /// Drain and stop a service's instances; they stay stopped until `fleet start`
    Stop(One),
    /// Restart a service one instance at a time (each ready before the next stops)
    Restart(One),
    /// Change how many instances a service runs, live: SERVICE=N
    Scale {
        /// SERVICE=N, N from 1 to 64
        #[arg(value_name = "SERVICE=N")]
        what: String,
        /// Say it in JSON
        #[arg(long)]
        json: bool,
    },
    /// Show each service's requests per second, and the median and p99 of its requests' time
    /// and of each phase (from the instances' metrics), every interval
    Top {
        /// The interval, in milliseconds
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
        interval_ms: u64,
        /// How many reports (0: until interrupted)
        #[arg(short = 'n', long, default_value_t = 0)]
        count: u32,
        /// One JSON array per report
        #[arg(long)]
        json: bool,
    },
    /// Write the fleet as systemd units (socket-activated, templated instances `name@N`)
    Export {
        #[command(subcommand)]
        to: Export,
    },
    /// Show the fleet's log lines (each service's, or every service's merged in time order)
    Logs {
        /// Only this service's (`fleet` for the runtime's own lines)
        service: Option<String>,
        /// How many of the last lines
        #[arg(short = 'n', long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
        lines: u32,
        /// Then show new lines as they come, until interrupted
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

/// What `fleet export` writes.
#[derive(Subcommand, Debug)]
enum Export {
    /// Unit files into DIR: per service a setup unit, a templated service and socket; a target
    Systemd {
        /// Where to write them (created if need be)
        dir: PathBuf,
        /// The target's name: NAME.target starts the whole fleet
        #[arg(long, default_value = "fleet")]
        name: String,
        /// Replace units already in DIR
        #[arg(long)]
        force: bool,
    },
}

/// A command on one service.
#[derive(clap::Args, Debug)]
struct One {
    /// The service, as named in fleet.toml
    service: String,
    /// Say it in JSON
    #[arg(long)]
    json: bool,
}

/// Runs `fleet` on the process's command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Init => init(&cli.file),
        Cmd::Up {
            detach: false,
            watch,
        } => up(&cli.file, watch),
        Cmd::Up {
            detach: true,
            watch,
        } => detach(&cli.file, watch),
        Cmd::Ps { json } => ps(&cli.file, json),
        Cmd::Down { json } => down(&cli.file, json),
        Cmd::Start(one) => command(&cli.file, &format!("start {}", one.service), one.json),
        Cmd::Stop(one) => command(&cli.file, &format!("stop {}", one.service), one.json),
        Cmd::Restart(one) => command(&cli.file, &format!("restart {}", one.service), one.json),
        Cmd::Scale { what, json } => match what.split_once('=') {
            Some((service, n)) if !service.is_empty() && !n.is_empty() => {
                command(&cli.file, &format!("scale {service} {n}"), json)
            }
            _ => Err((
                64,
                format!("scale {what:?}: write SERVICE=N, for instance login=4"),
            )),
        },
        Cmd::Logs {
            service,
            lines,
            follow,
        } => show_logs(&cli.file, service.as_deref(), lines as usize, follow),
        Cmd::Top {
            interval_ms,
            count,
            json,
        } => top::top(&cli.file, Duration::from_millis(interval_ms), count, json),
        Cmd::Export {
            to: Export::Systemd { dir, name, force },
        } => export_systemd(&cli.file, &dir, &name, force),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("fleet: error: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

/// Writes `file` for the commondb executables found beside `fleet` (those that answer
/// `--self-samples 0`), each one instance, restarted always. Never overwrites.
fn init(file: &Path) -> Result<(), Failure> {
    if file.exists() {
        return Err((
            73,
            format!("{} exists; remove it first, or edit it", file.display()),
        ));
    }
    let dir = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(Path::to_path_buf))
        .ok_or((69, "cannot tell where fleet is".to_string()))?;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| (69, format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_commondb_executable(&dir.join(name)))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err((
            66,
            format!("no commondb executable next to fleet in {}", dir.display()),
        ));
    }
    let mut text = String::from(
        "# Written by `fleet init`: one service per executable. Each instance runs `EXE --serve`\n\
         # on free loopback ports; see `fleet up`. The gateway routes POST /<service> to them.\n\
         \n[gateway]\nlisten = \"http://127.0.0.1:8080\"\n",
    );
    for name in &names {
        text.push_str(&format!(
            "\n[services.{name}]\nexe = \"{name}\"\nscale = 1\nrestart = \"always\"\n"
        ));
    }
    std::fs::write(file, text)
        .map_err(|e| (73, format!("cannot write {}: {e}", file.display())))?;
    println!(
        "wrote {} with {} service(s): {}",
        file.display(),
        names.len(),
        names.join(", ")
    );
    Ok(())
}

fn is_commondb_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
    executable
        && Command::new(path)
            .args([&format!("--{}", commondb::protocol::flags::SAMPLES), "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// `fleet up` in the foreground.
fn up(file: &Path, watch: bool) -> Result<(), Failure> {
    let fleet = Fleet::load(file).map_err(|e| (78, e))?;
    let socket = control::path(file).map_err(|e| (78, e))?;
    // Held until the runtime exits (the kernel releases it even after a kill -9).
    let _one_runtime = lock(&socket, file)?;
    let listener = control::bind(&socket).map_err(|e| (73, e))?;
    let order: Vec<String> = fleet
        .order()
        .map_err(|e| (78, e))?
        .into_iter()
        .map(String::from)
        .collect();
    let id = control::id(file).map_err(|e| (78, e))?;
    let left = left_behind(&id);
    if !left.is_empty() {
        let named: Vec<String> = left.iter().map(|(pid, n)| format!("{pid} ({n})")).collect();
        let pids: Vec<String> = left.iter().map(|(pid, _)| pid.to_string()).collect();
        return Err((
            75,
            format!(
                "processes an earlier runtime of this fleet started still run: {}; nothing was started twice. Stop them (kill {}) and run fleet up again",
                named.join(", "),
                pids.join(" ")
            ),
        ));
    }
    let started = Instant::now();
    let mut exes = Vec::new();
    for name in &order {
        let spec = &fleet.services[name];
        let exe = config::find_executable(&spec.exe).ok_or_else(|| {
            (
                66,
                format!(
                    "services.{name}.exe {:?} was not found (as a path, next to fleet, or on PATH)",
                    spec.exe
                ),
            )
        })?;
        exes.push(exe);
    }
    // Every service's setup at once (setups of one database wait for each other on its setup
    // lock), and its verb asked meanwhile; the first failure, in start order, is told.
    let prepared: Vec<Result<String, Failure>> = std::thread::scope(|s| {
        let jobs: Vec<_> = order
            .iter()
            .zip(&exes)
            .map(|(name, exe)| {
                let spec = &fleet.services[name];
                s.spawn(move || {
                    set_up(name, exe, spec)?;
                    verb_of(name, exe, spec)
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join()
                    .unwrap_or_else(|_| Err((70, "a setup thread panicked".into())))
            })
            .collect()
    });
    let mut services = BTreeMap::new();
    for ((name, exe), verb) in order.iter().zip(exes).zip(prepared) {
        services.insert(
            name.clone(),
            ServiceRt {
                exe,
                spec: fleet.services[name].clone(),
                verb: verb?,
                control: std::sync::Mutex::new(()),
                abandoned: std::sync::atomic::AtomicBool::new(false),
            },
        );
    }
    let log_dir = logs::dir(file, &fleet.logs, &id).map_err(|e| (78, e))?;
    let files = logs::LogFiles::open(&log_dir, &fleet.logs).map_err(|e| (73, e))?;
    let grace = Duration::from_millis(fleet.grace_ms);
    let shared = Arc::new(Shared::new(Out::stdout(Some(files)), services, grace, id));
    // Bound before any instance starts: a port already taken is told at once.
    let gateway = match &fleet.gateway {
        Some(g) => Some(gateway::start(Arc::clone(&shared), g).map_err(|e| (73, e))?),
        None => None,
    };
    if let Some(g) = &gateway {
        shared.out.note(
            "fleet",
            &format!("gateway on {}{}: POST /<service>", g.scheme, g.address),
        );
    }
    shared.out.note(
        "fleet",
        &format!("logs in {} (fleet logs)", log_dir.display()),
    );
    let fifo = reports::fifo_path(&socket);
    shared.reports.listen(&fifo).map_err(|e| (73, e))?;
    shared.out.note(
        "fleet",
        &format!(
            "one-shot runs report to fleet top with {}={}",
            commondb::protocol::PERFORMANCE_REPORT_VAR,
            fifo.display()
        ),
    );
    for name in &order {
        let shared = Arc::clone(&shared);
        let name = name.clone();
        // Started once what it depends on is ready.
        std::thread::spawn(move || {
            let svc = &shared.services[&name];
            for dep in &svc.spec.depends_on {
                if !shared.wait_ready(dep) {
                    svc.abandoned.store(true, Ordering::Release);
                    shared.wake();
                    if !shared.stopping.load(Ordering::Acquire) {
                        shared
                            .out
                            .note(&name, &format!("not started: {dep} did not become ready"));
                    }
                    return;
                }
            }
            for index in 0..svc.spec.scale {
                shared.add(&name, index);
            }
        });
    }
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let all = order.iter().all(|name| shared.wait_ready(name));
            if all {
                shared.out.note(
                    "fleet",
                    &format!(
                        "every instance is ready, {} ms after `fleet up`",
                        started.elapsed().as_millis()
                    ),
                );
            }
        });
    }
    if watch {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || watch::watch(&shared));
    }
    let (stop_tx, stop_asked) = std::sync::mpsc::channel();
    {
        let stop_tx = stop_tx.clone();
        // Not joined: it waits for a signal that may never come.
        std::thread::spawn(move || {
            let _ = stop_tx.send(wait_for_signal());
        });
    }
    // `fleet down` over the control socket.
    let (down_tx, down_asked) = std::sync::mpsc::channel::<()>();
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || control::serve(&listener, &shared, &down_tx));
    }
    let stop = loop {
        if let Ok(stop) = stop_asked.recv_timeout(Duration::from_millis(50)) {
            break stop;
        }
        if down_asked.try_recv().is_ok() {
            break Ok(());
        }
    };
    drop(stop_tx);
    shared.out.note("fleet", "stopping every instance");
    shared.stopping.store(true, Ordering::Release);
    shared.wake();
    // The gateway first: no new request, those in flight answered by instances still up.
    if let Some(g) = gateway {
        g.drain();
    }
    stop_all(&shared, grace);
    shared.wait_supervisors(Duration::from_secs(5));
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&fifo);
    stop.map_err(|e| (71, e))
}

/// This user's processes that carry fleet `id` in their environment: instances an earlier
/// runtime of this fleet started and that outlived it (the caller holds the fleet's lock, so no
/// other runtime of it runs). Their pids and names.
fn left_behind(id: &str) -> Vec<(u32, String)> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let mark = format!("{}={id}", commondb::protocol::FLEET_ID_VAR);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if entry.metadata().map_or(true, |m| m.uid() != me) || pid == std::process::id() {
            continue;
        }
        let mut environ = Vec::new();
        let read = std::fs::File::open(entry.path().join("environ"))
            .and_then(|f| f.take(1 << 20).read_to_end(&mut environ));
        if read.is_ok() && environ.split(|b| *b == 0).any(|v| v == mark.as_bytes()) {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, name.trim().to_string()));
        }
    }
    found
}

/// The verb of service `name`'s task (`--create` → `create`), from its first sample.
fn verb_of(name: &str, exe: &Path, spec: &config::Service) -> Result<String, Failure> {
    let out = Command::new(exe)
        .args([&format!("--{}", commondb::protocol::flags::SAMPLES), "1"])
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| (69, format!("cannot run {}: {e}", exe.display())))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let sample: serde_json::Value = serde_json::from_str(line.lines().next().unwrap_or(""))
        .map_err(|_| {
            (
                69,
                format!(
                    "services.{name}: {} --self-samples 1 printed no sample; is it a commondb executable?",
                    exe.display()
                ),
            )
        })?;
    sample["argv"][0]
        .as_str()
        .and_then(|a| a.strip_prefix("--"))
        .map(String::from)
        .ok_or_else(|| {
            (
                69,
                format!("services.{name}: its sample names no task flag"),
            )
        })
}

/// `fleet up -d`: the same runtime in the background (its own process group, its output
/// appended to `<socket>.log`, mode 0600, beside the control socket); returns once every
/// instance is ready, or with the runtime's own error if it stopped first.
fn detach(file: &Path, watch: bool) -> Result<(), Failure> {
    // A mistake in fleet.toml is told here, not only in a log.
    Fleet::load(file).map_err(|e| (78, e))?;
    let socket = control::path(file).map_err(|e| (78, e))?;
    let log_path = socket.with_extension("log");
    if let Some(dir) = socket.parent() {
        commondb::secrets::create_private_dir(dir).map_err(|e| (73, e.message().to_string()))?;
    }
    let log = logs::open_append(&log_path)
        .map_err(|e| (73, format!("cannot open {}: {e}", log_path.display())))?;
    let start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let me = std::env::current_exe().map_err(|e| (69, format!("cannot find fleet: {e}")))?;
    let err = log
        .try_clone()
        .map_err(|e| (73, format!("cannot open {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(me);
    cmd.arg("--file").arg(file).arg("up");
    if watch {
        cmd.arg("--watch");
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| (69, format!("cannot start fleet up: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    // What this runtime wrote, read as it grows (never the log's earlier runs), its last
    // 64 KiB kept for the tail an error shows.
    let mut reader = std::fs::File::open(&log_path)
        .map_err(|e| (73, format!("cannot read {}: {e}", log_path.display())))?;
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(start))
        .map_err(|e| (73, format!("cannot read {}: {e}", log_path.display())))?;
    let mut text = String::new();
    loop {
        let mut more = Vec::new();
        let _ =
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut reader, 1 << 20), &mut more);
        text.push_str(&String::from_utf8_lossy(&more));
        if text.contains("fleet: every instance is ready") {
            break;
        }
        if text.len() > 128 << 10 {
            let cut = text.len() - (64 << 10);
            let cut = (cut..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(cut);
            text.drain(..cut);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let code = status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1);
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err((
                code,
                format!(
                    "fleet up stopped before every instance was ready:\n{}",
                    tail.join("\n")
                ),
            ));
        }
        if Instant::now() > deadline {
            return Err((
                75,
                format!(
                    "not every instance is ready after 120 s; see {} (fleet ps, fleet down)",
                    log_path.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ps(file, false)?;
    println!(
        "fleet: running in the background (pid {}), its output in {}; `fleet down` stops it",
        child.id(),
        log_path.display()
    );
    Ok(())
}

/// `fleet ps`: the running fleet's instances.
fn ps(file: &Path, json: bool) -> Result<(), Failure> {
    let answer = control::ask(file, "ps", Some(Duration::from_secs(10)))?;
    let instances = answer["instances"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{}", serde_json::Value::Array(instances));
        return Ok(());
    }
    print_instances(&instances);
    Ok(())
}

fn print_instances(instances: &[serde_json::Value]) {
    println!(
        "{:<16} {:>4} {:>8}  {:<9} {:>9} {:>8} {:>8} {:>8}  {:<24} ADDRESSES",
        "SERVICE", "#", "PID", "STATE", "UPTIME", "RESTARTS", "RSS", "REQUESTS", "LAST EXIT"
    );
    for i in instances {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let uptime = i["uptime_ms"]
            .as_u64()
            .map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let rss = i["rss_kib"]
            .as_u64()
            .map_or("-".to_string(), |k| format!("{:.1}M", k as f64 / 1024.0));
        let addresses: Vec<String> = i["addresses"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        println!(
            "{:<16} {:>4} {:>8}  {:<9} {:>9} {:>8} {:>8} {:>8}  {:<24} {}",
            text(&i["service"]),
            text(&i["instance"]),
            text(&i["pid"]),
            text(&i["state"]),
            uptime,
            text(&i["restarts"]),
            rss,
            text(&i["requests"]),
            text(&i["last_exit"]),
            addresses.join(" ")
        );
    }
}

/// `fleet start|stop|restart|scale`: asks the running fleet, and says what it did.
fn command(file: &Path, command: &str, json: bool) -> Result<(), Failure> {
    let answer = control::ask(file, command, None)?;
    if json {
        println!("{answer}");
    }
    let instances = answer["instances"].as_array().cloned().unwrap_or_default();
    if answer["ok"] != true {
        if !json && !instances.is_empty() {
            print_instances(&instances);
        }
        let why = answer["error"].as_str().unwrap_or("the fleet refused");
        return Err((70, why.to_string()));
    }
    if !json {
        println!("{}", answer["done"].as_str().unwrap_or("done"));
        print_instances(&instances);
    }
    Ok(())
}

/// `fleet down`: the running fleet stops gracefully; returns once it has (its socket is gone).
fn down(file: &Path, json: bool) -> Result<(), Failure> {
    control::ask(file, "down", Some(Duration::from_secs(10)))?;
    let socket = control::path(file).map_err(|e| (78, e))?;
    let started = Instant::now();
    while socket.exists() {
        if started.elapsed() > Duration::from_secs(120) {
            return Err((75, "the fleet is still stopping after 120 s".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "ok": true, "stopped_in_ms": started.elapsed().as_millis() as u64 })
        );
    } else {
        println!("the fleet is down");
    }
    Ok(())
}

/// `fleet export systemd`: the units, written, and how to install them.
fn export_systemd(file: &Path, dir: &Path, name: &str, force: bool) -> Result<(), Failure> {
    let fleet = Fleet::load(file).map_err(|e| (78, e))?;
    let units = export::units(&fleet, file, name).map_err(|e| (78, e))?;
    let written = export::write(dir, &units, force).map_err(|e| (73, e))?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    println!(
        "install: cp {}/* /etc/systemd/system/ && systemctl daemon-reload && systemctl enable --now {name}.target",
        dir.display()
    );
    Ok(())
}

/// `fleet logs`: from the fleet's log files (it need not be running).
fn show_logs(file: &Path, service: Option<&str>, n: usize, follow: bool) -> Result<(), Failure> {
    let fleet = Fleet::load(file).map_err(|e| (78, e))?;
    if let Some(s) = service
        && s != "fleet"
        && !fleet.services.contains_key(s)
    {
        let names: Vec<&str> = fleet.services.keys().map(String::as_str).collect();
        return Err((
            64,
            format!(
                "there is no service {s:?}; the services are: {}",
                names.join(", ")
            ),
        ));
    }
    let id = control::id(file).map_err(|e| (78, e))?;
    let dir = logs::dir(file, &fleet.logs, &id).map_err(|e| (78, e))?;
    logs::show(&dir, service, n, follow).map_err(|e| (66, e))
}

/// An exclusive `flock` on the fleet's lock file, beside its control socket in the private
/// directory (named after the fleet.toml's path, so an editor that saves by replacing the file
/// does not make a second lock): a second `fleet up` of the same fleet is refused instead of
/// starting every service twice.
fn lock(socket: &Path, file: &Path) -> Result<std::fs::File, Failure> {
    use rustix::fs::{FlockOperation, flock};
    let path = socket.with_extension("lock");
    if let Some(dir) = path.parent() {
        commondb::secrets::create_private_dir(dir).map_err(|e| (73, e.message().to_string()))?;
    }
    // Opened to append: the lock file's contents are never written, only locked.
    let held = logs::open_append(&path)
        .map_err(|e| (73, format!("cannot open {}: {e}", path.display())))?;
    flock(&held, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        (
            75,
            format!(
                "another fleet up is running {}: its services are up; stop it first (fleet down)",
                file.display()
            ),
        )
    })?;
    Ok(held)
}

/// Runs `--self-setup` of service `name` once, with its environment.
fn set_up(name: &str, exe: &Path, spec: &config::Service) -> Result<(), Failure> {
    let out = Command::new(exe)
        .args(["--self-setup", "-q"])
        .envs(&spec.env)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            (
                69,
                format!("cannot run {} --self-setup: {e}", exe.display()),
            )
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let code = out
            .status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1);
        return Err((code, format!("{name}: --self-setup failed:\n{why}")));
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
fn wait_for_signal() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start the signal handler: {e}"))?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        Ok(())
    })
}

/// SIGTERM to every instance's process group; after `grace`, SIGKILL to what is left.
fn stop_all(shared: &Shared, grace: Duration) {
    use rustix::process::Signal;
    for pid in shared.pids() {
        instance::signal_group(pid, Signal::TERM);
    }
    if !shared.wait_until(grace, || shared.pids().is_empty()) {
        shared
            .out
            .note("fleet", "the grace period is over: SIGKILL to what is left");
        for pid in shared.pids() {
            instance::signal_group(pid, Signal::KILL);
        }
        shared.wait_until(Duration::from_secs(5), || shared.pids().is_empty());
    }
}
