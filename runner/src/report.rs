//! What a run measured: one [`Record`] per instance or request, and the [`Summary`] over them
//! (counts, failures grouped by exit code, latency percentiles, memory, CPU).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// One instance (process mode) or one request (serve mode).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The instance's index, `{i}`.
    pub i: u64,
    /// Whether it succeeded (exit 0, or an `ok` answer).
    pub ok: bool,
    /// The exit code, 128 + N for a signal N, or the `exit_code` of an error answer.
    pub code: Option<i32>,
    /// Killed by `--timeout`.
    pub timed_out: bool,
    /// From spawn to reap (or from request sent to answer read), in microseconds.
    pub latency_us: u64,
    /// Peak resident set size of the process, KiB (process mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rss_kib: Option<u64>,
    /// User CPU time, microseconds (process mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_us: Option<u64>,
    /// System CPU time, microseconds (process mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_us: Option<u64>,
    /// The start of what it said on failure (stderr, or the error answer).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The phases the executable reported (`--performance-report`), microseconds each.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<String, u64>,
    /// Through a broker: answers that came from a second delivery of a request (its first
    /// answer lost with a worker, or a duplicate), counted on the request they arrived with.
    #[serde(skip_serializing_if = "is_zero")]
    pub redelivered: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    /// Instance `i`, failed with `error` and nothing measured yet.
    pub fn failed(i: u64, error: String) -> Record {
        Record {
            i,
            ok: false,
            code: None,
            timed_out: false,
            latency_us: 0,
            max_rss_kib: None,
            user_us: None,
            system_us: None,
            error,
            phases: BTreeMap::new(),
            redelivered: 0,
        }
    }
}

/// Order statistics of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    /// The smallest.
    pub min: f64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
}

impl Stats {
    /// The statistics of `values` (nearest-rank percentiles); `None` for an empty sample.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[k.clamp(1, v.len()) - 1]
        };
        Some(Stats {
            min: v[0],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }
}

/// Failures with one exit code.
#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    /// The exit code (128 + N for signal N); `None` when there was none (a request that got
    /// no answer).
    pub code: Option<i32>,
    /// How many.
    pub count: u64,
    /// How many of them were killed by `--timeout`.
    pub timed_out: u64,
    /// One example of what such a failure said.
    pub example: String,
}

/// The summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `processes` or `serve`.
    pub mode: &'static str,
    /// What ran: the executable, or the service's address.
    pub target: String,
    /// Instances or requests counted (warm-up runs excluded).
    pub count: u64,
    /// At once: processes, or client connections.
    pub jobs: u64,
    /// Instances or requests that succeeded.
    pub succeeded: u64,
    /// Those that failed (timed out included).
    pub failed: u64,
    /// Those killed or given up on by `--timeout`.
    pub timed_out: u64,
    /// Through a broker: answers from a request's second (or later) delivery.
    pub redelivered: u64,
    /// Failures by exit code, most frequent first.
    pub failures: Vec<FailureGroup>,
    /// From the first start to the last end, milliseconds.
    pub wall_ms: f64,
    /// Successes per second of wall time.
    pub throughput_per_s: f64,
    /// Latency of the successful ones, milliseconds.
    pub latency_ms: Option<Stats>,
    /// Peak resident set size per process, KiB (process mode).
    pub max_rss_kib: Option<Stats>,
    /// User and system CPU per process, milliseconds (process mode).
    pub user_cpu_ms: Option<Stats>,
    /// System CPU per process, milliseconds.
    pub system_cpu_ms: Option<Stats>,
    /// The fleet's memory while it ran: the largest sum of proportional set sizes sampled
    /// from `/proc` (pages shared by many copies of one binary count once), KiB.
    pub fleet_pss_peak_kib: Option<u64>,
    /// How many times the fleet's memory was sampled.
    pub fleet_samples: u64,
    /// Serve mode: the service's resident memory, KiB, before and after the run (when its
    /// process is known).
    pub server_rss_kib: Option<(u64, u64)>,
    /// Median microseconds per phase, from the executables' performance reports, in the order
    /// the phases run.
    pub phases_us: Vec<(String, u64)>,
}

