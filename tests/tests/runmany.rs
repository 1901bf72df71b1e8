//! `runmany` end to end: the real runner launching the real binaries. Its report must agree with
//! the database: the rows written equal the successes reported, exactly.

use commondb::protocol::listen::{HTTP, TCP};
use e2e::{Backend, BackendSandbox, Run, Sandbox, on_every_backend};
use serde_json::Value;

const EXE: &str = "create-user";

on_every_backend!(
    two_hundred_sample_runs_write_exactly_the_successes,
    a_service_gets_the_same_requests_and_the_rows_match,
);

fn runmany(sb: &Sandbox, args: &[&str]) -> Run {
    Run::of(sb.command("runmany", args), None)
}

fn users(sb: &BackendSandbox) -> i64 {
    sb.count(EXE, "SELECT COUNT(*) FROM users")
}

fn exported(sb: &Sandbox, file: &str) -> Value {
    let text = std::fs::read_to_string(sb.root().join(file)).expect("the JSON export exists");
    serde_json::from_str(&text).expect("the export is JSON")
}

fn set_up(backend: Backend) -> Option<BackendSandbox> {
    let sb = BackendSandbox::new(backend)?;
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    Some(sb)
}

/// `runmany -n 200 create-user` exactly as written (all at once too, against PostgreSQL's
/// default `max_connections`): every instance performs its own sample request.
fn two_hundred_sample_runs_write_exactly_the_successes(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    let run = runmany(&sb, &["-n", "200", EXE]);
    run.code(0)
        .stdout_has("200 × create-user")
        .stdout_has("succeeded   200   failed 0");
    assert_eq!(users(&sb), 200, "{run}");
    let run = runmany(&sb, &["-n", "200", "-j", "0", "--json", "all.json", EXE]);
    run.code(0);
    let doc = exported(&sb, "all.json");
    let summary = &doc["processes"]["summary"];
    assert_eq!(summary["succeeded"], 200, "{run}");
    assert_eq!(summary["jobs"], 200);
    assert_eq!(users(&sb), 400, "{run}");
}

fn a_service_gets_the_same_requests_and_the_rows_match(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    let served = sb.serve(
        EXE,
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            "http://127.0.0.1:0",
        ],
    );
    for (scheme, n) in [(TCP, "300"), (HTTP, "200")] {
        let addr = format!("{scheme}{}", served.address(scheme));
        let run = runmany(&sb, &["-n", n, "-j", "8", "--serve", &addr, EXE]);
        run.code(0)
            .stdout_has(&format!("{n} × {addr} (serve, 8 connections)"))
            .stdout_has("service RSS");
    }
    assert_eq!(users(&sb), 500);
    // Explicit arguments go over the line protocol, with the placeholders filled.
    let addr = format!("{TCP}{}", served.address(TCP));
    let run = runmany(
        &sb,
        &[
            "-n",
            "20",
            "--serve",
            &addr,
            EXE,
            "--username",
            "t{run}x{i}",
            "--email",
            "t{run}x{i}@example.com",
        ],
    );
    run.code(0);
    assert_eq!(users(&sb), 520);
    let (code, stderr) = served.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn placeholders_failures_and_the_json_export() {
    let sb = Sandbox::new();
    let run = runmany(
        &sb,
        &[
            "-n",
            "6",
            "-j",
            "3",
            "--json",
            "out.json",
            EXE,
            "--create",
            "--username",
            "u{run}x{i}",
            "--email",
            "u{i}@example.com",
        ],
    );
    run.code(0);
    // The same username six times: one success, five conflicts grouped under exit 73.
    let dup = runmany(
        &sb,
        &[
            "-n",
            "6",
            "--json",
            "dup.json",
            EXE,
            "--create",
            "--username",
            "same",
            "--email",
            "s@example.com",
        ],
    );
    dup.code(1)
        .stdout_has("succeeded   1   failed 5")
        .stdout_has("73 × 5")
        .stdout_has("already taken");
    assert_eq!(
        e2e::sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users"),
        7
    );

    let doc = exported(&sb, "out.json");
    let records = doc["processes"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 6);
    for (k, r) in records.iter().enumerate() {
        assert_eq!(r["i"], k as u64);
        assert_eq!(r["ok"], true);
        assert_eq!(r["code"], 0);
        assert!(r["latency_us"].as_u64().unwrap() > 0);
        assert!(r["max_rss_kib"].as_u64().unwrap() > 0);
        assert!(r["user_us"].is_u64() && r["system_us"].is_u64());
    }
    let summary = &doc["processes"]["summary"];
    for key in ["wall_ms", "throughput_per_s"] {
        assert!(summary[key].as_f64().unwrap() > 0.0, "{key}: {summary}");
    }
    for key in ["min", "mean", "p50", "p90", "p99", "max"] {
        assert!(summary["latency_ms"][key].is_number(), "{key}: {summary}");
    }
    let dup = exported(&sb, "dup.json");
    let failures = &dup["processes"]["summary"]["failures"];
    assert_eq!(failures[0]["code"], 73);
    assert_eq!(failures[0]["count"], 5);
    assert!(
        failures[0]["example"]
            .as_str()
            .unwrap()
            .contains("already taken")
    );
    // Failed runs stay out of the latency figures.
    assert_eq!(dup["processes"]["summary"]["succeeded"], 1);
}

