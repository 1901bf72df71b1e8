//! The fleet's memory while it runs: every few milliseconds, the sum of the proportional set
//! sizes (`Pss` in `/proc/<pid>/smaps_rollup`) of the instances alive. PSS divides each shared
//! page among the processes that map it, so 200 copies of one binary count its pages once:
//! the figure answers "how much memory do these processes take together?".

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The live instances, and the peak of their summed PSS.
pub struct Fleet {
    pids: Mutex<BTreeSet<u32>>,
    peak_kib: AtomicU64,
    samples: AtomicU64,
    stop: AtomicBool,
}

impl Fleet {
    /// Starts sampling every `interval` on a thread of its own.
    pub fn start(interval: Duration) -> (Arc<Fleet>, std::thread::JoinHandle<()>) {
        let fleet = Arc::new(Fleet {
            pids: Mutex::new(BTreeSet::new()),
            peak_kib: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let sampler = Arc::clone(&fleet);
        let thread = std::thread::spawn(move || {
            while !sampler.stop.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                sampler.sample();
            }
        });
        (fleet, thread)
    }

    /// An instance started.
    pub fn add(&self, pid: u32) {
        self.pids.lock().unwrap().insert(pid);
    }

    /// An instance ended.
    pub fn remove(&self, pid: u32) {
        self.pids.lock().unwrap().remove(&pid);
    }

    fn sample(&self) {
        let pids: Vec<u32> = self.pids.lock().unwrap().iter().copied().collect();
        if pids.is_empty() {
            return;
        }
        let total: u64 = pids.iter().filter_map(|pid| pss_kib(*pid)).sum();
        self.peak_kib.fetch_max(total, Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops sampling; returns the peak (KiB) and the number of samples.
    pub fn finish(&self, thread: std::thread::JoinHandle<()>) -> (Option<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        let samples = self.samples.load(Ordering::Relaxed);
        let peak = self.peak_kib.load(Ordering::Relaxed);
        ((samples > 0).then_some(peak), samples)
    }
}

/// A process's proportional set size, KiB (`None` once it is gone).
pub fn pss_kib(pid: u32) -> Option<u64> {
    field_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// A process's resident set size, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    field_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn field_kib(path: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_memory_is_readable() {
        let me = std::process::id();
        assert!(pss_kib(me).unwrap() > 0);
        assert!(rss_kib(me).unwrap() > 0);
        assert!(pss_kib(u32::MAX).is_none());
    }
}
