//! Process mode: `jobs` worker threads, each spawning one instance at a time and reaping it
//! with `wait4`, which gives that child's own peak RSS and CPU times.
//!
//! A worker reads the child's stderr to its end (keeping the start, for the failure report)
//! and then reaps it. `--timeout` is enforced by a watchdog thread that signals through a
//! pidfd, which names the process itself and not a number that could be reused after the reap.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use commondb::protocol;
use wait4::Wait4;

use crate::fleet::Fleet;
use crate::report::Record;

/// How much of a failed instance's stderr is kept.
const STDERR_KEPT: usize = 2048;

/// What to run.
pub struct Plan<'a> {
    /// The program.
    pub exe: &'a Path,
    /// The arguments of instance `i`.
    pub argv: &'a (dyn Fn(u64) -> Vec<String> + Sync),
    /// How many instances.
    pub count: u64,
    /// The first `{i}`.
    pub first: u64,
    /// At once.
    pub jobs: u64,
    /// Per instance.
    pub timeout: Option<Duration>,
    /// Where each instance appends its performance report, if asked for.
    pub perf_dir: Option<&'a Path>,
    /// Extra environment for every instance.
    pub env: &'a [(String, String)],
    /// What instance `i` reads on its standard input (a password's line), if anything.
    pub input: &'a (dyn Fn(u64) -> Option<String> + Sync),
}

/// Runs `plan.count` instances, `plan.jobs` at once; returns their records in index order.
pub fn run(plan: &Plan<'_>, fleet: Option<&Fleet>, progress: &(dyn Fn() + Sync)) -> Vec<Record> {
    let next = AtomicU64::new(0);
    let records = Mutex::new(Vec::with_capacity(plan.count as usize));
    let watchdog = plan.timeout.map(|_| Watchdog::start());
    let workers = plan.jobs.clamp(1, plan.count.max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= plan.count {
                        break;
                    }
                    let record = one(plan, plan.first + k, watchdog.as_deref(), fleet);
                    records.lock().unwrap().push(record);
                    progress();
                }
            });
        }
    });
    if let Some(w) = watchdog {
        w.stop();
    }
    let mut records = records.into_inner().unwrap();
    records.sort_by_key(|r| r.i);
    records
}

fn one(plan: &Plan<'_>, i: u64, watchdog: Option<&Watchdog>, fleet: Option<&Fleet>) -> Record {
    let mut cmd = Command::new(plan.exe);
    // A group of its own, so that a timeout kills what the instance started too (a child that
    // holds its stderr open would otherwise keep the run waiting).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let input = (plan.input)(i);
    cmd.args((plan.argv)(i))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .envs(plan.env.iter().map(|(k, v)| (k, v)));
    let perf_file: Option<PathBuf> = plan.perf_dir.map(|d| d.join(format!("{i}.jsonl")));
    if let Some(file) = &perf_file {
        cmd.env(protocol::PERFORMANCE_REPORT_VAR, file);
    }
    let started = Instant::now();
    if perf_file.is_some() {
        cmd.env(protocol::SPAWNED_AT_VAR, unix_nanos().to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let error = format!("cannot start {}: {e}", plan.exe.display());
            return Record {
                code: Some(127),
                ..Record::failed(i, error)
            };
        }
    };
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // One short line: it fits the pipe, so this never waits on the instance. Dropping the
        // pipe closes it, so the instance sees the end of its input.
        let _ = stdin.write_all(text.as_bytes());
    }
    let pid = child.id();
    if let Some(fleet) = fleet {
        fleet.add(pid);
    }
    let guard = match (watchdog, plan.timeout) {
        (Some(w), Some(t)) => pidfd(pid).map(|fd| w.watch(fd, pid, started + t)),
        _ => None,
    };
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = (&mut pipe)
            .take(STDERR_KEPT as u64)
            .read_to_end(&mut stderr);
        // Drain the rest, so that a chatty child never blocks on a full pipe.
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
    }
    // Unwatched before the reap, so that the watchdog never signals a pid that was reaped (and
    // could be reused). Its stderr ended: the instance is exiting, or closed it and runs on
    // unwatched.
    let killed = match (watchdog, guard) {
        (Some(w), Some(id)) => w.unwatch(id),
        _ => false,
    };
    let reaped = child.wait4();
    let latency = started.elapsed();
    if let Some(fleet) = fleet {
        fleet.remove(pid);
    }
    let (code, usage) = match reaped {
        Ok(r) => (exit_code(r.status), Some(r.rusage)),
        Err(e) => {
            stderr = format!("cannot wait for the instance: {e}").into_bytes();
            (None, None)
        }
    };
    // Timed out only if the kill is what ended it: one that exited just before its deadline
    // (a zombie can still be signalled) keeps its own status.
    let timed_out = killed && code == Some(128 + 9);
    let ok = code == Some(0) && !timed_out;
    let mut phases = BTreeMap::new();
    if let Some(file) = &perf_file {
        phases = crate::phases::read(file, latency);
        let _ = std::fs::remove_file(file);
    }
    Record {
        i,
        ok,
        code,
        timed_out,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        max_rss_kib: usage.map(|u| u.maxrss / 1024),
        user_us: usage.map(|u| u64::try_from(u.utime.as_micros()).unwrap_or(u64::MAX)),
        system_us: usage.map(|u| u64::try_from(u.stime.as_micros()).unwrap_or(u64::MAX)),
        error: if ok {
            String::new()
        } else if timed_out {
            format!(
                "killed after the --timeout of {:?}",
                plan.timeout.unwrap_or_default()
            )
        } else {
            String::from_utf8_lossy(&stderr).trim().to_string()
        },
        phases,
        redelivered: 0,
    }
}