impl Summary {
    /// Summarises `records` of a run that took `wall`.
    pub fn new(
        mode: &'static str,
        target: String,
        jobs: u64,
        records: &[Record],
        wall: Duration,
    ) -> Summary {
        let ok: Vec<&Record> = records.iter().filter(|r| r.ok).collect();
        let mut groups: BTreeMap<Option<i32>, FailureGroup> = BTreeMap::new();
        for r in records.iter().filter(|r| !r.ok) {
            let g = groups.entry(r.code).or_insert_with(|| FailureGroup {
                code: r.code,
                count: 0,
                timed_out: 0,
                example: r.error.clone(),
            });
            g.count += 1;
            g.timed_out += u64::from(r.timed_out);
        }
        let mut failures: Vec<FailureGroup> = groups.into_values().collect();
        failures.sort_by_key(|g| std::cmp::Reverse(g.count));
        let wall_ms = wall.as_secs_f64() * 1e3;
        let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &ok {
            for (name, us) in &r.phases {
                phases.entry(name.clone()).or_default().push(*us as f64);
            }
        }
        let opt = |f: &dyn Fn(&Record) -> Option<f64>| Stats::of(ok.iter().filter_map(|r| f(r)));
        Summary {
            mode,
            target,
            count: records.len() as u64,
            jobs,
            succeeded: ok.len() as u64,
            failed: (records.len() - ok.len()) as u64,
            timed_out: records.iter().filter(|r| r.timed_out).count() as u64,
            redelivered: records.iter().map(|r| r.redelivered).sum(),
            failures,
            wall_ms,
            throughput_per_s: if wall_ms > 0.0 {
                ok.len() as f64 / (wall_ms / 1e3)
            } else {
                0.0
            },
            latency_ms: Stats::of(ok.iter().map(|r| r.latency_us as f64 / 1e3)),
            max_rss_kib: opt(&|r| r.max_rss_kib.map(|k| k as f64)),
            user_cpu_ms: opt(&|r| r.user_us.map(|u| u as f64 / 1e3)),
            system_cpu_ms: opt(&|r| r.system_us.map(|u| u as f64 / 1e3)),
            fleet_pss_peak_kib: None,
            fleet_samples: 0,
            server_rss_kib: None,
            phases_us: {
                let mut medians: Vec<(String, u64)> = phases
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, Stats::of(v)?.p50 as u64)))
                    .collect();
                medians.sort_by_key(|(k, _)| {
                    commondb::protocol::PHASES
                        .iter()
                        .position(|p| p == k)
                        .unwrap_or(usize::MAX)
                });
                medians
            },
        }
    }

    /// Whether every instance succeeded.
    pub fn all_ok(&self) -> bool {
        self.failed == 0
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at_once = if self.mode == "serve" {
            "connections"
        } else {
            "at once"
        };
        writeln!(
            f,
            "{} × {} ({}, {} {at_once})",
            self.count, self.target, self.mode, self.jobs
        )?;
        writeln!(
            f,
            "  succeeded   {}   failed {}{}",
            self.succeeded,
            self.failed,
            if self.timed_out > 0 {
                format!(" ({} timed out)", self.timed_out)
            } else {
                String::new()
            }
        )?;
        if self.redelivered > 0 {
            writeln!(
                f,
                "  redelivered {}   (answers from a second delivery: the request ids kept each effect to one)",
                self.redelivered
            )?;
        }
        writeln!(
            f,
            "  wall        {} ms   throughput {:.1}/s",
            ms(self.wall_ms),
            self.throughput_per_s
        )?;
        if let Some(l) = &self.latency_ms {
            writeln!(
                f,
                "  latency ms  min {}  mean {}  p50 {}  p90 {}  p99 {}  max {}",
                ms(l.min),
                ms(l.mean),
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.max)
            )?;
        }
        if let Some(r) = &self.max_rss_kib {
            writeln!(
                f,
                "  per process peak RSS p50 {}, max {}",
                mib(r.p50),
                mib(r.max)
            )?;
        }
        if let (Some(u), Some(s)) = (&self.user_cpu_ms, &self.system_cpu_ms) {
            writeln!(
                f,
                "  per process CPU ms   user p50 {}, system p50 {}",
                ms(u.p50),
                ms(s.p50)
            )?;
        }
        if let Some(p) = self.fleet_pss_peak_kib {
            writeln!(
                f,
                "  fleet memory         peak {} (sum of PSS, {} samples)",
                mib(p as f64),
                self.fleet_samples
            )?;
        }
        if let Some((before, after)) = self.server_rss_kib {
            writeln!(
                f,
                "  service RSS          {} before, {} after",
                mib(before as f64),
                mib(after as f64)
            )?;
        }
        if !self.phases_us.is_empty() {
            let phases: Vec<String> = self
                .phases_us
                .iter()
                .map(|(k, v)| format!("{k} {}", ms(*v as f64 / 1e3)))
                .collect();
            writeln!(f, "  phases ms (p50)      {}", phases.join("  "))?;
        }
        if !self.failures.is_empty() {
            writeln!(f, "  failures by exit code:")?;
            for g in &self.failures {
                let code = g.code.map_or("none".to_string(), |c| c.to_string());
                let timed = if g.timed_out > 0 {
                    format!(" ({} timed out)", g.timed_out)
                } else {
                    String::new()
                };
                let example = g.example.lines().next().unwrap_or("");
                writeln!(f, "    {code:>4} × {}{timed}   e.g. {example}", g.count)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64, ok: bool, code: i32, latency_us: u64) -> Record {
        Record {
            i,
            ok,
            code: Some(code),
            timed_out: false,
            latency_us,
            max_rss_kib: Some(1000 + i),
            user_us: None,
            system_us: None,
            error: if ok {
                String::new()
            } else {
                format!("e{code}")
            },
            phases: BTreeMap::new(),
            redelivered: 0,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Stats::of((1..=100).map(f64::from)).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p90, s.p99, s.max),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(s.mean, 50.5);
        let one = Stats::of([7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(Stats::of([]).is_none());
    }

    #[test]
    fn failures_are_grouped_and_kept_out_of_the_latencies() {
        let records = [
            record(0, true, 0, 1000),
            record(1, false, 73, 9_000_000),
            record(2, false, 73, 1),
            record(3, false, 137, 5),
            record(4, true, 0, 3000),
        ];
        let s = Summary::new("processes", "x".into(), 2, &records, Duration::from_secs(1));
        assert_eq!((s.succeeded, s.failed), (2, 3));
        assert_eq!(s.failures[0].code, Some(73));
        assert_eq!(s.failures[0].count, 2);
        assert_eq!(s.failures[0].example, "e73");
        assert_eq!(s.failures[1].code, Some(137));
        let l = s.latency_ms.unwrap();
        assert_eq!((l.min, l.max), (1.0, 3.0));
        assert_eq!(s.throughput_per_s, 2.0);
        assert!(!s.all_ok());
    }
}
