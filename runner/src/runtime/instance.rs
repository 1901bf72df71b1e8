//! One instance of a service: started with `--serve`, watched, restarted with backoff.
//!
//! Each instance runs in a process group of its own (so that stopping it stops what it started),
//! is told the runtime's pid (`COMMONDB_PARENT_PID`: it then dies with the runtime, even one
//! killed by `kill -9`), and has its output read line by line, each line prefixed with
//! `service.instance`. Its first line, the ready line, says where it listens.

use std::collections::BTreeMap;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use commondb::protocol;

use super::config::{Restart, Service};
use super::output::{Out, each_line};

/// The longest line of an instance's output kept whole (the rest of it is dropped).
const MAX_LINE: usize = 16 * 1024;

/// What the runtime shares with its supervisors, its control socket and its gateway.
pub struct Shared {
    /// Set once the fleet is stopping: no more restarts.
    pub stopping: AtomicBool,
    /// Where the output goes.
    pub out: Out,
    /// The services, by name.
    pub services: BTreeMap<String, ServiceRt>,
    /// How long a stopping instance has after SIGTERM before SIGKILL.
    pub grace: Duration,
    /// Every instance, in service and instance order.
    instances: Mutex<Vec<Arc<Instance>>>,
    /// Bumped at every change of an instance's state or wish; waiters wait on `changed`.
    generation: Mutex<u64>,
    changed: Condvar,
    /// Told whenever an instance becomes ready (the gateway's requests waiting for one).
    pub became_ready: tokio::sync::Notify,
    /// How many supervisors run.
    supervisors: AtomicUsize,
    /// The fleet's id, given to every instance ([`protocol::FLEET_ID_VAR`]).
    pub id: String,
    /// The performance reports of one-shot runs, for `fleet top`.
    pub reports: Arc<super::reports::Reports>,
}

/// A service as the runtime runs it.
pub struct ServiceRt {
    /// Its executable.
    pub exe: PathBuf,
    /// Its settings.
    pub spec: Service,
    /// Its task's verb: the gateway's `POST /<service>` is the instance's `POST /<verb>`.
    pub verb: String,
    /// Held by whichever control command (start, stop, restart, scale) changes it.
    pub control: Mutex<()>,
    /// Set when it was not started: what it depends on did not become ready.
    pub abandoned: AtomicBool,
}

/// What the runtime wants of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Running (restarted by its policy).
    Run,
    /// Stopped, until `fleet start`.
    Stop,
    /// Stopped and removed (`fleet scale` down).
    Retire,
    /// Stopped, then started again at once (no backoff).
    Restart,
}

/// One instance of a service.
pub struct Instance {
    /// Its service.
    pub service: String,
    /// Its number in the service, from 0.
    pub index: u32,
    /// `service.index`.
    label: String,
    /// The gateway's requests in flight to it.
    pub outstanding: AtomicUsize,
    /// Until when the gateway leaves it alone: it refused or dropped a connection (it is
    /// likely dying; its supervisor has not seen it yet).
    shunned_until: Mutex<Option<Instant>>,
    state: Mutex<State>,
}

/// What changes of an instance.
struct State {
    want: Want,
    pid: Option<u32>,
    state: &'static str,
    /// When its current process started.
    started: Option<Instant>,
    restarts: u32,
    last_exit: Option<String>,
    addresses: Vec<String>,
    /// The HTTP one among them, the gateway's route (read per request: kept, not searched).
    http: Option<Arc<str>>,
    /// Ready at least once, or given up on (failed, or done for good): what `depends_on`
    /// waits for.
    settled: bool,
    ready_once: bool,
}

impl State {
    /// Its process is gone: so are its addresses, and the route.
    fn forget_addresses(&mut self) {
        self.addresses.clear();
        self.http = None;
    }
}

impl Instance {
    fn new(service: &str, index: u32) -> Instance {
        Instance {
            service: service.to_string(),
            index,
            label: format!("{service}.{index}"),
            outstanding: AtomicUsize::new(0),
            shunned_until: Mutex::new(None),
            state: Mutex::new(State {
                want: Want::Run,
                pid: None,
                state: "starting",
                started: None,
                restarts: 0,
                last_exit: None,
                addresses: Vec::new(),
                http: None,
                settled: false,
                ready_once: false,
            }),
        }
    }

