//! `fleet top`: per service, requests per second and the median and p99 of the request time and
//! of each phase of a request (prepare, acquire, begin, execute), from two readings of every
//! ready instance's `/metrics` an interval apart. The quantiles are interpolated in the
//! histograms' buckets, as Prometheus's `histogram_quantile` does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::control;

/// The series `top` shows: the whole request, then each phase.
const SERIES: [&str; 5] = ["request", "prepare", "acquire", "begin", "execute"];

/// One reading of a service: per series, the cumulative count of each bucket bound.
#[derive(Default, Clone)]
struct Reading {
    buckets: BTreeMap<&'static str, BTreeMap<u64, f64>>,
}

/// A bucket bound as a sortable key (nanoseconds; `+Inf` as `u64::MAX`).
fn bound(le: &str) -> Option<u64> {
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    let seconds: f64 = le.parse().ok()?;
    Some((seconds * 1e9).round() as u64)
}

/// The value of label `name` in `labels` (`a="x",b="y"`).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

impl Reading {
    /// Adds the histograms of one instance's metrics text.
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            let (series, rest) = if let Some(r) =
                line.strip_prefix("commondb_request_duration_seconds_bucket{")
            {
                ("request", r)
            } else if let Some(r) = line.strip_prefix("commondb_request_phase_seconds_bucket{") {
                let Some(phase) = label(r.split('}').next().unwrap_or(""), "phase") else {
                    continue;
                };
                let Some(s) = SERIES.iter().find(|s| **s == phase) else {
                    continue;
                };
                (*s, r)
            } else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let (Some(le), Ok(value)) = (
                label(labels, "le").and_then(bound),
                value.trim().parse::<f64>(),
            ) else {
                continue;
            };
            *self
                .buckets
                .entry(series)
                .or_default()
                .entry(le)
                .or_default() += value;
        }
    }

    /// What happened between `before` and `self`: bucket counts subtracted.
    fn since(&self, before: &Reading) -> Reading {
        let mut delta = self.clone();
        for (series, buckets) in &mut delta.buckets {
            for (le, n) in buckets.iter_mut() {
                *n -= before
                    .buckets
                    .get(series)
                    .and_then(|b| b.get(le))
                    .copied()
                    .unwrap_or(0.0);
                *n = n.max(0.0);
            }
        }
        delta
    }

    /// Adds `other`'s counts to these.
    fn plus(&mut self, other: &Reading) {
        for (series, buckets) in &other.buckets {
            let mine = self.buckets.entry(series).or_default();
            for (le, n) in buckets {
                *mine.entry(*le).or_default() += n;
            }
        }
    }

    fn count(&self, series: &str) -> f64 {
        self.buckets
            .get(series)
            .and_then(|b| b.get(&u64::MAX))
            .copied()
            .unwrap_or(0.0)
    }

    /// Quantile `q` of `series`, in seconds (`None` without observations).
    fn quantile(&self, series: &str, q: f64) -> Option<f64> {
        let buckets = self.buckets.get(series)?;
        let total = self.count(series);
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, n) in buckets {
            if *n >= rank {
                if *le == u64::MAX {
                    return Some(lower);
                }
                let upper = *le as f64 / 1e9;
                let inside = n - below;
                let share = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (upper - lower) * share);
            }
            if *le != u64::MAX {
                lower = *le as f64 / 1e9;
            }
            below = *n;
        }
        Some(lower)
    }
}

/// Each ready instance's readings, by `index/pid`.
type Instances = BTreeMap<String, Reading>;

/// Reads every ready instance's metrics, per service.
fn read_all(file: &Path) -> Result<BTreeMap<String, Instances>, (u8, String)> {
    let answer = control::ask(file, "ps", Some(Duration::from_secs(10)))?;
    let mut services: BTreeMap<String, Instances> = BTreeMap::new();
    for i in answer["instances"].as_array().into_iter().flatten() {
        let Some(service) = i["service"].as_str() else {
            continue;
        };
        let entry = services.entry(service.to_string()).or_default();
        if i["state"] != "ready" {
            continue;
        }
        let http = i["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|a| a.as_str()?.strip_prefix(commondb::protocol::listen::HTTP));
        if let Some(text) = http.and_then(control::fetch_metrics) {
            let mut reading = Reading::default();
            reading.add(&text);
            entry.insert(format!("{}/{}", i["instance"], i["pid"]), reading);
        }
    }
    Ok(services)
}

/// `fleet top`: `count` reports (0: until interrupted), each over `interval`.
pub fn top(file: &Path, interval: Duration, count: u32, json: bool) -> Result<(), (u8, String)> {
    let mut before = read_all(file)?;
    let mut taken = Instant::now();
    let mut shown = 0;
    while count == 0 || shown < count {
        std::thread::sleep(interval);
        let now = read_all(file)?;
        let seconds = taken.elapsed().as_secs_f64();
        taken = Instant::now();
        let mut rows = Vec::new();
        for (service, instances) in &now {
            let ready = instances.len();
            // Per instance, then summed: an instance read only once (new, or restarted with
            // its counters from zero) adds nothing to this interval rather than its history.
            let mut delta = Reading::default();
            for (key, reading) in instances {
                if let Some(earlier) = before.get(service).and_then(|b| b.get(key)) {
                    delta.plus(&reading.since(earlier));
                }
            }
            let mut row = serde_json::json!({
                "service": service,
                "ready": ready,
                "requests_per_second": (delta.count("request") / seconds * 10.0).round() / 10.0,
            });
            for series in SERIES {
                // Microsecond precision: the buckets say no more.
                let ms = |q| {
                    delta
                        .quantile(series, q)
                        .map(|s| (s * 1e6).round() / 1000.0)
                };
                row[series] = serde_json::json!({ "p50_ms": ms(0.5), "p99_ms": ms(0.99) });
            }
            rows.push(row);
        }
        before = now;
        let runs = control::ask(
            file,
            &format!("runs {}", (seconds * 1000.0).round() as u64),
            Some(Duration::from_secs(10)),
        )?;
        let runs = runs["runs"].as_array().cloned().unwrap_or_default();
        let text = if json {
            format!(
                "{}\n",
                serde_json::json!({ "services": rows, "runs": runs })
            )
        } else {
            table(&rows, seconds) + &runs_table(&runs)
        };
        // A closed output (`| head`) ends it.
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(());
        }
        shown += 1;
    }
    Ok(())
}

