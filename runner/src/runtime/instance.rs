//! One instance of a service: started with `--serve`, watched, restarted with backoff.
//!
//! Each instance runs in a process group of its own (so that stopping it stops what it started),
//! is told the runtime's pid (`COMMONDB_PARENT_PID`: it then dies with the runtime, even one
//! killed by `kill -9`), and has its output read line by line, each line prefixed with
//! `service.instance`. Its first line, the ready line, says where it listens.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use commondb::protocol;

use super::config::{Restart, Service};
use super::output::Out;

/// The longest line of an instance's output kept whole (the rest of it is dropped).
const MAX_LINE: usize = 16 * 1024;

/// What the runtime shares with its supervisors.
pub struct Shared {
    /// Set once the fleet is stopping: no more restarts.
    pub stopping: AtomicBool,
    /// The running instances' pids (also their process groups'), by label.
    pids: Mutex<Vec<(String, u32)>>,
    /// How many instances of each service are ready, and how many failed for good.
    ready: Mutex<Vec<(String, u32, u32)>>,
    changed: Condvar,
    /// What `fleet ps` shows of each instance.
    states: Mutex<Vec<State>>,
    /// Where the output goes.
    pub out: Out,
}

/// One instance as `fleet ps` shows it.
struct State {
    service: String,
    index: u32,
    pid: Option<u32>,
    state: &'static str,
    /// When its current process started.
    started: Option<Instant>,
    restarts: u32,
    last_exit: Option<String>,
    addresses: Vec<String>,
}

impl Shared {
    /// A runtime's shared state, printing to `out`.
    pub fn new(out: Out) -> Shared {
        Shared {
            stopping: AtomicBool::new(false),
            pids: Mutex::new(Vec::new()),
            ready: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            states: Mutex::new(Vec::new()),
            out,
        }
    }

