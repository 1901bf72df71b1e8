//! Layered configuration: one typed [`Settings`] struct.
//!
//! Layers, later ones winning: built-in defaults, the system files
//! (`/etc/commondb/config.toml`, then `/etc/commondb/<executable>.toml`), the user's files
//! (`$XDG_CONFIG_HOME/commondb/config.toml`, then `<executable>.toml` beside it), the file
//! named by `--config FILE`, and last the environment variables prefixed `COMMONDB_`
//! (`COMMONDB_DATABASE_URL`, `COMMONDB_DATA_DIR`, `COMMONDB_TASK__ARGON2_MEMORY_KIB`: a double
//! underscore goes one table down). The `<executable>.toml` files let several executables share
//! one `config.toml` and still differ where they need to.
//!
//! Secrets are not configuration: they live in the files of [`crate::secrets`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The prefix of the environment variables that configure every executable.
pub const ENV_PREFIX: &str = "COMMONDB";

/// Where system-wide configuration lives.
pub const SYSTEM_DIR: &str = "/etc/commondb";

/// The largest configuration file read (1 MiB): settings take a few hundred bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Every setting an executable reads, after all layers are merged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The database to use. Unset means the embedded default: a SQLite file named after the
    /// executable in `data_dir`. A URL with a password belongs in the app secrets file instead.
    pub database_url: Option<String>,
    /// Where the embedded database (and, by default, its backups) live.
    pub data_dir: PathBuf,
    /// Where the secrets files live: `admin.toml` and `<executable>.toml`.
    pub secrets_dir: PathBuf,
    /// How long a SQLite statement waits for a lock held by another process before it gives up
    /// with exit 75.
    pub busy_timeout_ms: u64,
    /// How long setup and cleanup wait for another process's setup or cleanup to finish.
    pub lock_timeout_ms: u64,
    /// How long one attempt to connect to a database server may take.
    pub connect_timeout_ms: u64,
    /// How long to keep retrying a connection that failed for a reason that passes (server
    /// starting up, too many connections, connection reset), with jittered exponential backoff.
    pub connect_retry_ms: u64,
    /// The role the task connects as on a server; default `<database>_app`.
    pub app_role: Option<String>,
    /// The read-only role for backups on a server; default `<database>_backup`.
    pub backup_role: Option<String>,
    /// Where `--self-backup` writes and `--self-restore` looks; default `<data_dir>/backups`.
    pub backup_dir: Option<PathBuf>,
    /// How many backups retention keeps (the newest; at least 1). Safety backups taken before a
    /// restore are counted apart, with the same limit.
    pub backup_keep: u32,
    /// SQLite's `synchronous` setting: `full` makes every commit durable against power loss.
    pub synchronous: Synchronous,
    /// The task's own settings (the `[task]` table), read by the task as its `Settings` type.
    #[serde(default)]
    pub task: serde_json::Value,
    /// How `--serve` listens and what it allows (the `[serve]` table).
    #[serde(default)]
    pub serve: ServeSettings,
    /// Whether the app secrets come from systemd's credentials directory when it has them (not
    /// a setting: the self-test's scratch run, whose secrets are its own, turns it off).
    #[serde(skip, default = "yes")]
    pub app_credentials: bool,
}

fn yes() -> bool {
    true
}

