//! `fleet.toml`: the services of a fleet, read with `config` (and `FLEET_…` environment
//! overrides, `__` between levels: `FLEET_SERVICES__LOGIN__SCALE=4`; a service whose name has
//! a `-` cannot be named in a variable, whose `_` config reads as written).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The most instances of one service.
pub const MAX_SCALE: u32 = 64;

/// A fleet: its services, started in the order of their names (a service's `depends_on` first).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// The services, by name.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// How long a stopping instance has after SIGTERM before SIGKILL, in milliseconds.
    #[serde(default = "grace_ms")]
    pub grace_ms: u64,
    /// The HTTP entry point in front of the services (none unless configured).
    #[serde(default)]
    pub gateway: Option<Gateway>,
    /// The services' log files.
    #[serde(default)]
    pub logs: Logs,
}

/// `[gateway]`: `POST /<service>` (and `GET` for a read task) routed to the service's ready
/// instances.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `http://HOST:PORT` or `https://HOST:PORT`; a host other than loopback needs
    /// `token_file`, and TLS unless `allow_plaintext`.
    pub listen: String,
    /// A file only its owner can read holding the bearer token every request must carry
    /// (`Authorization: Bearer …`); required off loopback.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// For `https://`: the certificate chain (PEM), read again on SIGHUP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// For `https://`: its private key (PEM, a file only its owner can read).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Lets `http://` listen off loopback (still with the token): the operator's word that the
    /// network is trusted, since requests and the token travel in clear.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// How long a request waits for an instance that is starting (a restart, a scale-up)
    /// before it is answered 503, in milliseconds.
    #[serde(default = "wait_ms")]
    pub wait_ms: u64,
    /// The largest request body, in bytes.
    #[serde(default = "max_body_bytes")]
    pub max_body_bytes: usize,
}

/// `[logs]`: every service's lines, also in `<dir>/<service>.log`, rotated by size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// The directory (relative to fleet.toml's); default `$XDG_STATE_HOME/commondb/fleet/<id>`
    /// (`~/.local/state/…`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A log file past this size is rotated (`.1`, `.2`, …).
    #[serde(default = "max_bytes")]
    pub max_bytes: u64,
    /// How many rotated files are kept.
    #[serde(default = "keep")]
    pub keep: u32,
}

impl Default for Logs {
    fn default() -> Logs {
        Logs {
            dir: None,
            max_bytes: max_bytes(),
            keep: keep(),
        }
    }
}

/// What restarts an instance that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Whatever its exit.
    Always,
    /// Only an exit other than 0.
    OnFailure,
    /// Never (a one-shot).
    Never,
}

/// One service: an executable run with `--serve`, `scale` times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The executable: a path, or a name found next to `fleet` or on `PATH`.
    pub exe: String,
    /// How many instances.
    #[serde(default = "one")]
    pub scale: u32,
    /// Where each instance listens (its `--listen` addresses; default: a free loopback port
    /// for the line protocol and one for HTTP).
    #[serde(default = "loopback")]
    pub listen: Vec<String>,
    /// Its environment, besides `fleet`'s own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A file of `KEY=VALUE` lines (relative to fleet.toml's directory) added to `env`; what
    /// `env` sets wins.
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// The names `env` took from `env_file` (`fleet export systemd` leaves them in the file).
    #[serde(skip)]
    pub from_env_file: Vec<String>,
    /// Services started (and ready) before this one.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// What restarts an instance that exited.
    #[serde(default = "always")]
    pub restart: Restart,
    /// The first wait before a restart, in milliseconds; it doubles with every failure in a
    /// row, up to `backoff_max_ms`, with ±20 % jitter.
    #[serde(default = "backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// The longest wait before a restart, in milliseconds.
    #[serde(default = "backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// After how long up an instance counts as healthy, its failures forgotten.
    #[serde(default = "healthy_after_ms")]
    pub healthy_after_ms: u64,
    /// How many failures in a row make the service `failed` (no more restarts).
    #[serde(default = "max_failures")]
    pub max_failures: u32,
}