    /// `service.index`, the prefix of its lines.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock().pid
    }

    /// What the runtime wants of it.
    pub fn want(&self) -> Want {
        self.lock().want
    }

    /// Its HTTP address, while it is ready and wanted running: where the gateway may send.
    pub fn route(&self) -> Option<Arc<str>> {
        let shunned = self.shunned_until.lock().unwrap_or_else(|e| e.into_inner());
        if shunned.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        drop(shunned);
        let s = self.lock();
        if s.state != "ready" || s.want != Want::Run {
            return None;
        }
        s.http.clone()
    }

    /// Whether it is coming (starting, restarting, in backoff): worth a request's wait.
    pub fn coming(&self) -> bool {
        let s = self.lock();
        matches!(s.want, Want::Run | Want::Restart) && s.state != "failed" && s.state != "exited"
    }

    /// Keeps the gateway's requests away for `how_long` (or until its next ready line).
    pub fn shun(&self, how_long: Duration) {
        *self.shunned_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + how_long);
    }

    /// `index: state`, as an error tells it.
    pub fn brief(&self) -> String {
        format!("{}: {}", self.index, self.lock().state)
    }

    /// Whether it is ready (and wanted running).
    pub fn is_ready(&self) -> bool {
        let s = self.lock();
        s.state == "ready" && s.want == Want::Run
    }

    /// As `fleet ps` shows it (without what is asked of the instance itself).
    pub fn status(&self) -> serde_json::Value {
        let s = self.lock();
        serde_json::json!({
            "service": self.service,
            "instance": self.index,
            "pid": s.pid,
            "state": s.state,
            "uptime_ms": s.started.filter(|_| s.pid.is_some()).map(|t| t.elapsed().as_millis() as u64),
            "restarts": s.restarts,
            "last_exit": s.last_exit,
            "addresses": s.addresses,
            "outstanding": self.outstanding.load(Ordering::Relaxed),
        })
    }
}

