//! `runmany`: launches many instances of an executable in parallel, measures them, and answers
//! "process or service?".
//!
//! ```text
//! runmany -n 200 create-user                       # 200 processes, each its own sample request
//! runmany -n 200 -j 0 /bin/true                    # all at once; any program runs as given
//! runmany -n 50 create-user --create --username 'u{run}x{i}' --email 'u{run}x{i}@example.com'
//! runmany -n 5000 -j 16 --serve tcp://127.0.0.1:7401 create-user
//! runmany -n 1000 --compare create-user            # processes, then a service it starts itself
//! ```
//!
//! [`processes`] runs instances (`wait4` for each child's peak RSS and CPU, a pidfd watchdog for
//! `--timeout`), [`service`] sends requests to a `--serve` instance, [`fleet`] samples the
//! fleet's memory, [`phases`] reads the executables' performance reports, and [`report`]
//! turns records into the summary that is printed and exported. [`runtime`] is the `fleet`
//! binary: a family of executables run as services, supervised.

pub mod fleet;
pub mod phases;
pub mod plot;
pub mod processes;
pub mod report;
pub mod runtime;
pub mod service;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use commondb::protocol::{self, SampleLine, flags, listen::TCP};
use serde_json::Value;

use report::{Record, Summary};
use service::Endpoint;

/// Processes at once unless `-j` says otherwise. Measured on this project's 2-core machines
/// (`scripts/bench-runmany`, 200 `create-user` runs): 8 at once was the fastest or within 5% of
/// it on SQLite and PostgreSQL, while 200 at once took 2.5× (SQLite) and 1.15× (PostgreSQL) as
/// long with tails ten times longer (README).
pub const DEFAULT_JOBS: u64 = 8;

/// The most instances `-n` (and `--warmup`) may ask for: each is a record in memory and, for a
/// commondb executable, a sample line; a million already takes minutes on any machine.
const MAX_COUNT: u64 = 1_000_000;
/// The most at once `-j` may ask for (a process or a connection each).
const MAX_JOBS: u64 = 10_000;
/// The longest `--timeout`: a day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// How often the fleet's memory is sampled.
const FLEET_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Parser, Debug)]
#[command(
    name = "runmany",
    version,
    about = "Launch many instances of an executable in parallel, measure them, and compare process mode with a service",
    after_help = "EXECUTABLE is a path, or a name found next to runmany, then on PATH. Without TASK ARGS, an executable made with commondb performs its own sample request number i (each valid and unique to this run); any other program runs with exactly the arguments given. In TASK ARGS, {i} is the instance's index and {run} an id unique to this invocation.\n\nExit status: 0 if every instance succeeded, 1 if any failed, 2 for a usage error, 69 if the service cannot be reached, 73 if the --json file cannot be created, 74 if writing it fails.",
    override_usage = "runmany [OPTIONS] -n <N> <EXECUTABLE> [TASK ARGS]..."
)]
struct Cli {
    /// How many instances (or requests) to count, 1 to 1000000
    #[arg(short = 'n', long = "count", value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=MAX_COUNT))]
    count: u64,
    /// How many at once: processes, or connections with --serve; 0 = all at once; at most 10000
    #[arg(short = 'j', long = "jobs", value_name = "J", default_value_t = DEFAULT_JOBS,
          value_parser = clap::value_parser!(u64).range(0..=MAX_JOBS))]
    jobs: u64,
    /// Kill an instance (or give up on a request) after this many seconds (up to 86400); it
    /// counts as failed
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Uncounted runs first (warm caches, first-use setup), 0 to 1000000
    #[arg(long, value_name = "K", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_COUNT))]
    warmup: u64,
    /// Write every instance's record and the summary to FILE as JSON
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the latency distribution (with --compare: both modes, their throughput and memory)
    /// into FILE as SVG
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Send the requests to a running --serve instance instead: tcp://HOST:PORT, unix:PATH, http://HOST:PORT, tls://HOST:PORT, https://HOST:PORT (with --cacert), or through a NATS server: nats://[USER@]HOST:PORT[?prefix=P&tls=true&ca=FILE] (core), nats+js://… (JetStream), or a RabbitMQ queue: amqp[s]://[USER@]HOST:PORT[/VHOST][?prefix=P&ca=FILE] (a broker's user logs in with the executable's broker_password)
    #[arg(long, value_name = "ADDR", conflicts_with = "compare")]
    serve: Option<String>,
    /// With --serve nats://… or nats+js://…: start K worker processes (EXECUTABLE --serve --listen ADDR) for
    /// the run, and stop them after; 1 to 64
    #[arg(long, value_name = "K", requires = "serve",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: Option<u32>,
    /// With --serve tls:// or https://: the CA certificate(s) to trust (PEM)
    #[arg(long, value_name = "FILE", requires = "serve")]
    cacert: Option<PathBuf>,
    /// With --cacert: a client certificate (PEM) to show a service that checks them
    /// (serve.tls_client_ca)
    #[arg(long, value_name = "FILE", requires = "cacert", requires = "key")]
    cert: Option<PathBuf>,
    /// Its private key (PEM), a file only you can read (chmod 600)
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// With --serve: give every request an id (`<run>-<i>`), which the service records with its
    /// answer (a retry is then harmless); always on through nats+js:// and amqp://
    #[arg(long, requires = "serve")]
    request_ids: bool,
    /// Run the workload as processes, then against a service runmany starts (and stops), side by side
    #[arg(long)]
    compare: bool,
    /// Ask commondb executables where their time goes (--performance-report), and print the median per phase
    #[arg(long)]
    phases: bool,
    /// Print only the report (no notes, no progress bar)
    #[arg(short, long)]
    quiet: bool,
    /// The program to run
    #[arg(value_name = "EXECUTABLE")]
    exe: String,
    /// Its arguments, with {i} and {run} replaced per instance
    #[arg(
        value_name = "TASK ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

