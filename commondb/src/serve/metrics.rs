//! What `GET /metrics` reports, in the Prometheus text format: requests by outcome, a latency
//! histogram, one per phase of a request, the pool's connections in use and idle, client connections open, requests in
//! flight. Plain atomics: recording a request costs a few relaxed additions.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::ErrorKind;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The phases of a request, as `--performance-report` names them in process mode.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// Validating (and hashing) the arguments.
    Prepare,
    /// Waiting for a pooled database connection.
    Acquire,
    /// The schema check and `BEGIN`.
    Begin,
    /// The task and its commit.
    Execute,
}

const PHASES: [&str; 4] = ["prepare", "acquire", "begin", "execute"];

/// Upper bounds of the phase buckets, in seconds: a phase can take a few microseconds.
const PHASE_BUCKETS: [f64; 16] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0, 10.0,
];

#[derive(Default)]
pub(crate) struct Metrics {
    phase_micros: [AtomicU64; PHASES.len()],
    phase_count: [AtomicU64; PHASES.len()],
    phase_buckets: [[AtomicU64; PHASE_BUCKETS.len()]; PHASES.len()],
    /// `ok` first, then one per [`ErrorKind::ALL`].
    outcomes: [AtomicU64; 1 + ErrorKind::ALL.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    pub(crate) connections: AtomicI64,
    pub(crate) in_flight: AtomicI64,
    /// Requests whose id was seen before, answered with the first answer.
    pub(crate) replayed: AtomicU64,
}

impl Metrics {
    /// Records the time one request spent in `phase`.
    pub(crate) fn phase(&self, step: Step, took: Duration) {
        let i = step as usize;
        self.phase_micros[i]
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.phase_count[i].fetch_add(1, Relaxed);
        let seconds = took.as_secs_f64();
        if let Some(b) = PHASE_BUCKETS.iter().position(|le| seconds <= *le) {
            self.phase_buckets[i][b].fetch_add(1, Relaxed);
        }
    }

    /// Records one answered request.
    pub(crate) fn observe(&self, outcome: Option<ErrorKind>, took: Duration) {
        let slot = outcome.map_or(0, |kind| {
            1 + ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
        });
        self.outcomes[slot].fetch_add(1, Relaxed);
        let seconds = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The text `GET /metrics` answers; `pool` is (in use, idle, size).
    pub(crate) fn render(&self, name: &str, pool: (usize, usize, usize)) -> String {
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP commondb_requests_total Requests answered, by outcome (ok or the error kind).\n# TYPE commondb_requests_total counter"
        );
        let kinds = std::iter::once("ok").chain(ErrorKind::ALL.iter().map(|k| k.as_str()));
        for (kind, n) in kinds.zip(&self.outcomes) {
            let _ = writeln!(
                out,
                "commondb_requests_total{{executable=\"{name}\",outcome=\"{kind}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP commondb_request_duration_seconds Time from a request read to its answer.\n# TYPE commondb_request_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                out,
                "commondb_request_duration_seconds_bucket{{executable=\"{name}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(
            out,
            "commondb_request_duration_seconds_bucket{{executable=\"{name}\",le=\"+Inf\"}} {count}\n\
             commondb_request_duration_seconds_sum{{executable=\"{name}\"}} {}\n\
             commondb_request_duration_seconds_count{{executable=\"{name}\"}} {count}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP commondb_request_phase_seconds Time requests spent in each phase.\n# TYPE commondb_request_phase_seconds histogram"
        );
        for (i, phase) in PHASES.iter().enumerate() {
            let mut cumulative = 0;
            for (le, n) in PHASE_BUCKETS.iter().zip(&self.phase_buckets[i]) {
                cumulative += n.load(Relaxed);
                let _ = writeln!(
                    out,
                    "commondb_request_phase_seconds_bucket{{executable=\"{name}\",phase=\"{phase}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count = self.phase_count[i].load(Relaxed);
            let _ = writeln!(
                out,
                "commondb_request_phase_seconds_bucket{{executable=\"{name}\",phase=\"{phase}\",le=\"+Inf\"}} {count}\n\
                 commondb_request_phase_seconds_sum{{executable=\"{name}\",phase=\"{phase}\"}} {}\n\
                 commondb_request_phase_seconds_count{{executable=\"{name}\",phase=\"{phase}\"}} {count}",
                self.phase_micros[i].load(Relaxed) as f64 / 1e6,
            );
        }
        let (in_use, idle, size) = pool;
        let _ = writeln!(
            out,
            "# HELP commondb_pool_connections Database connections of the pool, by state.\n# TYPE commondb_pool_connections gauge\n\
             commondb_pool_connections{{executable=\"{name}\",state=\"in_use\"}} {in_use}\n\
             commondb_pool_connections{{executable=\"{name}\",state=\"idle\"}} {idle}\n\
             # HELP commondb_pool_size The most database connections the pool opens.\n# TYPE commondb_pool_size gauge\n\
             commondb_pool_size{{executable=\"{name}\"}} {size}\n\
             # HELP commondb_client_connections Client connections open.\n# TYPE commondb_client_connections gauge\n\
             commondb_client_connections{{executable=\"{name}\"}} {}\n\
             # HELP commondb_requests_in_flight Requests being handled.\n# TYPE commondb_requests_in_flight gauge\n\
             commondb_requests_in_flight{{executable=\"{name}\"}} {}\n\
             # HELP commondb_requests_replayed_total Requests whose id was seen before: answered again, nothing written.\n# TYPE commondb_requests_replayed_total counter\n\
             commondb_requests_replayed_total{{executable=\"{name}\"}} {}",
            self.connections.load(Relaxed),
            self.in_flight.load(Relaxed),
            self.replayed.load(Relaxed),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_buckets_are_counted_cumulatively() {
        let m = Metrics::default();
        m.observe(None, Duration::from_micros(300));
        m.observe(None, Duration::from_millis(3));
        m.observe(Some(ErrorKind::Conflict), Duration::from_secs(20));
        m.phase(Step::Prepare, Duration::from_micros(20));
        m.phase(Step::Prepare, Duration::from_millis(2));
        let text = m.render("x", (1, 2, 3));
        for line in [
            "commondb_requests_total{executable=\"x\",outcome=\"ok\"} 2",
            "commondb_requests_total{executable=\"x\",outcome=\"conflict\"} 1",
            "commondb_request_duration_seconds_bucket{executable=\"x\",le=\"0.0005\"} 1",
            "commondb_request_duration_seconds_bucket{executable=\"x\",le=\"0.005\"} 2",
            "commondb_request_duration_seconds_bucket{executable=\"x\",le=\"10\"} 2",
            "commondb_request_duration_seconds_bucket{executable=\"x\",le=\"+Inf\"} 3",
            "commondb_request_duration_seconds_count{executable=\"x\"} 3",
            "commondb_pool_connections{executable=\"x\",state=\"idle\"} 2",
            "commondb_request_phase_seconds_bucket{executable=\"x\",phase=\"prepare\",le=\"0.00001\"} 0",
            "commondb_request_phase_seconds_bucket{executable=\"x\",phase=\"prepare\",le=\"0.000025\"} 1",
            "commondb_request_phase_seconds_bucket{executable=\"x\",phase=\"prepare\",le=\"0.0025\"} 2",
            "commondb_request_phase_seconds_count{executable=\"x\",phase=\"prepare\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