/// The shell's convention: the code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

pub(crate) fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Kills instances that pass their deadline.
struct Watchdog {
    state: Mutex<WatchState>,
    wake: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct WatchState {
    next_id: u64,
    /// id → (deadline, pidfd and pid, killed)
    watched: BTreeMap<u64, (Instant, (OwnedFd, u32), bool)>,
    stop: bool,
}

impl Watchdog {
    fn start() -> Arc<Watchdog> {
        let w = Arc::new(Watchdog {
            state: Mutex::new(WatchState::default()),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        });
        let run = Arc::clone(&w);
        *w.thread.lock().unwrap() = Some(std::thread::spawn(move || run.watch_loop()));
        w
    }

    fn watch(&self, fd: OwnedFd, pid: u32, deadline: Instant) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.watched.insert(id, (deadline, (fd, pid), false));
        self.wake.notify_one();
        id
    }

    /// Stops watching; returns whether the instance was killed.
    fn unwatch(&self, id: u64) -> bool {
        self.state
            .lock()
            .unwrap()
            .watched
            .remove(&id)
            .is_some_and(|(_, _, killed)| killed)
    }

    fn watch_loop(&self) {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.stop {
                return;
            }
            let now = Instant::now();
            for (deadline, (fd, pid), killed) in s.watched.values_mut() {
                if !*killed && *deadline <= now {
                    let _ = rustix::process::pidfd_send_signal(&*fd, rustix::process::Signal::KILL);
                    // Its group too. An instance is unwatched before it is reaped, so its pid,
                    // which is the group's id, cannot have been reused.
                    if let Some(group) = i32::try_from(*pid)
                        .ok()
                        .and_then(rustix::process::Pid::from_raw)
                    {
                        let _ = rustix::process::kill_process_group(
                            group,
                            rustix::process::Signal::KILL,
                        );
                    }
                    *killed = true;
                }
            }
            let next = s
                .watched
                .values()
                .filter(|(_, _, killed)| !killed)
                .map(|(d, _, _)| *d)
                .min();
            let wait = next.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(now)
            });
            s = self.wake.wait_timeout(s, wait).unwrap().0;
        }
    }

    fn stop(&self) {
        self.state.lock().unwrap().stop = true;
        self.wake.notify_one();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}