fn table(rows: &[serde_json::Value], seconds: f64) -> String {
    let mut text = format!(
        "over {seconds:.1} s; times in ms, p50/p99\n{:<16} {:>5} {:>9}  {:>15} {:>15} {:>15} {:>15} {:>15}\n",
        "SERVICE", "READY", "REQ/S", "REQUEST", "PREPARE", "ACQUIRE", "BEGIN", "EXECUTE"
    );
    for row in rows {
        let pair = |series: &str| {
            let ms = |q: &str| {
                row[series][q]
                    .as_f64()
                    .map_or("-".to_string(), |v| format!("{v:.2}"))
            };
            format!("{}/{}", ms("p50_ms"), ms("p99_ms"))
        };
        let _ = writeln!(
            text,
            "{:<16} {:>5} {:>9.1}  {:>15} {:>15} {:>15} {:>15} {:>15}",
            row["service"].as_str().unwrap_or("?"),
            row["ready"],
            row["requests_per_second"].as_f64().unwrap_or(0.0),
            pair("request"),
            pair("prepare"),
            pair("acquire"),
            pair("begin"),
            pair("execute"),
        );
    }
    text.push('\n');
    text
}

/// The one-shot runs that reported to the runtime: one line per executable, then its phases.
fn runs_table(runs: &[serde_json::Value]) -> String {
    if runs.is_empty() {
        return String::new();
    }
    let mut text = format!(
        "one-shot runs (performance reports); times in ms, p50/p99\n{:<16} {:>7} {:>6} {:>6}  PHASES\n",
        "EXECUTABLE", "RUNS/S", "RUNS", "FAILED"
    );
    for run in runs {
        let phases: Vec<String> = ["total"]
            .into_iter()
            .chain(commondb::protocol::PHASES.iter().copied())
            .filter_map(|p| {
                let q = &run[p];
                Some(format!(
                    "{p} {:.2}/{:.2}",
                    q["p50_ms"].as_f64()?,
                    q["p99_ms"].as_f64()?
                ))
            })
            .collect();
        let _ = writeln!(
            text,
            "{:<16} {:>7.1} {:>6} {:>6}  {}",
            run["executable"].as_str().unwrap_or("?"),
            run["runs_per_second"].as_f64().unwrap_or(0.0),
            run["runs"],
            run["failed"],
            phases.join("  ")
        );
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_interpolated_in_the_buckets_of_what_changed() {
        let before = "commondb_request_duration_seconds_bucket{executable=\"x\",le=\"0.001\"} 10\n\
                      commondb_request_duration_seconds_bucket{executable=\"x\",le=\"0.002\"} 10\n\
                      commondb_request_duration_seconds_bucket{executable=\"x\",le=\"+Inf\"} 10\n";
        let after = "commondb_request_duration_seconds_bucket{executable=\"x\",le=\"0.001\"} 10\n\
                     commondb_request_duration_seconds_bucket{executable=\"x\",le=\"0.002\"} 110\n\
                     commondb_request_duration_seconds_bucket{executable=\"x\",le=\"+Inf\"} 110\n\
                     commondb_request_phase_seconds_bucket{executable=\"x\",phase=\"begin\",le=\"0.0001\"} 4\n\
                     commondb_request_phase_seconds_bucket{executable=\"x\",phase=\"begin\",le=\"+Inf\"} 4\n";
        let (mut a, mut b) = (Reading::default(), Reading::default());
        a.add(before);
        b.add(after);
        let d = b.since(&a);
        assert_eq!(d.count("request"), 100.0);
        // 100 new requests, all between 1 and 2 ms: the median half way.
        let p50 = d.quantile("request", 0.5).unwrap();
        assert!((p50 - 0.0015).abs() < 1e-9, "{p50}");
        assert!(d.quantile("begin", 0.99).unwrap() <= 0.0001);
        assert_eq!(d.quantile("execute", 0.5), None);
    }
}
