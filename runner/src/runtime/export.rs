//! `fleet export systemd DIR`: the same fleet as systemd units, for production.
//!
//! Per service: `<service>@.service`, a template whose instances `<service>@0` … `@N-1` run
//! `EXE --serve --listen http+systemd` (Type=notify: started once `READY=1`), and
//! `<service>@.socket`, whose instances all bind the service's one port with `ReusePort=yes`, so
//! the kernel spreads the connections over them (the role the gateway plays under `fleet up`);
//! `<service>-setup.service` runs `--self-setup` once before them. `<name>.target` wants every
//! instance's socket. Restart policy, grace period and environment come from fleet.toml; the
//! hardening is that of `scripts/systemd/create-user.service`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::config::{self, Fleet, Restart, Service};

/// The first port given to a service whose fleet.toml names none (the gateway's is 8080).
const FIRST_PORT: u16 = 8081;

/// One unit file: its name and text.
pub struct Unit {
    pub name: String,
    pub text: String,
}

/// The units of `fleet` (read from `file`), under target `name`.
pub fn units(fleet: &Fleet, file: &Path, name: &str) -> Result<Vec<Unit>, String> {
    check_name(name)?;
    let order = fleet.order()?;
    let mut units = Vec::new();
    let mut wants = Vec::new();
    for (n, service) in order.iter().enumerate() {
        let spec = &fleet.services[*service];
        let exe = config::find_executable(&spec.exe)
            .and_then(|p| std::fs::canonicalize(p).ok())
            .ok_or_else(|| {
                format!(
                    "services.{service}.exe {:?} was not found (as a path, next to fleet, or on PATH)",
                    spec.exe
                )
            })?;
        let port = port(service, spec, n)?;
        let environment = environment(service, spec)?;
        units.push(Unit {
            name: format!("{service}-setup.service"),
            text: setup_unit(service, &exe, &environment, file, name),
        });
        units.push(Unit {
            name: format!("{service}@.service"),
            text: service_unit(service, spec, fleet, &exe, &environment, name),
        });
        units.push(Unit {
            name: format!("{service}@.socket"),
            text: socket_unit(service, port, name),
        });
        wants.push(format!("{service}-setup.service"));
        for i in 0..spec.scale {
            wants.push(format!("{service}@{i}.socket"));
        }
    }
    units.push(Unit {
        name: format!("{name}.target"),
        text: format!(
            "# The fleet of {}, as `fleet export systemd` wrote it. Each service listens on its own\n\
             # port; its instances share it (ReusePort). Install:\n\
             #   cp *.service *.socket {name}.target /etc/systemd/system/\n\
             #   useradd --system --no-create-home --shell /usr/sbin/nologin commondb\n\
             #   systemctl daemon-reload && systemctl enable --now {name}.target\n\
             [Unit]\nDescription=commondb fleet: {name}\nWants={}\n\n[Install]\nWantedBy=multi-user.target\n",
            file.display(),
            wants.join(" ")
        ),
    });
    Ok(units)
}

/// Writes `units` into `dir` (created if need be); refuses to replace a file unless `force`.
pub fn write(dir: &Path, units: &[Unit], force: bool) -> Result<Vec<PathBuf>, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Units go on to /etc/systemd/system as root: a directory another user could write to
    // could have them swapped before they are copied.
    let meta =
        std::fs::metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if commondb::secrets::foreign(&meta, true).is_some() {
        return Err(format!(
            "{} could be written by another user (owner {}, mode {:o}): choose a directory of your own, not writable by others",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o777
        ));
    }
    let paths: Vec<PathBuf> = units.iter().map(|u| dir.join(&u.name)).collect();
    if !force && let Some(there) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        return Err(format!(
            "{} exists; remove it, or pass --force to replace the fleet's units",
            there.display()
        ));
    }
    for (unit, path) in units.iter().zip(&paths) {
        // Replaced by a rename, never written through whatever the path was.
        let tmp = dir.join(format!(".{}.tmp", unit.name));
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, unit.text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(paths)
}

fn check_name(name: &str) -> Result<(), String> {
    if config::valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "the target name {name:?} is not valid: use 1 to 64 of a-z, 0-9 and -"
        ))
    }
}

/// The service's HTTP port: the one its `listen` names, else `FIRST_PORT + n`.
fn port(service: &str, spec: &Service, n: usize) -> Result<u16, String> {
    let named = spec.listen.iter().find_map(|a| {
        let rest = a.strip_prefix(commondb::protocol::listen::HTTP)?;
        rest.rsplit(':')
            .next()?
            .trim_end_matches('/')
            .parse::<u16>()
            .ok()
    });
    match named {
        Some(p) if p != 0 => Ok(p),
        _ => u16::try_from(n)
            .ok()
            .and_then(|n| FIRST_PORT.checked_add(n))
            .ok_or_else(|| format!("services.{service}: no port left for it")),
    }
}

