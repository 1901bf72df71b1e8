//! `--performance-report[=PATH]`: where one run's time goes, as one JSON line.
//!
//! ```text
//! {"executable":"create-user","outcome":"ok","phases_us":{"begin":120,"commit":1400,"config":95,
//!  "connect":310,"prepare":4,"start":612,"task":90},"since_spawn_us":2650,"total_us":2031}
//! ```
//!
//! `start` is from the spawn to `main` (known when the launcher sets `COMMONDB_SPAWNED_AT_NS`,
//! as `runmany` does), then each phase runs from the end of the one before. The line is appended
//! to PATH (`-` or no value: stderr); `COMMONDB_PERFORMANCE_REPORT=PATH` turns it on from the
//! environment. When it is off, a mark costs one atomic load. The variables, the phase names
//! and the line's fields are the launcher's contract: [`crate::protocol`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

// Under their old names too, which config.rs uses to tell them apart from the settings.
pub(crate) use crate::protocol::{
    PERFORMANCE_REPORT_VAR as REPORT_VAR, SPAWNED_AT_VAR as SPAWNED_VAR,
};
use crate::protocol::{PHASES, PerformanceReport, phase};

static ON: AtomicBool = AtomicBool::new(false);
static REPORT: Mutex<Option<Report>> = Mutex::new(None);

struct Report {
    to: Option<PathBuf>,
    main_at: Instant,
    last: Instant,
    phases: Vec<(&'static str, u64)>,
}

/// Turns the report on if `flag` (the option's value: `Some(None)` for stderr) or the
/// environment asks for it. `main_at` is when `main` began.
pub(crate) fn start(main_at: Instant, flag: Option<Option<PathBuf>>) {
    let to = match flag {
        Some(path) => path,
        None => match std::env::var_os(REPORT_VAR) {
            Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
            _ => return,
        },
    };
    let to = to.filter(|p| p.as_os_str() != "-");
    let mut phases = Vec::with_capacity(8);
    if let Some(spawned) = spawned_at() {
        let at_main = unix_nanos().saturating_sub(main_at.elapsed().as_nanos());
        phases.push((phase::START, micros(at_main.saturating_sub(spawned))));
    }
    *lock() = Some(Report {
        to,
        main_at,
        last: main_at,
        phases,
    });
    ON.store(true, Ordering::Release);
}

/// Turns the report off: `--serve` reports its phases per request in its metrics instead (a
/// process-wide list would grow with every request).
pub(crate) fn disable() {
    ON.store(false, Ordering::Release);
}

/// Ends phase `name` (one of [`PHASES`]) now.
pub(crate) fn mark(name: &'static str) {
    // A name launchers do not know would be left out of their summaries without a word.
    debug_assert!(PHASES.contains(&name), "{name:?} is not a phase");
    if !ON.load(Ordering::Acquire) {
        return;
    }
    if let Some(r) = lock().as_mut() {
        let now = Instant::now();
        r.phases
            .push((name, micros(now.duration_since(r.last).as_nanos())));
        r.last = now;
    }
}

/// Writes the report line, if the report is on; `outcome` is `ok` or the error's kind.
pub(crate) fn finish(exe: &str, outcome: &str) {
    if !ON.swap(false, Ordering::AcqRel) {
        return;
    }
    let Some(r) = lock().take() else { return };
    let report = PerformanceReport {
        executable: exe.to_string(),
        outcome: outcome.to_string(),
        // A phase marked twice keeps its last time, as it always did.
        phases_us: r
            .phases
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect(),
        total_us: micros(r.main_at.elapsed().as_nanos()),
        since_spawn_us: spawned_at().map(|spawned| micros(unix_nanos().saturating_sub(spawned))),
    };
    let Ok(mut line) = serde_json::to_string(&report) else {
        return;
    };
    line.push('\n');
    // A report that cannot be written must not change the run's outcome.
    let _ = match &r.to {
        // Non-blocking: a FIFO that nobody reads fails to open instead of hanging the exit.
        Some(path) => crate::secrets::without_waiting(
            std::fs::OpenOptions::new().create(true).append(true),
            true,
        )
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes())),
        None => std::io::stderr().write_all(line.as_bytes()),
    };
}

fn lock() -> std::sync::MutexGuard<'static, Option<Report>> {
    REPORT.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawned_at() -> Option<u128> {
    std::env::var(SPAWNED_VAR).ok()?.parse().ok()
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn micros(nanos: u128) -> u64 {
    u64::try_from(nanos / 1000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test that turns the report on: the report is process-wide.
    #[test]
    fn the_report_is_one_line_a_launcher_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.jsonl");
        mark(phase::CONFIG);
        start(Instant::now(), Some(Some(path.clone())));
        mark(phase::CONFIG);
        mark(phase::PREPARE);
        finish("create-user", "conflict");
        // Off again: nothing more is written.
        mark(phase::TASK);
        finish("create-user", "ok");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with(
                r#"{"executable":"create-user","outcome":"conflict","phases_us":{"config":"#
            ),
            "{text}"
        );
        let report: PerformanceReport = serde_json::from_str(&text).unwrap();
        let phases: Vec<&str> = report.phases_us.keys().map(String::as_str).collect();
        assert_eq!(phases, [phase::CONFIG, phase::PREPARE]);
    }
}