impl Cli {
    /// How many run at once: `-j`, all for `-j 0`, never more than there are.
    fn at_once(&self) -> u64 {
        match self.jobs {
            0 => self.count,
            j => j.min(self.count),
        }
    }
}

/// A failure of runmany itself (not of an instance), with its exit code.
struct Fatal(u8, String);

/// `runmany`'s entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Fatal(code, message)) => {
            eprintln!("runmany: error: {message}");
            ExitCode::from(code)
        }
    }
}

fn usage(message: impl Into<String>) -> Fatal {
    Fatal(2, message.into())
}

/// What each instance does.
#[derive(Clone)]
enum Requests {
    /// A commondb executable's own samples (`--self-samples`).
    Samples(Vec<Sample>),
    /// The task arguments given, with `{i}` and `{run}`.
    Template(Vec<String>),
    /// A program that is not a commondb executable, given no arguments.
    Plain,
}

#[derive(Clone)]
struct Sample {
    argv: Vec<String>,
    /// The request's JSON text, for a service.
    request: String,
    /// What the process reads on its standard input.
    input: Option<String>,
}

impl Requests {
    /// The arguments of instance `i`.
    fn argv(&self, i: u64, run: &str) -> Vec<String> {
        match self {
            Requests::Samples(s) => s[i as usize].argv.clone(),
            Requests::Template(args) => args.iter().map(|a| fill(a, i, run)).collect(),
            Requests::Plain => Vec::new(),
        }
    }

    /// What instance `i` reads on its standard input, if anything.
    fn input(&self, i: u64) -> Option<String> {
        match self {
            Requests::Samples(s) => s[i as usize].input.clone(),
            _ => None,
        }
    }

    /// Request `i` for a service, as a line of the line protocol (a sample's is its JSON
    /// object, which is also an HTTP body).
    fn request(&self, i: u64, run: &str) -> String {
        match self {
            Requests::Samples(s) => s[i as usize].request.clone(),
            Requests::Template(args) => {
                let words: Vec<String> = args.iter().map(|a| fill(a, i, run)).collect();
                shlex::try_join(words.iter().map(String::as_str))
                    .unwrap_or_else(|_| words.join(" "))
            }
            Requests::Plain => String::new(),
        }
    }

    /// The task's verb, from the samples (`--create` → `create`).
    fn verb(&self) -> Option<String> {
        match self {
            Requests::Samples(s) => s
                .first()?
                .argv
                .first()?
                .strip_prefix("--")
                .map(String::from),
            _ => None,
        }
    }
}