fn one() -> u32 {
    1
}
fn loopback() -> Vec<String> {
    vec!["tcp://127.0.0.1:0".into(), "http://127.0.0.1:0".into()]
}
fn always() -> Restart {
    Restart::Always
}
fn backoff_initial_ms() -> u64 {
    100
}
fn backoff_max_ms() -> u64 {
    30_000
}
fn healthy_after_ms() -> u64 {
    10_000
}
fn max_failures() -> u32 {
    5
}
fn grace_ms() -> u64 {
    10_000
}
fn wait_ms() -> u64 {
    2_000
}
fn max_body_bytes() -> usize {
    1 << 20
}
fn max_bytes() -> u64 {
    10 << 20
}
fn keep() -> u32 {
    3
}

/// Names a service cannot take: the runtime's own label, and the gateway's own paths.
const RESERVED: [&str; 3] = ["fleet", "healthz", "metrics"];

impl Fleet {
    /// Reads `path` (TOML) with the `FLEET_…` overrides, and checks it.
    pub fn load(path: &Path) -> Result<Fleet, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read {}: {e} (write one with `fleet init`)",
                path.display()
            )
        })?;
        if text.len() > 1 << 20 {
            return Err(format!("{} is larger than 1 MiB", path.display()));
        }
        let mut fleet: Fleet = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("FLEET")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(g) = &mut fleet.gateway {
            for file in [&mut g.token_file, &mut g.tls_cert, &mut g.tls_key]
                .into_iter()
                .flatten()
            {
                *file = base.join(&*file);
            }
        }
        for (name, service) in &mut fleet.services {
            if let Some(file) = &service.env_file {
                let file = base.join(file);
                let vars =
                    read_env_file(&file).map_err(|e| format!("services.{name}.env_file: {e}"))?;
                for (key, value) in vars {
                    if !service.env.contains_key(&key) {
                        service.from_env_file.push(key.clone());
                        service.env.insert(key, value);
                    }
                }
                service.env_file = Some(std::fs::canonicalize(&file).unwrap_or(file));
            }
        }
        fleet.check()?;
        Ok(fleet)
    }

    fn check(&self) -> Result<(), String> {
        if self.services.is_empty() {
            return Err("the fleet has no services: add a [services.NAME] table".into());
        }
        for (name, s) in &self.services {
            if !valid_name(name) {
                return Err(format!(
                    "service name {name:?} is not valid: use 1 to 64 of a-z, 0-9 and -"
                ));
            }
            if RESERVED.contains(&name.as_str()) {
                return Err(format!(
                    "service name {name:?} is reserved (the runtime's own, or a gateway path); rename it"
                ));
            }
            if !(1..=MAX_SCALE).contains(&s.scale) {
                return Err(format!(
                    "services.{name}.scale {} is out of range: 1 to {MAX_SCALE}",
                    s.scale
                ));
            }
            if s.backoff_initial_ms == 0 || s.backoff_max_ms < s.backoff_initial_ms {
                return Err(format!(
                    "services.{name}: backoff_initial_ms must be at least 1 and at most backoff_max_ms"
                ));
            }
            for dep in &s.depends_on {
                if !self.services.contains_key(dep) || dep == name {
                    return Err(format!(
                        "services.{name}.depends_on names {dep:?}, which is not another service"
                    ));
                }
            }
        }
        if let Some(g) = &self.gateway {
            g.address()?;
            if g.max_body_bytes == 0 || g.max_body_bytes > 64 << 20 {
                return Err("gateway.max_body_bytes is out of range: 1 to 67108864".into());
            }
            if g.wait_ms > 60_000 {
                return Err("gateway.wait_ms is out of range: 0 to 60000".into());
            }
        }
        if self.logs.max_bytes < 4096 || self.logs.keep > 100 {
            return Err("logs: max_bytes must be at least 4096, keep at most 100".into());
        }
        self.order().map(drop)
    }

    /// The services in start order: each after what it depends on.
    pub fn order(&self) -> Result<Vec<&str>, String> {
        let mut done: Vec<&str> = Vec::new();
        while done.len() < self.services.len() {
            let next = self.services.iter().find(|(name, s)| {
                !done.contains(&name.as_str())
                    && s.depends_on.iter().all(|d| done.contains(&d.as_str()))
            });
            match next {
                Some((name, _)) => done.push(name),
                None => return Err("the services' depends_on make a cycle".into()),
            }
        }
        Ok(done)
    }
}