#[test]
fn timeouts_kill_and_count_as_failures_and_any_program_runs() {
    let sb = Sandbox::new();
    let run = runmany(&sb, &["-n", "3", "--timeout", "0.2", "/bin/sleep", "30"]);
    run.code(1)
        .stdout_has("failed 3 (3 timed out)")
        .stdout_has("137 × 3");
    // What an instance started is killed with it: a child holding stderr does not hold the run.
    let started = std::time::Instant::now();
    runmany(
        &sb,
        &[
            "-n",
            "2",
            "--timeout",
            "0.3",
            "/bin/sh",
            "-c",
            "sleep 30; true",
        ],
    )
    .code(1)
    .stdout_has("137 × 2 (2 timed out)");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let run = runmany(&sb, &["-n", "50", "-j", "0", "/bin/true"]);
    run.code(0).stdout_has("50 × true (processes, 50 at once)");
    let run = runmany(&sb, &["-n", "4", "/bin/false"]);
    run.code(1).stdout_has("1 × 4");
    let run = runmany(&sb, &["-n", "2", "/bin/sh", "-c", "exit $(( {i} + 3 ))"]);
    run.code(1).stdout_has("3 × 1").stdout_has("4 × 1");
}

#[test]
fn warmup_runs_are_not_counted_and_phases_are_reported() {
    let sb = Sandbox::new();
    let run = runmany(&sb, &["-n", "10", "--warmup", "3", "--phases", EXE]);
    run.code(0)
        .stdout_has("10 × create-user")
        .stdout_has("phases ms (p50)")
        .stdout_has("connect")
        .stdout_has("commit");
    assert_eq!(
        e2e::sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users"),
        13
    );
}

#[test]
fn compare_runs_both_modes_side_by_side() {
    let sb = Sandbox::new();
    let run = runmany(
        &sb,
        &[
            "-n",
            "40",
            "-j",
            "4",
            "--compare",
            "--json",
            "cmp.json",
            EXE,
        ],
    );
    run.code(0)
        .stdout_has("processes")
        .stdout_has("service")
        .stdout_has("throughput/s")
        .stdout_has("the service did");
    assert_eq!(
        e2e::sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users"),
        80
    );
    let doc = exported(&sb, "cmp.json");
    assert_eq!(doc["processes"]["summary"]["succeeded"], 40);
    assert_eq!(doc["serve"]["summary"]["succeeded"], 40);
}