/// Replaces `{i}` and `{run}` in `arg`.
fn fill(arg: &str, i: u64, run: &str) -> String {
    arg.replace("{i}", &i.to_string()).replace("{run}", run)
}

fn run(cli: &Cli) -> Result<bool, Fatal> {
    if cli.count == 0 {
        return Err(usage("-n must be at least 1"));
    }
    let timeout = match cli.timeout {
        Some(t) if !(t > 0.0 && t <= MAX_TIMEOUT_SECS) => {
            return Err(usage(format!(
                "--timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}"
            )));
        }
        t => t.map(Duration::from_secs_f64),
    };
    let exe = resolve(&cli.exe)?;
    let note = |m: String| {
        if !cli.quiet {
            eprintln!("runmany: {m}");
        }
    };
    let run_id = run_id();
    let total = cli.warmup + cli.count;
    let requests = if cli.args.is_empty() {
        match samples(&exe, total, &run_id) {
            Some(s) => {
                seed(&exe, total, &run_id, &note)?;
                Requests::Samples(s)
            }
            None if cli.serve.is_some() || cli.compare => {
                return Err(usage(format!(
                    "{} gives no sample requests (it is not a commondb executable): give its task arguments",
                    exe.display()
                )));
            }
            None => Requests::Plain,
        }
    } else {
        Requests::Template(cli.args.clone())
    };
    let name = exe_name(&cli.exe);
    let mut outcome = Outcome::default();
    if let Some(addr) = &cli.serve {
        let endpoint = Endpoint::parse(addr).map_err(usage)?.of_executable(&name);
        let workers = match cli.workers {
            Some(k) if matches!(endpoint, Endpoint::Nats(..) | Endpoint::Amqp(..)) => {
                let mut started = Vec::new();
                for _ in 0..k {
                    match start_serving(&exe, addr) {
                        Ok(worker) => started.push(worker),
                        Err(e) => {
                            // Those already started would answer later runs: they go too.
                            for (child, _) in started {
                                stop_serving(child);
                            }
                            return Err(e);
                        }
                    }
                }
                note(format!(
                    "started {k} worker(s): {} --serve --listen {addr}",
                    exe.display()
                ));
                started
            }
            Some(_) => {
                return Err(usage(
                    "--workers starts workers on a broker: give --serve nats://, nats+js:// or amqp://HOST:PORT",
                ));
            }
            None => Vec::new(),
        };
        let server_pid = endpoint.port().and_then(listener_pid);
        let summary = serve_run(
            cli, &requests, &run_id, &endpoint, timeout, server_pid, &note,
        );
        for (child, _) in workers {
            stop_serving(child);
        }
        outcome.add("serve", summary?);
    } else {
        let summary = process_run(cli, &exe, &name, &requests, &run_id, timeout, &note)?;
        outcome.add("processes", summary);
        if cli.compare {
            let summary = compare_serve(cli, &exe, &requests, timeout, &note)?;
            outcome.add("serve", summary);
        }
    }
    outcome.print(cli.compare);
    if let Some(path) = &cli.json {
        outcome.export(path)?;
    }
    if let Some(path) = &cli.plot {
        outcome.plot(path, &name)?;
    }
    Ok(outcome.all_ok())
}

#[derive(Default)]
struct Outcome {
    runs: Vec<(&'static str, Summary, Vec<Record>)>,
}

impl Outcome {
    fn add(&mut self, mode: &'static str, (summary, records): (Summary, Vec<Record>)) {
        self.runs.push((mode, summary, records));
    }

    fn all_ok(&self) -> bool {
        self.runs.iter().all(|(_, s, _)| s.all_ok())
    }

    fn print(&self, side_by_side: bool) {
        for (_, summary, _) in &self.runs {
            print!("{summary}");
        }
        if side_by_side && let [(_, p, _), (_, s, _)] = &self.runs[..] {
            print!("{}", comparison(p, s));
        }
    }

    /// Draws the runs into the SVG file `path` (73 when it cannot be written).
    fn plot(&self, path: &Path, name: &str) -> Result<(), Fatal> {
        let runs: Vec<plot::Run<'_>> = self
            .runs
            .iter()
            .map(|(mode, summary, records)| plot::Run {
                mode,
                summary,
                records,
            })
            .collect();
        let title = match &self.runs[..] {
            [(_, s, _)] => format!("runmany: {name}, {} × {} at once", s.count, s.jobs),
            _ => format!("runmany --compare: {name}, processes or a service?"),
        };
        plot::draw(path, &title, &runs).map_err(|e| Fatal(73, e))
    }

