//! One-shot runs' performance reports, received by the runtime.
//!
//! `fleet up` makes a FIFO beside its control socket (mode 0600, in the private directory) and
//! reads it for as long as it runs. A one-shot run pointed at it
//! (`COMMONDB_PERFORMANCE_REPORT=<path>` or `--performance-report=<path>`) appends its report
//! line there: one `write` of less than `PIPE_BUF` bytes, so lines from many runs never
//! interleave. With no runtime reading, the run's open fails at once and the report is lost,
//! never the run. The runtime keeps the last [`KEEP`] reports per executable, at most
//! [`WINDOW`] old, and `fleet top` asks it for those of its interval (`runs MS` on the control
//! socket).

use std::collections::{BTreeMap, VecDeque};

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use commondb::protocol::PerformanceReport;

/// The most reports kept per executable.
const KEEP: usize = 10_000;

/// The oldest report kept.
const WINDOW: Duration = Duration::from_secs(600);

/// The longest report line read (a report is a few hundred bytes).
const MAX_LINE: u64 = 4096;

/// The reports received, per executable.
#[derive(Default)]
pub struct Reports {
    by_exe: Mutex<BTreeMap<String, VecDeque<(Instant, PerformanceReport)>>>,
}

/// The FIFO of the fleet whose control socket is `socket`.
pub fn fifo_path(socket: &Path) -> PathBuf {
    socket.with_extension("reports")
}

impl Reports {
    /// Makes the FIFO at `path` (replacing what a runtime killed outright left there) and
    /// reads it on a thread of its own until the process ends.
    pub fn listen(self: &std::sync::Arc<Self>, path: &Path) -> Result<(), String> {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(path);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(|e| format!("cannot make {}: {e}", path.display()))?;
        let open = |write: bool| {
            std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .custom_flags(
                    (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits() as i32,
                )
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))
        };
        let reader = open(false)?;
        // Held open, so that the read end never sees an end of file between two writers.
        let writer = open(true)?;
        rustix::fs::fcntl_setfl(&reader, rustix::fs::OFlags::empty())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let reports = std::sync::Arc::clone(self);
        std::thread::spawn(move || {
            let _writer = writer;
            super::output::each_line(reader, MAX_LINE as usize, |line| {
                // A line cut at the bound is no report, and is dropped as any other.
                if let Ok(report) = serde_json::from_str::<PerformanceReport>(line) {
                    reports.add(report);
                }
            });
        });
        Ok(())
    }

    fn add(&self, report: PerformanceReport) {
        let now = Instant::now();
        let mut by_exe = self.by_exe.lock().unwrap_or_else(|e| e.into_inner());
        if !by_exe.contains_key(&report.executable) && by_exe.len() >= 256 {
            return; // a bound on the names a writer can make up
        }
        let kept = by_exe.entry(report.executable.clone()).or_default();
        kept.push_back((now, report));
        while kept.len() > KEEP || kept.front().is_some_and(|(t, _)| now - *t > WINDOW) {
            kept.pop_front();
        }
    }

    /// Per executable, the runs reported in the last `within`: how many, how many failed, per
    /// second, and the median and p99 of each phase and of the whole run, in milliseconds.
    pub fn summary(&self, within: Duration) -> Vec<serde_json::Value> {
        let by_exe = self.by_exe.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut rows = Vec::new();
        for (exe, kept) in by_exe.iter() {
            let recent: Vec<&PerformanceReport> = kept
                .iter()
                .filter(|(t, _)| now - *t <= within)
                .map(|(_, r)| r)
                .collect();
            if recent.is_empty() {
                continue;
            }
            let mut phases: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
            for r in &recent {
                for (phase, us) in &r.phases_us {
                    phases.entry(phase).or_default().push(*us);
                }
                phases.entry("total").or_default().push(r.total_us);
            }
            let mut row = serde_json::json!({
                "executable": exe,
                "runs": recent.len(),
                "failed": recent.iter().filter(|r| r.outcome != "ok").count(),
                "runs_per_second": (recent.len() as f64 / within.as_secs_f64() * 10.0).round() / 10.0,
            });
            for (phase, mut values) in phases {
                values.sort_unstable();
                let at = |q: f64| {
                    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
                    values[i] as f64 / 1000.0
                };
                row[phase] = serde_json::json!({ "p50_ms": at(0.5), "p99_ms": at(0.99) });
            }
            rows.push(row);
        }
        rows
    }
}
