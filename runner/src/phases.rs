//! The executables' performance reports: with `COMMONDB_PERFORMANCE_REPORT=FILE` a commondb
//! executable appends one JSON line per run, `{"phases_us": {"start": …, "config": …, …},
//! "since_spawn_us": …}` ([`commondb::protocol::PerformanceReport`]); the time from that line
//! to the reap is the `exit` phase.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use commondb::protocol::{PerformanceReport, phase};

/// The phases in `file`, plus `exit`: what `latency` has beyond the report's `since_spawn_us`.
pub fn read(file: &Path, latency: Duration) -> BTreeMap<String, u64> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return BTreeMap::new();
    };
    let Some(report) = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<PerformanceReport>(l).ok())
    else {
        return BTreeMap::new();
    };
    let mut phases = report.phases_us;
    if let Some(since_spawn) = report.since_spawn_us {
        let latency = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        phases.insert(phase::EXIT.into(), latency.saturating_sub(since_spawn));
    }
    phases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_the_exit_are_read() {
        let dir = tempfile_dir();
        let file = dir.join("r.jsonl");
        std::fs::write(
            &file,
            "{\"phases_us\":{\"start\":700,\"task\":300},\"since_spawn_us\":2000}\n",
        )
        .unwrap();
        let p = read(&file, Duration::from_micros(2500));
        assert_eq!(p["start"], 700);
        assert_eq!(p["task"], 300);
        assert_eq!(p["exit"], 500);
        assert!(read(&dir.join("missing"), Duration::ZERO).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("phases-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