/// An `https://` gateway's certificate chain and key files.
pub type TlsPair<'a> = (&'a Path, &'a Path);

impl Gateway {
    /// Where the gateway listens, checked, and its certificate and key when it is `https://`:
    /// off loopback it needs a token file, and TLS unless `allow_plaintext`.
    pub fn address(&self) -> Result<(std::net::SocketAddr, Option<TlsPair<'_>>), String> {
        use std::net::ToSocketAddrs;
        let bad = || {
            format!(
                "gateway.listen {:?} is not http://HOST:PORT or https://HOST:PORT (for instance http://127.0.0.1:8080)",
                self.listen
            )
        };
        let (rest, tls) = match self.listen.strip_prefix("https://") {
            Some(rest) => (rest, true),
            None => (self.listen.strip_prefix("http://").ok_or_else(bad)?, false),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let addr = rest
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        let pair = match (tls, &self.tls_cert, &self.tls_key) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (true, _, _) => {
                return Err("gateway.listen is https://: set gateway.tls_cert and gateway.tls_key to the PEM certificate chain and its private key (a file only you can read)".into());
            }
        };
        if addr.ip().is_loopback() {
            return Ok((addr, pair));
        }
        if self.token_file.is_none() {
            return Err(format!(
                "gateway.listen {} is not loopback: set gateway.token_file to a file only you can read, holding the bearer token clients must send",
                self.listen
            ));
        }
        if !tls && !self.allow_plaintext {
            return Err(format!(
                "gateway.listen {} is not loopback, and requests and the token would travel in clear: use https:// with gateway.tls_cert and gateway.tls_key, or set gateway.allow_plaintext = true on a network you trust",
                self.listen
            ));
        }
        Ok((addr, pair))
    }
}

/// Whether `name` can name a service (or `fleet export`'s target): 1 to 64 of a-z, 0-9 and -.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `key` can name an environment variable: a letter or `_`, then letters, digits, `_`.
pub fn valid_env_name(key: &str) -> bool {
    key.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The largest env_file read.
const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// The variables of an env file: `KEY=VALUE` lines (`export ` before is allowed, a value may be
/// quoted with `"` or `'`), blank lines and `#` comments. A file others could have written is
/// refused: what it says runs in every instance.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if commondb::secrets::foreign(&meta, true).is_some() {
        return Err(format!(
            "{} could have been written by another user (owner {}, mode {:o}); make it yours and not writable by others (chmod go-w)",
            path.display(),
            meta.uid(),
            meta.mode() & 0o777
        ));
    }
    if meta.len() > MAX_ENV_FILE_BYTES {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    let mut text = String::new();
    file.take(MAX_ENV_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let bad = || {
            format!(
                "{} line {}: not KEY=VALUE with a KEY of A-Z, a-z, 0-9 and _",
                path.display(),
                n + 1
            )
        };
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        let key = key.trim();
        if !valid_env_name(key) {
            return Err(bad());
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(a, b)| value.strip_prefix(*a)?.strip_suffix(*b))
            .unwrap_or(value);
        vars.push((key.to_string(), unquoted.to_string()));
    }
    Ok(vars)
}

