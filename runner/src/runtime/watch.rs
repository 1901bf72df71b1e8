//! `fleet up --watch`: a service whose executable file changes (a `cargo build`, a deploy) is
//! restarted one instance at a time, each ready again before the next stops, as `fleet restart`
//! does; the gateway sends requests only to ready instances meanwhile.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::control;
use super::instance::Shared;

/// How often the executables are looked at.
const EVERY: Duration = Duration::from_millis(500);

/// What says a file changed: its inode, size and modification time.
type Stamp = Option<(u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Watches every service's executable until the fleet stops. A change is acted on once the
/// file has stayed the same for one more look (not while it is being written).
pub fn watch(shared: &Arc<Shared>) {
    let mut seen: BTreeMap<&str, Stamp> = shared
        .services
        .iter()
        .map(|(name, svc)| (name.as_str(), stamp(&svc.exe)))
        .collect();
    let mut pending: BTreeMap<&str, Stamp> = BTreeMap::new();
    while !shared.stopping.load(Ordering::Acquire) {
        std::thread::sleep(EVERY);
        for (name, svc) in &shared.services {
            let now = stamp(&svc.exe);
            if now.is_none() || now == seen[name.as_str()] {
                pending.remove(name.as_str());
                continue;
            }
            if pending.get(name.as_str()) != Some(&now) {
                pending.insert(name, now);
                continue;
            }
            pending.remove(name.as_str());
            seen.insert(name, now);
            if shared.stopping.load(Ordering::Acquire) {
                return;
            }
            shared.out.note(
                name,
                "its executable changed: restarting it one instance at a time",
            );
            let _one_at_a_time = svc.control.lock().unwrap_or_else(|e| e.into_inner());
            match control::restart(shared, name, false) {
                Ok(done) => shared.out.note(name, &done),
                Err(e) => shared.out.note(name, &format!("the restart stopped: {e}")),
            }
        }
    }
}
