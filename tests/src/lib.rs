//! The end-to-end test harness: runs the real binaries as separate processes, each test in a
//! private sandbox (its own HOME and XDG directories, an environment with no `COMMONDB_*`
//! variables of the developer's), and prints everything about a run that did not go as
//! expected.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

use tempfile::TempDir;

/// The path of a workspace binary, built on first use.
///
/// Cargo builds only a package's own binaries for its tests, and these live in other packages,
/// so the harness asks cargo to build them once per test process (a no-op when they are fresh)
/// and finds them beside the test executable's `deps` directory, as ripgrep's tests do.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--bins", "-p", "executables"]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
    });
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with cargo build --bins",
        path.display()
    );
    path
}

/// A private world for one test: HOME, XDG_DATA_HOME and XDG_CONFIG_HOME in a temporary
/// directory, removed afterwards unless the test failed (then its path is printed).
pub struct Sandbox {
    dir: Option<TempDir>,
    env: BTreeMap<String, String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A fresh sandbox.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("e2e-")
            .tempdir()
            .expect("a temporary directory");
        let root = dir.path();
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        env.insert("HOME".into(), root.join("home").display().to_string());
        env.insert(
            "XDG_DATA_HOME".into(),
            root.join("home/.local/share").display().to_string(),
        );
        env.insert(
            "XDG_CONFIG_HOME".into(),
            root.join("home/.config").display().to_string(),
        );
        Sandbox {
            dir: Some(dir),
            env,
        }
    }

    /// The sandbox's root directory.
    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("the sandbox exists").path()
    }

    /// Sets an environment variable for every later run.
    pub fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.insert(key.into(), value.into());
    }

    /// The environment every run gets.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The default data directory of the executables.
    pub fn data_dir(&self) -> PathBuf {
        self.root().join("home/.local/share/commondb")
    }

    /// The default secrets directory.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root().join("home/.config/commondb/secrets")
    }

    /// The user configuration directory.
    pub fn config_dir(&self) -> PathBuf {
        self.root().join("home/.config/commondb")
    }

    /// The embedded database of executable `exe`.
    pub fn database(&self, exe: &str) -> PathBuf {
        self.data_dir().join(format!("{exe}.sqlite3"))
    }

    /// A command for binary `exe` in this sandbox, with no stdin.
    pub fn command(&self, exe: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin(exe));
        cmd.args(args)
            .env_clear()
            .envs(&self.env)
            .current_dir(self.root())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `exe` with `args` and no input.
    pub fn run(&self, exe: &str, args: &[&str]) -> Run {
        Run::of(self.command(exe, args), None)
    }

    /// Runs `exe` with `args`, writing `input` to its stdin.
    pub fn run_with_input(&self, exe: &str, args: &[&str], input: &str) -> Run {
        Run::of(self.command(exe, args), Some(input))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "the failed test's sandbox is kept at {}",
                dir.keep().display()
            );
        }
    }
}

/// A finished run: what was run, its exit code and its output.
pub struct Run {
    /// The command line, for failure messages.
    pub command: String,
    /// The exit code (128 + N for signal N).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to completion, feeding it `input`.
    pub fn of(mut cmd: Command, input: Option<&str>) -> Run {
        let command = format!("{cmd:?}");
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            stdin
                .write_all(input.as_bytes())
                .expect("the child reads its input");
        }
        let output = child.wait_with_output().expect("the child finishes");
        Run::from_output(command, output)
    }

    /// A run from a finished process's output.
    pub fn from_output(command: String, output: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let code = output
            .status
            .code()
            .unwrap_or_else(|| 128 + output.status.signal().unwrap_or(0));
        Run {
            command,
            code,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, printing everything about the run if it differs.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(self.code, expected, "unexpected exit code\n{self}");
        self
    }

    /// Asserts that stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Run {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}\n{self}");
        self
    }

    /// Asserts that stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Run {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}\n{self}");
        self
    }

    /// Asserts that neither stdout nor stderr contains `text`.
    #[track_caller]
    pub fn never_shows(&self, text: &str) -> &Run {
        assert!(
            !self.stdout.contains(text) && !self.stderr.contains(text),
            "the output shows {text:?}\n{self}"
        );
        self
    }

    /// Parses stdout as exactly one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// Opens a SQLite database file directly (to check what the binaries wrote).
pub async fn open_sqlite(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// Runs one `SELECT COUNT(*) …` against a SQLite file.
pub fn sqlite_count(path: &Path, sql: &'static str) -> i64 {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            use sqlx::Connection;
            let mut conn = open_sqlite(path).await;
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(&mut conn)
                .await
                .expect("the query runs");
            conn.close().await.expect("the connection closes");
            n
        })
}