/// The `[serve]` table: `--serve`'s listeners, pool and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSettings {
    /// Where to listen when `--listen` is not given; empty means `tcp://127.0.0.1:<the task's
    /// port>` (or the sockets systemd passed).
    pub listen: Vec<String>,
    /// Database connections shared by all clients; default 16 on a server, 1 on SQLite (one
    /// writer at a time is all SQLite allows, and a queue in the pool is fairer than the busy
    /// handler's sleeps).
    pub pool_size: Option<u32>,
    /// Client connections open at once; more are answered with an error and closed.
    pub max_connections: u32,
    /// The longest request line or HTTP body, in bytes; a longer one is answered with an error
    /// and its connection closed.
    pub max_request_bytes: usize,
    /// How long one request may take, waiting for a database connection included.
    pub request_timeout_ms: u64,
    /// How long a client connection may sit without sending a request before it is closed.
    pub idle_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long requests in flight get to finish.
    pub grace_ms: u64,
    /// How long a request id is remembered, in seconds: within this window the same id again
    /// gets the first answer and writes nothing (`db::requests`); then it is pruned.
    pub request_ids_keep_s: u64,
    /// The certificate chain (PEM, the server's first) of the `tls://` and `https://`
    /// listeners.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM), a file only its owner can read.
    pub tls_key: Option<PathBuf>,
    /// A CA file (PEM): clients of the `tls://` and `https://` listeners that show a
    /// certificate it signed need no token. Without a `serve_token`, every client must show one.
    pub tls_client_ca: Option<PathBuf>,
    /// Lets `tcp://` and `http://` listen off loopback (requests and the token in clear text):
    /// for a network the operator trusts. Off by default: off loopback means TLS.
    pub allow_plaintext: bool,
    /// The group that may use the unix sockets (mode 0660 instead of 0600): a name from
    /// the system's groups (as `getent group` lists them) or a number.
    pub socket_group: Option<String>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: Vec::new(),
            pool_size: None,
            max_connections: 1024,
            max_request_bytes: 64 * 1024,
            request_timeout_ms: 5_000,
            idle_timeout_ms: 300_000,
            grace_ms: 10_000,
            request_ids_keep_s: 86_400,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            allow_plaintext: false,
            socket_group: None,
        }
    }
}

/// SQLite's `PRAGMA synchronous` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// No syncs; a power loss may corrupt the database.
    Off,
    /// In WAL mode, durable against a crash of the program, not of the machine.
    Normal,
    /// Every commit is synced to disk.
    Full,
    /// Like `full`, and the directory is synced too.
    Extra,
}

impl Synchronous {
    /// The pragma value.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

impl Settings {
    /// The backup directory: `backup_dir`, or `backups` in the data directory.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }

    /// The task's own settings, from the `[task]` table; its defaults where the table is absent.
    pub fn task_settings<S: serde::de::DeserializeOwned + Default>(&self) -> Result<S> {
        if self.task.is_null() {
            return Ok(S::default());
        }
        serde_json::from_value(self.task.clone()).map_err(|e| {
            Error::config(format!("the [task] settings are not valid: {e}")).hint(
                "fix the [task] table of your configuration file or the COMMONDB_TASK__* variables",
            )
        })
    }
}

/// The files and environment that [`load`] merges, in order.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Files in increasing priority, each with whether it must exist.
    pub files: Vec<(PathBuf, bool)>,
    /// The `COMMONDB_*` environment variables to read (but `COMMONDB_ADMIN_URL`, a secret).
    pub env: HashMap<String, String>,
    /// The default data directory, if one could be found.
    pub default_data_dir: Option<PathBuf>,
    /// The default secrets directory, if one could be found.
    pub default_secrets_dir: Option<PathBuf>,
}

impl Sources {
    /// The standard layers for executable `exe`, with the file given by `--config`, if any.
    /// A `COMMONDB_*` variable that is no setting, or whose value is not UTF-8, is refused.
    pub fn standard(exe: &str, explicit: Option<&Path>) -> Result<Self> {
        let dirs = directories::ProjectDirs::from("", "", "commondb");
        let system = Path::new(SYSTEM_DIR);
        let mut files = vec![
            (system.join("config.toml"), false),
            (system.join(format!("{exe}.toml")), false),
        ];
        if let Some(d) = &dirs {
            files.push((d.config_dir().join("config.toml"), false));
            files.push((d.config_dir().join(format!("{exe}.toml")), false));
        }
        if let Some(path) = explicit {
            files.push((path.to_path_buf(), true));
        }
        Ok(Sources {
            files,
            env: settings_env(std::env::vars_os())?,
            default_data_dir: dirs.as_ref().map(|d| d.data_dir().to_path_buf()),
            default_secrets_dir: dirs.as_ref().map(|d| d.config_dir().join("secrets")),
        })
    }
}