/// Where executable `exe` is: a path as given, else beside the running binary (`fleet`,
/// `runmany`), else on `PATH`.
pub fn find_executable(exe: &str) -> Option<PathBuf> {
    let given = Path::new(exe);
    if exe.contains('/') {
        return given.is_file().then(|| given.to_path_buf());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join(exe)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(exe))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(text: &str) -> Result<Fleet, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.toml");
        std::fs::write(&path, text).unwrap();
        Fleet::load(&path)
    }

    #[test]
    fn off_loopback_the_gateway_needs_a_token_and_tls_unless_opted_out() {
        let with = |gateway: &str| {
            fleet(&format!(
                "[gateway]\n{gateway}\n\n[services.login]\nexe = \"x\"\n"
            ))
        };
        let pair = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"";
        let token = "token_file = \"t\"";
        assert!(with("listen = \"http://127.0.0.1:0\"").is_ok());
        let e = with("listen = \"https://127.0.0.1:0\"").unwrap_err();
        assert!(e.contains("gateway.tls_cert"), "{e}");
        let https = with(&format!("listen = \"https://127.0.0.1:0\"\n{pair}")).unwrap();
        let (_, files) = https.gateway.as_ref().unwrap().address().unwrap();
        let (cert, _) = files.unwrap();
        assert!(
            cert.is_absolute(),
            "relative to fleet.toml's directory: {cert:?}"
        );
        let e = with(&format!("listen = \"https://0.0.0.0:0\"\n{pair}")).unwrap_err();
        assert!(e.contains("token_file"), "{e}");
        assert!(with(&format!("listen = \"https://0.0.0.0:0\"\n{pair}\n{token}")).is_ok());
        let e = with(&format!("listen = \"http://0.0.0.0:0\"\n{token}")).unwrap_err();
        assert!(e.contains("in clear"), "{e}");
        let opted = format!("listen = \"http://0.0.0.0:0\"\n{token}\nallow_plaintext = true");
        assert!(with(&opted).is_ok());
    }

    #[test]
    fn the_environment_overrides_a_setting() {
        // In a child process (this test binary, running the test below): setting the
        // environment of this one would race the other tests.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.toml");
        std::fs::write(&path, "[services.login]\nexe = \"x\"\n").unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "runtime::config::tests::load_in_child",
                "--nocapture",
            ])
            .env("FLEET_SERVICES__LOGIN__SCALE", "4")
            .env("RUNNER_TEST_FLEET_TOML", &path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("scale=4"), "{text}");
    }

    /// Run by the test above in a child process with the environment it sets.
    #[test]
    fn load_in_child() {
        if let Some(path) = std::env::var_os("RUNNER_TEST_FLEET_TOML") {
            let f = Fleet::load(std::path::Path::new(&path)).unwrap();
            println!("scale={}", f.services["login"].scale);
        }
    }

    #[test]
    fn an_env_file_adds_to_env_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.env"),
            "# the shop\nexport A=1\nB = \"two words\"\n\nC='3'\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("fleet.toml"),
            "[services.a]\nexe = \"x\"\nenv_file = \"app.env\"\nenv = { C = \"mine\" }\n",
        )
        .unwrap();
        let f = Fleet::load(&dir.path().join("fleet.toml")).unwrap();
        let env = &f.services["a"].env;
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "mine");
        std::fs::write(dir.path().join("app.env"), "1A=x\n").unwrap();
        let e = Fleet::load(&dir.path().join("fleet.toml")).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.path().join("app.env"), "A=1\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("app.env"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let e = Fleet::load(&dir.path().join("fleet.toml")).unwrap_err();
        assert!(e.contains("another user"), "{e}");
    }

    #[test]
    fn services_are_checked_and_ordered_by_their_dependencies() {
        let f = fleet(
            "[services.b]\nexe = \"x\"\ndepends_on = [\"c\"]\n[services.c]\nexe = \"y\"\nscale = 2\n",
        )
        .unwrap();
        assert_eq!(f.order().unwrap(), ["c", "b"]);
        assert_eq!(f.services["c"].scale, 2);
        assert_eq!(f.services["b"].restart, Restart::Always);
        for bad in [
            "",
            "[services.A]\nexe = \"x\"\n",
            "[services.a]\nexe = \"x\"\nscale = 0\n",
            "[services.a]\nexe = \"x\"\ndepends_on = [\"nope\"]\n",
            "[services.a]\nexe = \"x\"\ndepends_on = [\"b\"]\n[services.b]\nexe = \"x\"\ndepends_on = [\"a\"]\n",
            "[services.a]\nexe = \"x\"\nscael = 2\n",
            "[services.a]\nexe = \"x\"\nrestart = \"sometimes\"\n",
        ] {
            assert!(fleet(bad).is_err(), "{bad:?}");
        }
    }
}