impl Shared {
    /// A runtime's shared state, printing to `out`.
    pub fn new(
        out: Out,
        services: BTreeMap<String, ServiceRt>,
        grace: Duration,
        id: String,
    ) -> Shared {
        Shared {
            stopping: AtomicBool::new(false),
            out,
            services,
            grace,
            instances: Mutex::new(Vec::new()),
            generation: Mutex::new(0),
            changed: Condvar::new(),
            became_ready: tokio::sync::Notify::new(),
            supervisors: AtomicUsize::new(0),
            id,
            reports: Arc::default(),
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Changes instance `inst`, and wakes whatever waits for a change.
    fn change(&self, inst: &Instance, f: impl FnOnce(&mut State)) {
        f(&mut inst.lock());
        self.wake();
    }

    /// Wakes whatever waits for a change (a stop, a wish, a state).
    pub fn wake(&self) {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *generation += 1;
        self.changed.notify_all();
    }

    /// Waits until `done` holds (checked at every change, and every 100 ms) or `limit` has
    /// passed; whether it holds.
    pub fn wait_until(&self, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        // `Duration::MAX`: no deadline.
        let deadline = Instant::now().checked_add(limit);
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                return false;
            }
            let wait = left.min(Duration::from_millis(100));
            generation = self
                .changed
                .wait_timeout(generation, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Every instance, in service and instance order.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The instances of `service`.
    pub fn of(&self, service: &str) -> Vec<Arc<Instance>> {
        let all = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|i| i.service == service)
            .cloned()
            .collect()
    }

    /// The pids of the running instances.
    pub fn pids(&self) -> Vec<u32> {
        self.instances().iter().filter_map(|i| i.pid()).collect()
    }

    /// Adds instance `index` of `service` and starts its supervisor.
    pub fn add(self: &Arc<Shared>, service: &str, index: u32) -> Arc<Instance> {
        let inst = Arc::new(Instance::new(service, index));
        {
            let mut all = self.instances.lock().unwrap_or_else(|e| e.into_inner());
            all.push(Arc::clone(&inst));
            all.sort_by(|a, b| (&a.service, a.index).cmp(&(&b.service, b.index)));
        }
        self.supervisors.fetch_add(1, Ordering::AcqRel);
        let shared = Arc::clone(self);
        let supervised = Arc::clone(&inst);
        std::thread::spawn(move || {
            supervise(&shared, &supervised);
            shared.supervisors.fetch_sub(1, Ordering::AcqRel);
            shared.wake();
        });
        inst
    }

    fn remove(&self, inst: &Instance) {
        let mut all = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|i| !std::ptr::eq(i.as_ref(), inst));
    }

    /// Waits until every one of the `scale` first instances of `service` was ready once or was
    /// given up on (or the service was not started, or the fleet stops); whether all were
    /// ready.
    pub fn wait_ready(&self, service: &str) -> bool {
        let svc = &self.services[service];
        self.wait_until(Duration::MAX, || {
            let all = self.of(service);
            self.stopping()
                || svc.abandoned.load(Ordering::Acquire)
                || (all.len() as u32 >= svc.spec.scale && all.iter().all(|i| i.lock().settled))
        });
        let all = self.of(service);
        !all.is_empty() && all.iter().all(|i| i.lock().ready_once)
    }

    /// Waits until no supervisor runs, up to `limit`.
    pub fn wait_supervisors(&self, limit: Duration) -> bool {
        self.wait_until(limit, || self.supervisors.load(Ordering::Acquire) == 0)
    }

    /// Sets what is wanted of `inst` (a `Want::Run` also forgets its failures).
    pub fn set_want(&self, inst: &Instance, want: Want) {
        self.change(inst, |s| s.want = want);
    }

    /// Starts `inst` again now if it has no process: out of a stop or a failure, or cutting a
    /// backoff short. Whether it had none.
    pub fn start_now(&self, inst: &Instance) -> bool {
        let mut idle = false;
        self.change(inst, |s| {
            if s.pid.is_none() && s.want != Want::Retire {
                idle = true;
                s.want = if s.want == Want::Stop {
                    Want::Run
                } else {
                    Want::Restart
                };
            }
        });
        idle
    }

    /// Stops `inst` gracefully, wanting `want` of it after: no new request from the gateway,
    /// the gateway's requests in flight finished, then SIGTERM to its process group, the
    /// grace period, SIGKILL. Returns once its process is gone.
    pub fn stop(&self, inst: &Instance, want: Want) {
        self.change(inst, |s| {
            s.want = want;
            if s.pid.is_some() {
                s.state = "stopping";
            }
        });
        let grace = self.grace;
        self.wait_until(grace, || inst.outstanding.load(Ordering::Acquire) == 0);
        let Some(pid) = inst.pid() else { return };
        signal_group(pid, rustix::process::Signal::TERM);
        if !self.wait_until(grace, || inst.pid() != Some(pid)) {
            self.out.note(
                inst.label(),
                "the grace period is over: SIGKILL to what is left",
            );
            signal_group(pid, rustix::process::Signal::KILL);
            self.wait_until(Duration::from_secs(5), || inst.pid() != Some(pid));
        }
    }
}

/// `signal` to the process group of `pid`.
pub fn signal_group(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Supervises `inst` until the fleet stops or the instance is retired: started, watched,
/// restarted by its service's policy (with backoff), held while it is wanted stopped.
fn supervise(shared: &Shared, inst: &Instance) {
    let svc = &shared.services[&inst.service];
    let spec = &svc.spec;
    let label = inst.label();
    let mut failures = 0u32;
    loop {
        // Held while it is wanted stopped; a `fleet start` forgets its failures.
        if inst.want() == Want::Stop {
            shared.wait_until(Duration::MAX, || {
                shared.stopping() || inst.want() != Want::Stop
            });
            failures = 0;
        }
        if shared.stopping() || inst.want() == Want::Retire {
            shared.change(inst, |s| {
                s.state = "stopped";
                s.settled = true;
            });
            shared.remove(inst);
            return;
        }
        // One step under the instance's lock: a stop or a retirement asked since the checks
        // above is kept (and seen on the next turn), never overwritten.
        let started = Instant::now();
        let mut go = true;
        shared.change(inst, |s| match s.want {
            Want::Stop | Want::Retire => go = false,
            Want::Run | Want::Restart => {
                s.want = Want::Run;
                s.state = "starting";
                s.started = Some(started);
            }
        });
        if !go {
            continue;
        }
        let outcome = match start(&svc.exe, spec, &shared.id) {
            Ok(child) => run(shared, inst, label, child),
            Err(e) => Err(format!("cannot start {}: {e}", svc.exe.display())),
        };
        let want = inst.want();
        if shared.stopping() || want != Want::Run {
            let what = match want {
                Want::Restart => "stopped, to restart",
                _ => "stopped",
            };
            shared.out.note(label, what);
            shared.change(inst, |s| {
                s.state = "stopped";
                s.forget_addresses();
                if want == Want::Restart {
                    s.restarts += 1;
                    s.want = Want::Run;
                }
            });
            if want == Want::Restart {
                failures = 0;
            }
            continue;
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
            .note(label, &format!("{what} after {} ms", up.as_millis()));
        shared.change(inst, |s| {
            s.last_exit = Some(what.clone());
            s.state = "exited";
            s.forget_addresses();
        });
        let done = match spec.restart {
            Restart::Never => true,
            Restart::OnFailure => success,
            Restart::Always => false,
        };
        if done {
            // Not coming back unless started: what waits for it must not wait forever.
            shared.change(inst, |s| {
                s.settled = true;
                s.want = Want::Stop;
            });
            continue;
        }
        if up >= Duration::from_millis(spec.healthy_after_ms) {
            failures = 0;
        }
        failures += 1;
        if failures > spec.max_failures {
            shared.out.note(
                label,
                &format!(
                    "failed: {failures} failures in a row, each within {} ms of its start; not restarted (fix it, then `fleet start {}`)",
                    spec.healthy_after_ms, inst.service
                ),
            );
            shared.change(inst, |s| {
                s.settled = true;
                s.state = "failed";
                s.want = Want::Stop;
            });
            continue;
        }
        let delay = backoff(spec, failures);
        shared.change(inst, |s| {
            s.state = "backoff";
            s.restarts += 1;
        });
        shared.out.note(
            label,
            &format!(
                "backoff: restarting in {} ms (failure {failures} in a row)",
                delay.as_millis()
            ),
        );
        // Cut short by a stop, or by what a control command asks.
        shared.wait_until(delay, || shared.stopping() || inst.want() != Want::Run);
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

fn start(exe: &std::path::Path, spec: &Service, id: &str) -> std::io::Result<Child> {
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
        .env(protocol::FLEET_ID_VAR, id)
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
    inst: &Instance,
    label: &str,
    mut child: Child,
) -> Result<std::process::ExitStatus, String> {
    let pid = child.id();
    shared.change(inst, |s| s.pid = Some(pid));
    if shared.stopping() || inst.want() != Want::Run {
        // The stop's signals went out before this instance was known: it gets its own.
        signal_group(pid, rustix::process::Signal::TERM);
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let status = std::thread::scope(|s| {
        if let Some(out) = stdout {
            s.spawn(|| each_line(out, MAX_LINE, |line| shared.out.line(label, line)));
        }
        if let Some(err) = stderr {
            s.spawn(|| {
                each_line(err, MAX_LINE, |line| {
                    match protocol::parse_ready_line(line) {
                        Some(ready) => {
                            shared.out.note(
                                label,
                                &format!("ready (pid {pid}): {}", ready.addresses.join(" ")),
                            );
                            *inst.shunned_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                            shared.change(inst, |s| {
                                if s.state == "starting" {
                                    s.state = "ready";
                                }
                                s.http = ready
                                    .addresses
                                    .iter()
                                    .find_map(|a| a.strip_prefix(protocol::listen::HTTP))
                                    .map(Arc::from);
                                s.addresses = ready.addresses.clone();
                                s.settled = true;
                                s.ready_once = true;
                            });
                            shared.became_ready.notify_waiters();
                        }
                        None => shared.out.line(label, line),
                    }
                });
            });
        }
        child.wait()
    });
    shared.change(inst, |s| {
        s.pid = None;
        s.forget_addresses();
    });
    status.map_err(|e| format!("cannot wait for it: {e}"))
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
        each_line(long.as_bytes(), MAX_LINE, |l| lines.push(l.len()));
        assert_eq!(lines, [MAX_LINE, 4]);
    }
}