/// The `COMMONDB_*` variables that are read elsewhere and are no settings:
/// [`crate::secrets::ADMIN_URL_VAR`], the environment form of a secrets file read only by setup
/// and cleanup, the performance report's two variables, and the supervisor's pid.
const NOT_SETTINGS: [&str; 5] = [
    crate::secrets::ADMIN_URL_VAR,
    crate::protocol::PERFORMANCE_REPORT_VAR,
    crate::protocol::SPAWNED_AT_VAR,
    crate::protocol::PARENT_PID_VAR,
    crate::protocol::FLEET_ID_VAR,
];

/// The environment variables that are settings: those prefixed `COMMONDB_` but
/// [`NOT_SETTINGS`]. As an unknown key in a file is, a variable that names no setting is an error
/// (a misspelled one would otherwise be ignored without a word), and so is one whose name or
/// value is not UTF-8. Below `COMMONDB_TASK__` anything goes here: the task's settings type
/// checks its own keys.
fn settings_env(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<HashMap<String, String>> {
    use std::os::unix::ffi::OsStrExt;
    let prefix = format!("{ENV_PREFIX}_");
    let mut env = HashMap::new();
    for (name, value) in vars {
        if !name.as_bytes().starts_with(prefix.as_bytes()) {
            continue;
        }
        let name = name.into_string().map_err(|name| {
            Error::config(format!(
                "the name of the environment variable {} is not UTF-8",
                name.to_string_lossy()
            ))
            .hint("unset it")
        })?;
        if NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        if !is_setting(&name[prefix.len()..]) {
            return Err(
                Error::config(format!("{name} is not a setting")).hint(format!(
                    "fix its name or unset it: the settings are {}, {prefix}SERVE__* and \
                     {prefix}TASK__* (see Configuration in the README)",
                    field_names::<Settings>()
                        .iter()
                        .filter(|f| !matches!(**f, "task" | "serve"))
                        .map(|f| env_var(f))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
        let value = value.into_string().map_err(|_| {
            Error::config(format!("the value of {name} is not UTF-8"))
                .hint(format!("set {name} to UTF-8 text"))
        })?;
        env.insert(name, value);
    }
    Ok(env)
}

/// Whether `key` (a variable's name without the prefix) names a setting the way the environment
/// layer reads it: lower-cased, `__` one table down.
fn is_setting(key: &str) -> bool {
    let key = key.to_lowercase();
    match key.split_once("__") {
        None => field_names::<Settings>().contains(&key.as_str()),
        Some(("serve", field)) => field_names::<ServeSettings>().contains(&field),
        Some(("task", field)) => !field.is_empty(),
        Some(_) => false,
    }
}

/// The fields a `#[derive(Deserialize)]` struct takes, as its derived code tells serde: a
/// deserializer that only records them.
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor, value::Error as Stop};
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Stop> {
            Err(Stop::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop::custom("only the fields were wanted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// Merges the layers of `sources` into [`Settings`].
pub fn load(sources: &Sources) -> Result<Settings> {
    let mut builder = ::config::Config::builder()
        .set_default("busy_timeout_ms", 5_000)
        .and_then(|b| b.set_default("lock_timeout_ms", 30_000))
        .and_then(|b| b.set_default("connect_timeout_ms", 5_000))
        .and_then(|b| b.set_default("connect_retry_ms", 10_000))
        .and_then(|b| b.set_default("synchronous", "full"))
        .and_then(|b| b.set_default("backup_keep", 7))
        .map_err(internal)?;
    if let Some(dir) = &sources.default_data_dir {
        builder = builder
            .set_default("data_dir", dir.to_string_lossy().as_ref())
            .map_err(internal)?;
    }
    if let Some(dir) = &sources.default_secrets_dir {
        builder = builder
            .set_default("secrets_dir", dir.to_string_lossy().as_ref())
            .map_err(internal)?;
    }
    for (path, required) in &sources.files {
        // One stat per layer; a missing optional file is no source at all (the config crate
        // would look for it under two names).
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(_) if !required => continue,
            Err(e) => {
                return Err(Error::config(format!(
                    "configuration file {} cannot be read: {e}",
                    path.display()
                ))
                .hint("check the path given to --config"));
            }
        };
        check_small_file(path, &meta, MAX_CONFIG_FILE_BYTES, "configuration file")?;
        builder = builder
            .add_source(::config::File::from(path.as_path()).format(::config::FileFormat::Toml));
    }
    builder = builder.add_source(
        ::config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .ignore_empty(true)
            .try_parsing(true)
            .list_separator(" ")
            .with_list_parse_key("serve.listen")
            .source(Some(sources.env.clone())),
    );
    let config = builder.build().map_err(config_error)?;
    check_whole_numbers(&config)?;
    let settings: Settings = config.try_deserialize().map_err(config_error)?;
    check_ranges(&settings)?;
    check_absolute(&settings)?;
    Ok(settings)
}

/// The environment variable that sets `setting` (`serve.pool_size` →
/// `COMMONDB_SERVE__POOL_SIZE`), for hints.
pub fn env_var(setting: &str) -> String {
    format!("{ENV_PREFIX}_{}", setting.replace('.', "__").to_uppercase())
}

/// A day in milliseconds: the longest timeout any setting takes.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The settings that count something (milliseconds, bytes, connections, backups), with their
/// documented ranges (the README's table says the same) and how to read each from [`Settings`]:
/// the one list that the whole-number check (before the layers are deserialized) and the range
/// check (after) go through.
type Number = (
    &'static str,
    std::ops::RangeInclusive<u64>,
    fn(&Settings) -> u64,
);
const NUMBERS: [Number; 12] = [
    ("busy_timeout_ms", 0..=DAY_MS, |s| s.busy_timeout_ms),
    ("lock_timeout_ms", 0..=DAY_MS, |s| s.lock_timeout_ms),
    ("connect_timeout_ms", 1..=DAY_MS, |s| s.connect_timeout_ms),
    ("connect_retry_ms", 0..=DAY_MS, |s| s.connect_retry_ms),
    ("backup_keep", 1..=10_000, |s| s.backup_keep.into()),
    ("serve.pool_size", 1..=1024, |s| {
        s.serve.pool_size.map_or(1, u64::from)
    }),
    ("serve.max_connections", 1..=1_000_000, |s| {
        s.serve.max_connections.into()
    }),
    ("serve.max_request_bytes", 1..=16 << 20, |s| {
        u64::try_from(s.serve.max_request_bytes).unwrap_or(u64::MAX)
    }),
    ("serve.request_timeout_ms", 1..=DAY_MS, |s| {
        s.serve.request_timeout_ms
    }),
    ("serve.idle_timeout_ms", 1..=DAY_MS, |s| {
        s.serve.idle_timeout_ms
    }),
    ("serve.grace_ms", 0..=DAY_MS, |s| s.serve.grace_ms),
    ("serve.request_ids_keep_s", 60..=31_622_400, |s| {
        s.serve.request_ids_keep_s
    }),
];

/// Refuses a fraction, `NaN` or an infinity where a setting counts something: the config crate
/// would round `1.5` to 2 and turn `NaN` into 0 (no timeout at all) without a word.
fn check_whole_numbers(config: &::config::Config) -> Result<()> {
    for (name, _, _) in NUMBERS {
        if let Ok(value) = config.get::<::config::Value>(name)
            && let ::config::ValueKind::Float(f) = value.kind
            // A whole number past i64 arrives as a float too; its range check names it.
            && (!f.is_finite() || f.fract() != 0.0)
        {
            return Err(
                Error::config(format!("the setting {name} = {f} is not a whole number")).hint(
                    format!(
                        "give {name} as a whole number, in your configuration files or {}",
                        env_var(name)
                    ),
                ),
            );
        }
    }
    Ok(())
}

/// Refuses a relative directory: it would name another directory from every working directory
/// (a cron job's, a unit's, a shell's), and with it another database, other secrets and other
/// backups.
fn check_absolute(s: &Settings) -> Result<()> {
    let dirs = [
        ("data_dir", Some(&s.data_dir)),
        ("secrets_dir", Some(&s.secrets_dir)),
        ("backup_dir", s.backup_dir.as_ref()),
    ];
    for (name, dir) in dirs {
        if let Some(dir) = dir.filter(|d| !d.is_absolute()) {
            return Err(Error::config(format!(
                "the setting {name} = {} is a relative path, which would mean another directory from each working directory",
                dir.display()
            ))
            .hint(format!(
                "give {name} as an absolute path, in your configuration files or {}",
                env_var(name)
            )));
        }
    }
    Ok(())
}

/// Refuses a number outside its documented range: a zero where nothing could work, or a size
/// or count that would be allocated up front or never end.
fn check_ranges(s: &Settings) -> Result<()> {
    for (name, range, value) in NUMBERS {
        in_range(&format!("setting {name}"), value(s), range, || {
            format!(
                "fix {name} in your configuration files or {} (see Configuration in the README)",
                env_var(name)
            )
        })?;
    }
    Ok(())
}

/// Checks a numeric setting against its documented range: outside it, a configuration error
/// naming the setting (`what`, e.g. "setting pool_size"), the value and the range, with `fix`
/// as the hint. Tasks use it for their own `[task]` settings.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    what: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    fix: impl FnOnce() -> String,
) -> Result<()> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(Error::config(format!(
        "the {what} = {value} is out of range: it must be {} to {}",
        range.start(),
        range.end()
    ))
    .hint(fix()))
}

/// Refuses a file that is not a regular file (a FIFO or a device would block or never end) or
/// is larger than `limit` bytes, before it is read: a config error naming the file and the limit.
pub(crate) fn check_small_file(
    path: &Path,
    meta: &std::fs::Metadata,
    limit: u64,
    what: &str,
) -> Result<()> {
    if !meta.is_file() {
        return Err(
            Error::config(format!("{what} {} is not a regular file", path.display())).hint(
                format!("point at a plain TOML file of at most {limit} bytes"),
            ),
        );
    }
    if meta.len() > limit {
        return Err(Error::config(format!(
            "{what} {} is larger than {limit} bytes ({} bytes)",
            path.display(),
            meta.len()
        ))
        .hint(format!(
            "a {what} holds a few settings; check that this is the right file"
        )));
    }
    Ok(())
}

fn config_error(e: ::config::ConfigError) -> Error {
    // A TOML parse error quotes the offending line (`1 | database_url = "postgres://u:pw@…`),
    // which may hold a password or, with --config /etc/shadow, anything at all: the quoted
    // lines are left out (line and column say where), control characters are replaced so that
    // nothing from a file reaches the terminal as an escape sequence, and each line is cut.
    let quoted = |line: &str| {
        let t = line.trim_start();
        t.starts_with('|')
            || t.split_once(" |")
                .is_some_and(|(n, _)| n.parse::<u64>().is_ok())
    };
    let text = e
        .to_string()
        .lines()
        .filter(|line| !quoted(line) && !line.trim().is_empty())
        .map(|line| {
            let clean: String = line
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            match crate::error::cut(&clean, 160) {
                (cut, true) => format!("{cut}…"),
                (cut, false) => cut.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let unknown = text
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(key, _)| key);
    let hint = if let Some(key) = unknown {
        format!(
            "remove `{key}` or fix its name: the valid keys are listed above and under Configuration in the README (the [task] table's in the task's documentation)"
        )
    } else if ["data_dir", "secrets_dir"]
        .iter()
        .any(|key| matches!(&e, ::config::ConfigError::NotFound(k) if k == key))
    {
        "no home directory was found: set COMMONDB_DATA_DIR and COMMONDB_SECRETS_DIR".into()
    } else {
        "fix the setting named above in your configuration files or COMMONDB_* environment variables".into()
    };
    Error::config(format!("configuration is not valid: {text}")).hint(hint)
}

fn internal(e: ::config::ConfigError) -> Error {
    Error::internal(format!("building the configuration defaults failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn sources(dir: &Path, files: &[(&str, &str)], env: &[(&str, &str)]) -> Sources {
        let files = files
            .iter()
            .map(|(name, body)| {
                let p = dir.join(name);
                std::fs::write(&p, body).unwrap();
                (p, false)
            })
            .collect();
        Sources {
            files,
            env: settings_env(env.iter().map(|(k, v)| (k.into(), v.into()))).unwrap(),
            default_data_dir: Some(dir.join("data")),
            default_secrets_dir: Some(dir.join("secrets")),
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let s = load(&sources(dir.path(), &[], &[])).unwrap();
        assert_eq!(s.database_url, None);
        assert_eq!(s.data_dir, dir.path().join("data"));
        assert_eq!(s.busy_timeout_ms, 5_000);
        assert_eq!(s.synchronous, Synchronous::Full);
    }

    #[test]
    fn later_files_override_earlier_ones_and_the_environment_overrides_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(
            dir.path(),
            &[
                (
                    "system.toml",
                    "busy_timeout_ms = 1\ndata_dir = \"/sys\"\nsynchronous = \"off\"",
                ),
                ("user.toml", "busy_timeout_ms = 2\ndata_dir = \"/user\""),
                ("explicit.toml", "busy_timeout_ms = 3"),
            ],
            &[
                ("COMMONDB_DATA_DIR", "/env"),
                ("OTHER_DATA_DIR", "/ignored"),
            ],
        );
        let s = load(&src).unwrap();
        assert_eq!(s.busy_timeout_ms, 3);
        assert_eq!(s.data_dir, PathBuf::from("/env"));
        assert_eq!(s.synchronous, Synchronous::Off);
    }

    #[test]
    fn database_url_and_task_tables_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(
            dir.path(),
            &[("a.toml", "[task]\nargon2_memory_kib = 64\nother = \"x\"")],
            &[
                ("COMMONDB_DATABASE_URL", "sqlite:///tmp/x.db"),
                ("COMMONDB_TASK__ARGON2_MEMORY_KIB", "8"),
            ],
        );
        let s = load(&src).unwrap();
        assert_eq!(s.database_url.as_deref(), Some("sqlite:///tmp/x.db"));
        assert_eq!(s.task["argon2_memory_kib"], 8);
        assert_eq!(s.task["other"], "x");
    }

    #[test]
    fn an_unknown_setting_is_a_configuration_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path(), &[("a.toml", "databse_url = \"x\"")], &[]);
        let e = load(&src).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("databse_url"), "{}", e.message());
    }

    #[test]
    fn hints_fit_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&sources(
            dir.path(),
            &[("a.toml", "databse_url = \"x\"")],
            &[],
        ))
        .unwrap_err();
        let hint = e.hint_text().unwrap();
        assert!(
            hint.contains("`databse_url`") && hint.contains("README"),
            "{hint}"
        );
        let mut homeless = sources(dir.path(), &[], &[]);
        homeless.default_secrets_dir = None;
        let e = load(&homeless).unwrap_err();
        assert!(
            e.hint_text().unwrap().contains("no home directory"),
            "{e:?}"
        );
        // A parse error shows only the start of the line it quotes.
        let long = format!("key {}", "x".repeat(100_000));
        let e = load(&sources(dir.path(), &[("b.toml", &long)], &[])).unwrap_err();
        assert!(e.message().len() < 2_000, "{}", e.message().len());
    }

    #[test]
    fn a_large_or_irregular_configuration_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_CONFIG_FILE_BYTES + 1).unwrap();
        for (path, says) in [
            (big, "larger than 1048576 bytes"),
            (PathBuf::from("/dev/zero"), "not a regular file"),
            (dir.path().to_path_buf(), "not a regular file"),
        ] {
            for required in [true, false] {
                let mut src = sources(dir.path(), &[], &[]);
                src.files.push((path.clone(), required));
                let e = load(&src).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Config);
                assert!(e.message().contains(says), "{}", e.message());
                assert!(e.message().contains(&path.display().to_string()));
            }
        }
    }

    #[test]
    fn numbers_out_of_their_range_are_a_configuration_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        for (var, value, says) in [
            (
                "COMMONDB_SERVE__POOL_SIZE",
                "0",
                "serve.pool_size = 0 is out of range: it must be 1 to 1024",
            ),
            ("COMMONDB_SERVE__POOL_SIZE", "4294967295", "1 to 1024"),
            (
                "COMMONDB_SERVE__MAX_REQUEST_BYTES",
                "18446744073709551615",
                "1 to 16777216",
            ),
            (
                "COMMONDB_SERVE__REQUEST_TIMEOUT_MS",
                "0",
                "serve.request_timeout_ms",
            ),
            (
                "COMMONDB_CONNECT_TIMEOUT_MS",
                "18446744073709551615",
                "connect_timeout_ms",
            ),
            ("COMMONDB_BACKUP_KEEP", "0", "backup_keep = 0"),
        ] {
            let e = load(&sources(dir.path(), &[], &[(var, value)])).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.message().contains(says), "{}", e.message());
            assert!(e.hint_text().unwrap().contains(var), "{e:?}");
        }
    }

    #[test]
    fn fractions_and_relative_directories_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let toml = [("c.toml", "busy_timeout_ms = 1.5\n")];
        for (files, env, says, fix) in [
            (
                &[][..],
                &[("COMMONDB_BUSY_TIMEOUT_MS", "NaN")][..],
                "busy_timeout_ms = NaN is not a whole number",
                "COMMONDB_BUSY_TIMEOUT_MS",
            ),
            (
                &[],
                &[("COMMONDB_SERVE__GRACE_MS", "2.5")],
                "serve.grace_ms = 2.5 is not a whole number",
                "COMMONDB_SERVE__GRACE_MS",
            ),
            (
                &[],
                &[("COMMONDB_BACKUP_KEEP", "inf")],
                "backup_keep = inf",
                "COMMONDB_BACKUP_KEEP",
            ),
            (
                &toml[..],
                &[],
                "busy_timeout_ms = 1.5",
                "COMMONDB_BUSY_TIMEOUT_MS",
            ),
            (
                &[],
                &[("COMMONDB_DATA_DIR", "data")],
                "data_dir = data is a relative path",
                "COMMONDB_DATA_DIR",
            ),
            (
                &[],
                &[("COMMONDB_BACKUP_DIR", "./b")],
                "backup_dir = ./b is a relative path",
                "COMMONDB_BACKUP_DIR",
            ),
        ] {
            let e = load(&sources(dir.path(), files, env)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{says}");
            assert!(e.message().contains(says), "{}", e.message());
            assert!(e.hint_text().unwrap().contains(fix), "{e:?}");
        }
        let whole = load(&sources(
            dir.path(),
            &[],
            &[("COMMONDB_BUSY_TIMEOUT_MS", "7")],
        ))
        .unwrap();
        assert_eq!(whole.busy_timeout_ms, 7);
    }

    #[test]
    fn a_badly_typed_environment_value_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path(), &[], &[("COMMONDB_BUSY_TIMEOUT_MS", "soon")]);
        let e = load(&src).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("busy_timeout_ms"), "{}", e.message());
    }

    #[test]
    fn a_variable_that_names_no_setting_is_a_configuration_error_naming_it() {
        let env =
            |pairs: &[(&str, &str)]| settings_env(pairs.iter().map(|(k, v)| (k.into(), v.into())));
        for name in [
            "COMMONDB_DATABSE_URL",
            "COMMONDB_SERVE__POOL_SIZ",
            "COMMONDB_NOPE__DATA_DIR",
            "COMMONDB_TASK__",
        ] {
            let e = env(&[(name, "x")]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.message().contains(name), "{}", e.message());
            assert!(
                e.hint_text().unwrap().contains("COMMONDB_DATABASE_URL"),
                "{e:?}"
            );
        }
        let ok = env(&[
            ("COMMONDB_DATABASE_URL", "x"),
            ("COMMONDB_serve__pool_size", "2"),
            ("COMMONDB_TASK__ANYTHING", "1"),
            ("COMMONDB_PERFORMANCE_REPORT", "/dev/null"),
            ("COMMONDB_SPAWNED_AT_NS", "1"),
            ("NOT_COMMONDB_X", "1"),
        ])
        .unwrap();
        assert_eq!(ok.len(), 3, "{ok:?}");
    }

    #[test]
    fn a_variable_whose_value_is_not_utf8_is_a_configuration_error_naming_it() {
        use std::os::unix::ffi::OsStrExt;
        let value = std::ffi::OsStr::from_bytes(b"/tmp/\xff").to_os_string();
        let e = settings_env([("COMMONDB_DATA_DIR".into(), value)].into_iter()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("COMMONDB_DATA_DIR"), "{}", e.message());
    }

    #[test]
    fn the_admin_url_is_a_secret_and_not_a_setting() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(
            dir.path(),
            &[],
            &[("COMMONDB_ADMIN_URL", "postgres://postgres@h/postgres")],
        );
        assert!(src.env.is_empty());
        load(&src).unwrap();
    }

    #[test]
    fn a_missing_explicit_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = sources(dir.path(), &[], &[]);
        src.files.push((dir.path().join("nope.toml"), true));
        let e = load(&src).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("nope.toml"));
    }

    #[test]
    fn task_settings_default_when_the_table_is_absent() {
        #[derive(Deserialize, Default, Debug, PartialEq)]
        struct T {
            #[serde(default)]
            n: u32,
        }
        let dir = tempfile::tempdir().unwrap();
        let s = load(&sources(dir.path(), &[], &[])).unwrap();
        assert_eq!(s.task_settings::<T>().unwrap(), T::default());
    }

    // Fuzzing (issue 12): any configuration file loads or is a configuration error with a
    // short message; never a panic.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_configuration_file_loads_or_is_a_configuration_error(
            body in r#"([a-z_]{1,12} ?= ?(-?[0-9]{1,22}|"[ -~]{0,20}"|true|\[\]|\{\})\n|\[[a-z_.]{0,8}\]\n|[ -~]{0,30}\n){0,8}"#
        ) {
            let dir = tempfile::tempdir().unwrap();
            match load(&sources(dir.path(), &[("c.toml", &body)], &[])) {
                Ok(_) => {}
                Err(e) => {
                    proptest::prop_assert_eq!(e.kind(), ErrorKind::Config, "{}", e);
                    proptest::prop_assert!(e.message().len() < 1000, "{}", e);
                }
            }
        }
    }

    #[test]
    fn a_parse_error_never_quotes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&sources(
            dir.path(),
            &[(
                "c.toml",
                "busy_timeout_ms = 5\ndatabase_url = \"postgres://app:S3cretPW@h/d\n\x1b]0;x\x07\n",
            )],
            &[],
        ))
        .unwrap_err();
        let shown = format!("{e} {}", e.advice());
        assert!(!shown.contains("S3cretPW"), "{shown}");
        assert!(!shown.contains('\x1b'), "{shown}");
        assert!(shown.contains("TOML parse error at line"), "{shown}");
    }
}