#[test]
fn bad_usage_is_refused_with_the_reason() {
    let sb = Sandbox::new();
    runmany(&sb, &["-n", "3", "no-such-program"])
        .code(2)
        .stderr_has("was not found");
    runmany(&sb, &["-n", "0", "/bin/true"])
        .code(2)
        .stderr_has("at least 1");
    runmany(&sb, &["-n", "3", "--timeout", "-1", "/bin/true"]).code(2);
    runmany(&sb, &["-n", "3", "--serve", "tcp://127.0.0.1:1", EXE])
        .code(69)
        .stderr_has("cannot connect");
    runmany(&sb, &["-n", "3", "--serve", "ftp://x", EXE]).code(2);
    for typo in ["tcp://127.0.0.1:99999", "tcp://127.0.0.1", "http://:7401"] {
        runmany(&sb, &["-n", "3", "--serve", typo, EXE])
            .code(2)
            .stderr_has("HOST:PORT with a port from 1 to 65535");
    }
    // A --json file that cannot be written: 73 when it cannot be created, 74 when the disk is
    // full.
    runmany(&sb, &["-n", "1", "--json", "/dev/full", "/bin/true"])
        .code(74)
        .stderr_has("cannot write /dev/full");
    runmany(
        &sb,
        &["-n", "1", "--json", "/no/such/dir/x.json", "/bin/true"],
    )
    .code(73)
    .stderr_has("cannot write /no/such/dir/x.json");
    runmany(&sb, &["-n", "3", "--compare", "/bin/true"])
        .code(2)
        .stderr_has("no sample requests");
}

#[test]
fn counts_jobs_and_timeouts_beyond_their_range_are_usage_errors_naming_it() {
    let sb = Sandbox::new();
    for (args, range) in [
        (&["-n", "1000000000000", "create-user"][..], "0..=1000000"),
        (
            &["-n", "1", "--warmup", "18446744073709551615", "create-user"][..],
            "0..=1000000",
        ),
        (
            &["-n", "1", "-j", "4294967296", "create-user"][..],
            "0..=10000",
        ),
        (
            &["-n", "1", "--timeout", "1e300", "create-user"][..],
            "at most 86400",
        ),
        (
            &["-n", "1", "--timeout", "NaN", "create-user"][..],
            "at most 86400",
        ),
    ] {
        runmany(&sb, args).code(2).stderr_has(range);
    }
    sb.run("create-user", &["--self-samples", "2000001"])
        .code(2)
        .stderr_has("0..=2000000");
}

/// `--plot FILE.svg` draws the run: with `--compare`, both modes' latency distributions on one
/// chart (labelled with their medians and counts), their throughput and their memory; alone,
/// the one distribution. A file that cannot be written is refused with 73.
#[test]
fn plot_draws_the_distributions_throughput_and_memory_as_svg() {
    let sb = Sandbox::new();
    let compared = runmany(
        &sb,
        &[
            "-q",
            "-n",
            "20",
            "-j",
            "2",
            "--compare",
            "--plot",
            "cmp.svg",
            EXE,
        ],
    );
    compared.code(0);
    let svg = std::fs::read_to_string(sb.root().join("cmp.svg")).expect("the plot exists");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for text in [
        "processes or a service?",
        "latency distribution",
        "processes (p50 ",
        "serve (p50 ",
        "n = 20)",
        "throughput (requests per second)",
        "memory (MiB)",
    ] {
        assert!(svg.contains(text), "the plot lacks {text:?}");
    }
    // One line per mode, in its own colour (and its legend's sample).
    for colour in ["#1F77B4", "#D62728"] {
        let line = format!("stroke=\"{colour}\" stroke-width=\"2\"");
        assert_eq!(svg.matches(&line).count(), 2, "{colour}");
    }

    runmany(&sb, &["-q", "-n", "10", "--plot", "one.svg", EXE]).code(0);
    let one = std::fs::read_to_string(sb.root().join("one.svg")).expect("the plot exists");
    assert!(one.contains("processes (p50 ") && !one.contains("serve (p50 "));
    assert!(!one.contains("throughput (requests per second)"));

    runmany(&sb, &["-q", "-n", "2", "--plot", "no/such/dir/x.svg", EXE])
        .code(73)
        .stderr_has("x.svg");
}