/// `Environment=` lines for the service's `env`, quoted for systemd; what came from its
/// `env_file` stays there (it may hold secrets; a unit file is readable by every user), named by
/// `EnvironmentFile=`.
fn environment(service: &str, spec: &Service) -> Result<String, String> {
    let mut lines = String::new();
    if let Some(file) = &spec.env_file {
        // Not quoted: systemd takes the rest of the line as the path.
        let path = file.display().to_string();
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) || !file.is_absolute() {
            return Err(format!(
                "services.{service}.env_file {path:?}: systemd needs an absolute path without spaces"
            ));
        }
        let _ = writeln!(lines, "EnvironmentFile={}", path.replace('%', "%%"));
    }
    for (key, value) in &spec.env {
        if spec.from_env_file.contains(key) {
            continue;
        }
        if !config::valid_env_name(key) || value.contains(['\n', '\r', '\0']) {
            return Err(format!(
                "services.{service}.env.{key}: not a variable systemd can be given (a name of A-Z, 0-9 and _, a value on one line)"
            ));
        }
        let _ = writeln!(
            lines,
            "Environment={}",
            quote(&format!("{key}={value}"), false)
        );
    }
    Ok(lines)
}

/// `text` as one systemd word: double-quoted, `\` and `"` escaped, `%` doubled (a specifier
/// otherwise) and, in a command line (`exec`), `$` doubled (a variable otherwise).
fn quote(text: &str, exec: bool) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '%' => quoted.push_str("%%"),
            '$' if exec => quoted.push_str("$$"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

const COMMON: &str = "User=commondb\nGroup=commondb\n\
    StateDirectory=commondb\nConfigurationDirectory=commondb\n\
    Environment=COMMONDB_DATA_DIR=/var/lib/commondb\n\
    Environment=COMMONDB_SECRETS_DIR=/etc/commondb/secrets\n\
    NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nPrivateDevices=yes\n\
    ProtectKernelTunables=yes\nProtectControlGroups=yes\n\
    RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\nReadWritePaths=/var/lib/commondb\n";

fn setup_unit(service: &str, exe: &Path, environment: &str, file: &Path, name: &str) -> String {
    format!(
        "# {service}: its database set up once (idempotent) before its instances start. Setup reads\n\
         # the administrator's URL from /etc/commondb/secrets/admin.toml. From {}.\n\
         [Unit]\nDescription={service}: --self-setup\nPartOf={name}.target\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={} --self-setup -q\n{environment}{COMMON}",
        file.display(),
        quote(&exe.display().to_string(), true),
    )
}

fn service_unit(
    service: &str,
    spec: &Service,
    fleet: &Fleet,
    exe: &Path,
    environment: &str,
    name: &str,
) -> String {
    let mut after = format!("{service}-setup.service");
    for dep in &spec.depends_on {
        for i in 0..fleet.services[dep].scale {
            let _ = write!(after, " {dep}@{i}.service");
        }
    }
    let restart = match spec.restart {
        Restart::Always => "always",
        Restart::OnFailure => "on-failure",
        Restart::Never => "no",
    };
    format!(
        "# {service}, instance %i, on the sockets of {service}@%i.socket (HTTP).\n\
         [Unit]\nDescription={service} %i (commondb --serve)\nPartOf={name}.target\n\
         Requires={service}-setup.service\nAfter={after}\n\
         StartLimitIntervalSec={}ms\nStartLimitBurst={}\n\n\
         [Service]\nType=notify\nExecStart={} --serve --listen http+systemd -q\n\
         Restart={restart}\nRestartSec={}ms\nTimeoutStopSec={}ms\n{environment}{COMMON}",
        spec.healthy_after_ms,
        spec.max_failures + 1,
        quote(&exe.display().to_string(), true),
        spec.backoff_initial_ms,
        fleet.grace_ms,
    )
}

fn socket_unit(service: &str, port: u16, name: &str) -> String {
    format!(
        "# {service}'s HTTP port; every instance's socket binds it (ReusePort), and the kernel\n\
         # spreads connections over them.\n\
         [Unit]\nDescription={service} %i socket\nPartOf={name}.target\n\n\
         [Socket]\nListenStream=127.0.0.1:{port}\nReusePort=yes\n\n\
         [Install]\nWantedBy={name}.target\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_for_systemd() {
        assert_eq!(
            quote(r#"A=b "c" 100% $x\"#, true),
            r#""A=b \"c\" 100%% $$x\\""#
        );
        assert_eq!(quote("A=$x", false), r#""A=$x""#);
    }
}