    fn export(&self, path: &Path) -> Result<(), Fatal> {
        let mut doc = serde_json::Map::new();
        for (mode, summary, records) in &self.runs {
            doc.insert(
                (*mode).into(),
                serde_json::json!({ "summary": summary, "records": records }),
            );
        }
        let text = serde_json::to_string_pretty(&Value::Object(doc)).unwrap_or_default();
        std::fs::write(path, text + "\n")
            // 73 when the file cannot be created, 74 when writing it fails (a full disk).
            .map_err(|e| {
                let code = if e.kind() == std::io::ErrorKind::StorageFull {
                    74
                } else {
                    73
                };
                Fatal(code, format!("cannot write {}: {e}", path.display()))
            })
    }
}

/// The two runs side by side.
fn comparison(p: &Summary, s: &Summary) -> String {
    let lat = |x: &Summary, f: fn(&report::Stats) -> f64| {
        x.latency_ms
            .as_ref()
            .map_or("-".into(), |l| format!("{:.2}", f(l)))
    };
    let mem = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let rows = [
        (
            "succeeded",
            p.succeeded.to_string(),
            s.succeeded.to_string(),
        ),
        ("failed", p.failed.to_string(), s.failed.to_string()),
        (
            "wall ms",
            format!("{:.0}", p.wall_ms),
            format!("{:.0}", s.wall_ms),
        ),
        (
            "throughput/s",
            format!("{:.1}", p.throughput_per_s),
            format!("{:.1}", s.throughput_per_s),
        ),
        ("latency p50 ms", lat(p, |l| l.p50), lat(s, |l| l.p50)),
        ("latency p90 ms", lat(p, |l| l.p90), lat(s, |l| l.p90)),
        ("latency p99 ms", lat(p, |l| l.p99), lat(s, |l| l.p99)),
        ("latency max ms", lat(p, |l| l.max), lat(s, |l| l.max)),
        (
            "memory",
            format!("{} (fleet PSS peak)", mem(p.fleet_pss_peak_kib)),
            format!(
                "{} (service RSS after)",
                mem(s.server_rss_kib.map(|(_, a)| a))
            ),
        ),
    ];
    let mut out = format!("\n{:<16}{:>28}  {:>28}\n", "", "processes", "service");
    for (name, a, b) in rows {
        out.push_str(&format!("{name:<16}{a:>28}  {b:>28}\n"));
    }
    if s.throughput_per_s > 0.0 && p.throughput_per_s > 0.0 {
        out.push_str(&format!(
            "the service did {:.1}× the throughput of processes\n",
            s.throughput_per_s / p.throughput_per_s
        ));
    }
    out
}

fn progress_bar(cli: &Cli, total: u64, what: &str) -> indicatif::ProgressBar {
    if cli.quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

fn process_run(
    cli: &Cli,
    exe: &Path,
    name: &str,
    requests: &Requests,
    run_id: &str,
    timeout: Option<Duration>,
    note: &dyn Fn(String),
) -> Result<(Summary, Vec<Record>), Fatal> {
    let perf_dir = if cli.phases {
        let dir = std::env::temp_dir().join(format!("runmany-{run_id}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Fatal(73, format!("cannot create {}: {e}", dir.display())))?;
        Some(dir)
    } else {
        None
    };
    let argv = |i: u64| requests.argv(i, run_id);
    let input = |i: u64| requests.input(i);
    let mut plan = processes::Plan {
        exe,
        argv: &argv,
        count: cli.warmup,
        first: 0,
        jobs: cli.at_once(),
        timeout,
        perf_dir: None,
        env: &[],
        input: &input,
    };
    if cli.warmup > 0 {
        note(format!("warming up: {} uncounted run(s)", cli.warmup));
        processes::run(&plan, None, &|| {});
    }
    plan.count = cli.count;
    plan.first = cli.warmup;
    plan.perf_dir = perf_dir.as_deref();
    let bar = progress_bar(cli, cli.count, "processes");
    let (fleet, sampler) = fleet::Fleet::start(FLEET_INTERVAL);
    let started = Instant::now();
    let records = processes::run(&plan, Some(&fleet), &|| bar.inc(1));
    let wall = started.elapsed();
    let (peak, samples) = fleet.finish(sampler);
    bar.finish_and_clear();
    if let Some(dir) = perf_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut summary = Summary::new("processes", name.to_string(), cli.at_once(), &records, wall);
    summary.fleet_pss_peak_kib = peak;
    summary.fleet_samples = samples;
    Ok((summary, records))
}

/// The executable's name as `EXECUTABLE` gives it (a path or a name): its file name, which
/// names its subject, queue, settings and secrets.
fn exe_name(given: &str) -> String {
    Path::new(given)
        .file_name()
        .map_or_else(|| given.to_string(), |n| n.to_string_lossy().into_owned())
}

fn serve_run(
    cli: &Cli,
    requests: &Requests,
    run_id: &str,
    endpoint: &Endpoint,
    timeout: Option<Duration>,
    server_pid: Option<u32>,
    note: &dyn Fn(String),
) -> Result<(Summary, Vec<Record>), Fatal> {
    let (make, run) = (requests.clone(), run_id.to_string());
    // A broker is logged in to as the executable does, with its own broker_password.
    let brokers = match endpoint {
        Endpoint::Nats(..) | Endpoint::Amqp(..) => {
            commondb::brokers::BrokerSecrets::of_executable(&exe_name(&cli.exe))
                .map_err(|e| Fatal(e.exit_code(), service::described(&e)))?
        }
        _ => commondb::brokers::BrokerSecrets::default(),
    };
    let mut load = service::Load {
        endpoint: endpoint.clone(),
        verb: requests.verb(),
        request: Arc::new(move |i| make.request(i, &run)),
        count: cli.warmup,
        first: 0,
        connections: cli.at_once(),
        timeout,
        ids: (cli.request_ids || endpoint.durable()).then(|| run_id.to_string()),
        tls: match &cli.cacert {
            Some(path) => Some(
                service::tls_client(path, cli.cert.as_deref().zip(cli.key.as_deref()))
                    .map_err(usage)?,
            ),
            None => None,
        },
        brokers,
    };
    let unreachable = |e: String| Fatal(69, e);
    if cli.warmup > 0 {
        note(format!("warming up: {} uncounted request(s)", cli.warmup));
        service::run(&load, Arc::new(|| {})).map_err(unreachable)?;
    }
    load.count = cli.count;
    load.first = cli.warmup;
    let before = server_pid.and_then(fleet::rss_kib);
    let bar = progress_bar(cli, cli.count, "requests");
    let tick = bar.clone();
    let started = Instant::now();
    let records = service::run(&load, Arc::new(move || tick.inc(1))).map_err(unreachable)?;
    let wall = started.elapsed();
    bar.finish_and_clear();
    let after = server_pid.and_then(fleet::rss_kib);
    let mut summary = Summary::new("serve", endpoint.to_string(), cli.at_once(), &records, wall);
    summary.server_rss_kib = before.zip(after);
    Ok((summary, records))
}

/// Starts `exe --serve` on an ephemeral loopback port, runs the same workload against it with
/// fresh sample requests, and stops it with SIGTERM.
fn compare_serve(
    cli: &Cli,
    exe: &Path,
    requests: &Requests,
    timeout: Option<Duration>,
    note: &dyn Fn(String),
) -> Result<(Summary, Vec<Record>), Fatal> {
    let run_id = run_id();
    let requests = match requests {
        Requests::Samples(_) => {
            let total = cli.warmup + cli.count;
            let samples = samples(exe, total, &run_id)
                .ok_or_else(|| usage("the executable stopped giving sample requests"))?;
            seed(exe, total, &run_id, note)?;
            Requests::Samples(samples)
        }
        other => other.clone(),
    };
    let (child, address) = start_serving(exe, &format!("{TCP}127.0.0.1:0"))?;
    note(format!("started {} --serve on {address}", exe.display()));
    let endpoint = Endpoint::parse(&address).map_err(usage)?;
    let result = serve_run(
        cli,
        &requests,
        &run_id,
        &endpoint,
        timeout,
        Some(child.id()),
        note,
    );
    stop_serving(child);
    result
}

/// Starts `exe --serve --listen listen` and waits for its ready line; the process and the
/// first address it names.
fn start_serving(exe: &Path, listen: &str) -> Result<(std::process::Child, String), Fatal> {
    use std::io::BufRead;
    let mut child = Command::new(exe)
        .args([
            &format!("--{}", flags::SERVE),
            &format!("--{}", flags::LISTEN),
            listen,
        ])
        // It dies with runmany, however runmany dies.
        .env(protocol::PARENT_PID_VAR, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Fatal(69, format!("cannot start {} --serve: {e}", exe.display())))?;
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut address = None;
    let mut said = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(ready) = protocol::parse_ready_line(&line) {
            address = ready.addresses.into_iter().next();
            break;
        }
        said.push_str(&line);
        said.push('\n');
    }
    // Keep draining its stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    match address {
        Some(address) => Ok((child, address)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Fatal(
                69,
                format!("{} --serve did not start:\n{said}", exe.display()),
            ))
        }
    }
}

/// SIGTERM to a service runmany started, and waits for it to finish what it took.
fn stop_serving(mut child: std::process::Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = child.wait();
}

/// The executable: a path as given, else a name next to runmany's own binary, else on PATH.
fn resolve(exe: &str) -> Result<PathBuf, Fatal> {
    runtime::find_executable(exe).ok_or_else(|| {
        usage(format!(
            "{exe} was not found (as a path, next to runmany, or on PATH)"
        ))
    })
}

/// The executable's first `n` sample requests of run `run`, if it is a commondb executable.
fn samples(exe: &Path, n: u64, run: &str) -> Option<Vec<Sample>> {
    let out = Command::new(exe)
        .args([
            &format!("--{}", flags::SAMPLES),
            &n.to_string(),
            &format!("--{}", flags::RUN),
            run,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let samples: Option<Vec<Sample>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let line: SampleLine = serde_json::from_str(l).ok()?;
            Some(Sample {
                argv: line.argv,
                request: line.request.to_string(),
                input: line.input,
            })
        })
        .collect();
    samples.filter(|s| s.len() as u64 == n)
}

/// Has the executable write the rows its first `n` samples of run `run` need (`--self-seed`:
/// a read, a change or a delete must find its row on a fresh database), and says so.
fn seed(exe: &Path, n: u64, run: &str, note: &dyn Fn(String)) -> Result<(), Fatal> {
    let out = Command::new(exe)
        .args([
            &format!("--{}", flags::SEED),
            &n.to_string(),
            &format!("--{}", flags::RUN),
            run,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Fatal(69, format!("cannot start {}: {e}", exe.display())))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(Fatal(
            out.status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1),
            format!(
                "{} --{} could not write the rows the samples need:\n{why}",
                exe.display(),
                flags::SEED
            ),
        ));
    }
    if !said.starts_with("nothing to seed") {
        note(said);
    }
    Ok(())
}

/// A short id unique to this invocation (sample usernames must stay short).
fn run_id() -> String {
    let n = getrandom::u64().unwrap_or_else(|_| processes::unix_nanos() as u64);
    format!("{:08x}", n as u32)
}

/// The process listening on TCP `port` on this machine, if it can be found in `/proc`.
fn listener_pid(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = f.get(1)?.rsplit_once(':')?.1;
                // State 0A is LISTEN.
                (u16::from_str_radix(local_port, 16).ok()? == port && f.get(3)? == &"0A")
                    .then(|| f.get(9).map(|s| s.to_string()))
                    .flatten()
            })
        })?;
    let target = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
            .then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_per_instance() {
        assert_eq!(fill("u{run}x{i}@{i}", 7, "ab"), "uabx7@7");
        let t = Requests::Template(vec!["--name".into(), "it's {i}".into()]);
        assert_eq!(t.argv(3, "r"), ["--name", "it's 3"]);
        assert_eq!(t.request(3, "r"), r#"--name "it's 3""#);
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["runmany", "-n", "5", "x", "--create", "-j", "3"]).unwrap();
        assert_eq!(cli.args, ["--create", "-j", "3"]);
        assert_eq!(cli.jobs, DEFAULT_JOBS);
    }
}
