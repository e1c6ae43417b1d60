//! Child cgroups that outlived their tree: left by a proxy that died (SIGKILL, a crash) or by
//! a tree that took too long to die. Each is named after the proxy that made it
//! (`<pid>-<id>`, `mcp-<pid>-<id>` on v2), so the first child of a later proxy can tell a dead
//! owner's cgroups from live ones: it kills what is still in them (orphans of a contained
//! tree — nothing else can be there) and removes them.

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use super::cgroup::CgroupMode;

/// The directory name of this proxy's child `id`.
pub(super) fn child_name(id: &str) -> String {
    format!("{}-{id}", std::process::id())
}

/// The pid of the proxy that made a child cgroup, from its name.
fn owner_of(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("mcp-").unwrap_or(name);
    let (pid, id) = rest.split_once('-')?;
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| pid.parse().ok()).flatten()
}

/// True while a process with this pid exists (signal 0 probes without signalling).
fn alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e != Errno::ESRCH,
    }
}

/// Once per process: removes the child cgroups of dead proxies below this proxy's.
pub(super) fn sweep_once(mode: &CgroupMode) {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let bases: Vec<&PathBuf> = match mode {
            CgroupMode::V2 { dir, .. } => vec![dir],
            CgroupMode::V1 { memory, pids, cpu } => {
                [memory, pids, cpu].into_iter().flatten().collect()
            }
            CgroupMode::Unavailable(_) => Vec::new(),
        };
        let mut removed = 0;
        for base in bases {
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let stale = name
                    .to_str()
                    .and_then(owner_of)
                    .is_some_and(|pid| !alive(pid));
                if stale && entry.path().is_dir() {
                    removed += usize::from(remove_within(&[entry.path()], Duration::from_secs(1)));
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed child cgroups left by a proxy that died");
        }
    });
}

/// Prefix of a private TMPDIR (`mcp-child-<pid>-<id>` in the proxy's temp directory).
pub(super) const TMP_PREFIX: &str = "mcp-child-";

/// Once per process: removes the private TMPDIRs of dead proxies from `temp` (a SIGKILLed
/// proxy cannot remove its children's).
pub(super) fn sweep_tmp_once(temp: &std::path::Path) {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let Ok(entries) = std::fs::read_dir(temp) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let stale = name
                .to_str()
                .and_then(|n| n.strip_prefix(TMP_PREFIX))
                .and_then(owner_of)
                .is_some_and(|pid| !alive(pid));
            // Not following symlinks: only a real directory of ours is removed.
            if stale && entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// SIGKILLs every process still in these cgroups and removes them; true when all are gone.
pub(super) fn try_remove(dirs: &[PathBuf]) -> bool {
    let mut done = true;
    for d in dirs {
        if !d.exists() {
            continue;
        }
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::fs::remove_dir(d).is_err() {
            done = false;
        }
    }
    done
}

/// [`try_remove`] until it succeeds or `within` has passed (blocking).
pub(super) fn remove_within(dirs: &[PathBuf], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if try_remove(dirs) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes these cgroups on a thread of its own (where no runtime can wait: a handle dropped
/// while its tree is still dying).
pub(super) fn remove_in_background(dirs: Vec<PathBuf>, within: Duration) {
    let spawned = std::thread::Builder::new()
        .name("cgroup-remove".into())
        .spawn(move || remove_within(&dirs, within));
    if spawned.is_err() {
        tracing::warn!("cannot start a thread to remove a child's cgroup; left for the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_made_by_a_proxy_have_an_owner() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(owner_of(&format!("42-{id}")), Some(42));
        assert_eq!(owner_of(&format!("mcp-42-{id}")), Some(42));
        assert_eq!(owner_of("mcp-auth-proxy-self"), None);
        assert_eq!(owner_of("42-short"), None);
        assert_eq!(owner_of(id), None);
        assert!(alive(std::process::id() as i32));
    }
}