    /// Changes what `fleet ps` shows of instance `index` of `service`.
    fn state(&self, service: &str, index: u32, change: impl FnOnce(&mut State)) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let at = match states
            .iter()
            .position(|s| s.service == service && s.index == index)
        {
            Some(at) => at,
            None => {
                states.push(State {
                    service: service.to_string(),
                    index,
                    pid: None,
                    state: "starting",
                    started: None,
                    restarts: 0,
                    last_exit: None,
                    addresses: Vec::new(),
                });
                states.len() - 1
            }
        };
        change(&mut states[at]);
    }

    /// Every instance as `fleet ps` shows it, in service and instance order.
    pub fn statuses(&self) -> Vec<serde_json::Value> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.sort_by(|a, b| (&a.service, a.index).cmp(&(&b.service, b.index)));
        states
            .iter()
            .map(|s| {
                serde_json::json!({
                    "service": s.service,
                    "instance": s.index,
                    "pid": s.pid,
                    "state": s.state,
                    "uptime_ms": s.started.filter(|_| s.pid.is_some()).map(|t| t.elapsed().as_millis() as u64),
                    "restarts": s.restarts,
                    "last_exit": s.last_exit,
                    "addresses": s.addresses,
                })
            })
            .collect()
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn set_pid(&self, label: &str, pid: Option<u32>) {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        pids.retain(|(l, _)| l != label);
        if let Some(pid) = pid {
            pids.push((label.to_string(), pid));
        }
    }

    /// The pids of the running instances.
    pub fn pids(&self) -> Vec<u32> {
        let pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        pids.iter().map(|(_, p)| *p).collect()
    }

    fn count(&self, service: &str, ready: u32, failed: u32) {
        let mut all = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        match all.iter_mut().find(|(s, _, _)| s == service) {
            Some(entry) => {
                entry.1 += ready;
                entry.2 += failed;
            }
            None => all.push((service.to_string(), ready, failed)),
        }
        self.changed.notify_all();
    }

    /// Waits until every one of `scale` instances of `service` was ready once or failed for
    /// good, or the fleet stops; whether all were ready.
    pub fn wait_ready(&self, service: &str, scale: u32) -> bool {
        let mut all = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (ready, failed) = all
                .iter()
                .find(|(s, _, _)| s == service)
                .map_or((0, 0), |(_, r, f)| (*r, *f));
            if ready + failed >= scale || self.stopping() {
                return ready >= scale;
            }
            all = self
                .changed
                .wait_timeout(all, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wakes whatever waits, for a stop.
    pub fn wake(&self) {
        self.changed.notify_all();
    }
}

/// Supervises instance `index` of service `name` until the fleet stops or the instance is done
/// (`restart` says not to start it again, or it failed too many times in a row).
pub fn supervise(shared: &Shared, name: &str, index: u32, exe: &PathBuf, spec: &Service) {
    let label = format!("{name}.{index}");
    let mut failures = 0u32;
    let mut announced = false;
    loop {
        if shared.stopping() {
            return;
        }
        let started = Instant::now();
        shared.state(name, index, |s| {
            s.state = "starting";
            s.started = Some(started);
        });
        let outcome = match start(exe, spec) {
            Ok(child) => run(shared, (&label, name, index), child, &mut announced),
            Err(e) => Err(format!("cannot start {}: {e}", exe.display())),
        };
        if shared.stopping() {
            shared.state(name, index, |s| s.state = "stopped");
            shared.out.note(&label, "stopped");
            return;
        }
        let up = started.elapsed();
        let success = outcome
            .as_ref()
            .is_ok_and(std::process::ExitStatus::success);
        let what = match &outcome {
            Ok(status) => describe(*status),
            Err(e) => e.clone(),
        };
        shared
            .out
            .note(&label, &format!("{what} after {} ms", up.as_millis()));
        shared.state(name, index, |s| {
            s.last_exit = Some(what.clone());
            s.state = "exited";
            s.addresses.clear();
        });
        let done = match spec.restart {
            Restart::Never => true,
            Restart::OnFailure => success,
            Restart::Always => false,
        };
        if done {
            // Never ready, and not coming back: what waits for it must not wait forever.
            if !announced {
                shared.count(name, 0, 1);
            }
            return;
        }
        if up >= Duration::from_millis(spec.healthy_after_ms) {
            failures = 0;
        }
        failures += 1;
        if failures > spec.max_failures {
            shared.out.note(
                &label,
                &format!(
                    "failed: {failures} failures in a row, each within {} ms of its start; not restarted (fix it, then restart the fleet)",
                    spec.healthy_after_ms
                ),
            );
            if !announced {
                shared.count(name, 0, 1);
            }
            shared.state(name, index, |s| s.state = "failed");
            return;
        }
        let delay = backoff(spec, failures);
        shared.state(name, index, |s| {
            s.state = "backoff";
            s.restarts += 1;
        });
        shared.out.note(
            &label,
            &format!(
                "backoff: restarting in {} ms (failure {failures} in a row)",
                delay.as_millis()
            ),
        );
        let until = Instant::now() + delay;
        while Instant::now() < until && !shared.stopping() {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
    }
}

/// The wait before restart number `failures`: doubling from `backoff_initial_ms` up to
/// `backoff_max_ms`, then ±20 % jitter, so that instances that failed together do not all
/// come back at once.
pub fn backoff(spec: &Service, failures: u32) -> Duration {
    let doubled = spec
        .backoff_initial_ms
        .saturating_mul(1u64 << failures.saturating_sub(1).min(30));
    let base = doubled.min(spec.backoff_max_ms);
    let jitter = getrandom::u64().unwrap_or(0) % (base / 5 * 2 + 1);
    Duration::from_millis(base - base / 5 + jitter)
}

fn start(exe: &PathBuf, spec: &Service) -> std::io::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg(format!("--{}", protocol::flags::SERVE));
    for addr in &spec.listen {
        cmd.arg(format!("--{}", protocol::flags::LISTEN)).arg(addr);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // The administrator's URL is for setup, which the runtime ran: a service never gets it.
    cmd.env_remove(commondb::secrets::ADMIN_URL_VAR)
        .envs(&spec.env)
        .env(protocol::PARENT_PID_VAR, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// How an instance ended, in words.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_string(),
    }
}

/// Watches a started instance until it exits: its output prefixed, its ready line announced.
fn run(
    shared: &Shared,
    (label, service, index): (&str, &str, u32),
    mut child: Child,
    announced: &mut bool,
) -> Result<std::process::ExitStatus, String> {
    let pid = child.id();
    shared.set_pid(label, Some(pid));
    shared.state(service, index, |s| s.pid = Some(pid));
    if shared.stopping() {
        // The stop's signals went out before this instance was known: it gets its own.
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        }
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let status = std::thread::scope(|s| {
        if let Some(out) = stdout {
            s.spawn(|| each_line(out, |line| shared.out.line(label, line)));
        }
        if let Some(err) = stderr {
            s.spawn(|| {
                each_line(err, |line| match protocol::parse_ready_line(line) {
                    Some(ready) => {
                        shared.out.note(
                            label,
                            &format!("ready (pid {pid}): {}", ready.addresses.join(" ")),
                        );
                        shared.state(service, index, |s| {
                            s.state = "ready";
                            s.addresses = ready.addresses.clone();
                        });
                        if !*announced {
                            *announced = true;
                            shared.count(service, 1, 0);
                        }
                    }
                    None => shared.out.line(label, line),
                });
            });
        }
        child.wait()
    });
    shared.set_pid(label, None);
    shared.state(service, index, |s| s.pid = None);
    status.map_err(|e| format!("cannot wait for it: {e}"))
}

/// Calls `f` with each line of `input` (without its line ending; a line longer than
/// [`MAX_LINE`] is cut there, the rest of it dropped) until the end of the input.
fn each_line(input: impl Read, mut f: impl FnMut(&str)) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() >= MAX_LINE {
            // Skip the rest of an overlong line, holding none of it.
            let _ = reader.skip_until(b'\n');
        }
        let text = String::from_utf8_lossy(&line);
        f(text.trim_end_matches(['\n', '\r']));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_with_jitter() {
        let spec: Service =
            toml::from_str("exe = \"x\"\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000").unwrap();
        for (failures, base) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let d = backoff(&spec, failures).as_millis() as u64;
            assert!(
                (base * 4 / 5..=base * 6 / 5).contains(&d),
                "{failures}: {d}"
            );
        }
    }

    #[test]
    fn lines_are_cut_at_their_bound() {
        let long = format!("{}\nnext\n", "x".repeat(MAX_LINE + 10));
        let mut lines = Vec::new();
        each_line(long.as_bytes(), |l| lines.push(l.len()));
        assert_eq!(lines, [MAX_LINE, 4]);
    }
}
