//! cgroups as plain files: one cgroup per contained child, below the proxy's own (so the
//! proxy's limits still bound its children). cgroup v2 where the proxy's cgroup is delegated to
//! it with the controllers (systemd `Delegate=yes`); else the v1 `memory`, `pids` and `cpu`
//! hierarchies. The parent creates the cgroup and opens its `cgroup.procs`; the child writes
//! itself into it between fork and exec; the parent removes it when the tree is gone.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::SandboxConfig;
use crate::metrics::ExitReason;

use super::{SandboxError, fail, stale};

/// Below the proxy's cgroup, the directory its children's cgroups go in (v1 hierarchies).
const CHILDREN_DIR: &str = "mcp-auth-proxy";
/// Where the proxy moves itself in a delegated v2 cgroup (processes may not sit beside
/// cgroups that have controllers: the "no internal processes" rule).
const SELF_LEAF: &str = "mcp-auth-proxy-self";
/// CPU quota period (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// How long the remains of a tree may take to die before its cgroup is given up on.
const REMOVE_DEADLINE: Duration = Duration::from_secs(3);

/// Which cgroups the proxy can create on this host.
#[derive(Debug, Clone)]
pub(crate) enum CgroupMode {
    /// A delegated v2 cgroup: children's cgroups are created in `dir`.
    V2 {
        dir: PathBuf,
        controllers: Vec<String>,
    },
    /// v1 hierarchies: where children's cgroups are created, per controller.
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    Unavailable(String),
}

impl CgroupMode {
    /// For `check` and the start-up log.
    pub(crate) fn describe(&self) -> String {
        match self {
            CgroupMode::V2 { dir, controllers } => {
                format!(
                    "v2 at {} (controllers: {})",
                    dir.display(),
                    controllers.join(" ")
                )
            }
            CgroupMode::V1 { memory, pids, cpu } => {
                let names: Vec<&str> = [("memory", memory), ("pids", pids), ("cpu", cpu)]
                    .into_iter()
                    .filter(|(_, d)| d.is_some())
                    .map(|(n, _)| n)
                    .collect();
                format!("v1 (controllers: {})", names.join(" "))
            }
            CgroupMode::Unavailable(why) => format!("unavailable ({why})"),
        }
    }

    /// Whether a controller can take a limit.
    pub(crate) fn has(&self, controller: &str) -> bool {
        match self {
            CgroupMode::V2 { controllers, .. } => controllers.iter().any(|c| c == controller),
            CgroupMode::V1 { memory, pids, cpu } => match controller {
                "memory" => memory.is_some(),
                "pids" => pids.is_some(),
                "cpu" => cpu.is_some(),
                _ => false,
            },
            CgroupMode::Unavailable(_) => false,
        }
    }
}

/// The host's cgroup mode, found once.
pub(crate) fn cgroup_mode() -> &'static CgroupMode {
    static MODE: OnceLock<CgroupMode> = OnceLock::new();
    MODE.get_or_init(detect)
}

fn detect() -> CgroupMode {
    let (Ok(mounts), Ok(own)) = (
        std::fs::read_to_string("/proc/self/mountinfo"),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return CgroupMode::Unavailable("cannot read /proc/self/{mountinfo,cgroup}".into());
    };
    detect_from(&mounts, &own, |dir| {
        let controllers =
            std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        (controllers, writable(dir))
    })
}

/// The mode from `/proc/self/mountinfo` and `/proc/self/cgroup`; `probe` gives a cgroup
/// directory's `cgroup.controllers` and whether the proxy may write there.
fn detect_from(mountinfo: &str, own: &str, probe: impl Fn(&Path) -> (String, bool)) -> CgroupMode {
    // (mount point, root of the mount in its hierarchy, fs type, super options).
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut f = left.split(' ');
            let root = f.nth(3)?;
            let point = f.next()?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let opts = r.nth(1).unwrap_or("");
            fstype
                .starts_with("cgroup")
                .then_some((point, root, fstype, opts))
        })
        .collect();
    // (controller list, "" for v2; the proxy's path in that hierarchy).
    let own: Vec<(&str, &str)> = own
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let _ = p.next()?;
            Some((p.next()?, p.next()?))
        })
        .collect();
    // The proxy's cgroup as a directory: its path below the mount's root, under the mount point.
    let dir_of = |point: &str, root: &str, path: &str| -> PathBuf {
        let rel = path.strip_prefix(root).unwrap_or(path);
        Path::new(point).join(rel.trim_start_matches('/'))
    };
    if let Some((point, root, _, _)) = mounts.iter().find(|m| m.2 == "cgroup2")
        && let Some((_, path)) = own.iter().find(|(c, _)| c.is_empty())
    {
        let dir = dir_of(point, root, path);
        let (listed, can_write) = probe(&dir);
        let controllers: Vec<String> = listed
            .split_whitespace()
            .filter(|c| matches!(*c, "memory" | "pids" | "cpu"))
            .map(str::to_owned)
            .collect();
        if controllers.iter().any(|c| c == "memory")
            && controllers.iter().any(|c| c == "pids")
            && can_write
        {
            return CgroupMode::V2 { dir, controllers };
        }
    }
    let v1 = |controller: &str| -> Option<PathBuf> {
        let (point, root, _, _) = mounts
            .iter()
            .find(|m| m.2 == "cgroup" && m.3.split(',').any(|o| o == controller))?;
        let (_, path) = own
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == controller))?;
        let dir = dir_of(point, root, path);
        probe(&dir).1.then(|| dir.join(CHILDREN_DIR))
    };
    let (memory, pids, cpu) = (v1("memory"), v1("pids"), v1("cpu"));
    if memory.is_none() && pids.is_none() && cpu.is_none() {
        return CgroupMode::Unavailable(
            "no delegated cgroup v2 with memory and pids, no writable v1 hierarchy".into(),
        );
    }
    CgroupMode::V1 { memory, pids, cpu }
}

fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// In a delegated v2 cgroup: the proxy moves to a leaf of its own and enables the controllers
/// for the children's cgroups (once).
fn ensure_v2(dir: &Path, controllers: &[String]) -> Result<(), SandboxError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let enable = || {
        let line: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
        std::fs::write(dir.join("cgroup.subtree_control"), line.join(" "))
    };
    DONE.get_or_init(|| {
        if enable().is_ok() {
            return Ok(());
        }
        let leaf = dir.join(SELF_LEAF);
        std::fs::create_dir_all(&leaf).map_err(|e| e.to_string())?;
        std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("moving the proxy to {}: {e}", leaf.display()))?;
        enable().map_err(|e| format!("enabling controllers in {}: {e}", dir.display()))
    })
    .clone()
    .map_err(|e| SandboxError(format!("delegated cgroup v2: {e}")))
}

/// One child's cgroup (one directory per v1 hierarchy, or one v2 directory).
#[derive(Debug)]
pub(super) struct ChildCgroup {
    dirs: Vec<PathBuf>,
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    v2: bool,
}

impl ChildCgroup {
    /// Creates the child's cgroup with the configured limits; a limit whose controller is
    /// missing refuses the child.
    pub(super) fn create(id: &str, c: &SandboxConfig) -> Result<Self, SandboxError> {
        let mode = cgroup_mode();
        stale::sweep_once(mode);
        for (set, controller) in [
            (c.memory_max_bytes.is_some(), "memory"),
            (c.pids_max.is_some(), "pids"),
            (c.cpu_max_percent.is_some(), "cpu"),
        ] {
            if set && !mode.has(controller) {
                return Err(SandboxError(format!(
                    "the cgroup {controller} controller is not available: cgroups {}",
                    mode.describe()
                )));
            }
        }
        let mut cg = ChildCgroup {
            dirs: Vec::new(),
            memory: None,
            pids: None,
            v2: false,
        };
        // On any error below, dropping `cg` removes what was created.
        match mode {
            CgroupMode::V2 { dir, controllers } => {
                ensure_v2(dir, controllers)?;
                let d = make(&dir.join(format!("mcp-{}", stale::child_name(id))))?;
                cg.dirs.push(d.clone());
                cg.v2 = true;
                if let Some(max) = c.memory_max_bytes {
                    put(&d, "memory.max", max)?;
                    // Swap would let the tree exceed the limit unseen.
                    let _ = std::fs::write(d.join("memory.swap.max"), "0");
                }
                if let Some(max) = c.pids_max {
                    put(&d, "pids.max", max)?;
                }
                if let Some(pct) = c.cpu_max_percent {
                    let quota = u64::from(pct) * CPU_PERIOD_US / 100;
                    put(&d, "cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
                }
                cg.memory = Some(d.clone());
                cg.pids = Some(d);
            }
            CgroupMode::V1 { memory, pids, cpu } => {
                if let (Some(max), Some(base)) = (c.memory_max_bytes, memory) {
                    let d = make(&base.join(stale::child_name(id)))?;
                    cg.dirs.push(d.clone());
                    put(&d, "memory.limit_in_bytes", max)?;
                    // Only where swap accounting exists.
                    let _ = std::fs::write(d.join("memory.memsw.limit_in_bytes"), max.to_string());
                    cg.memory = Some(d);
                }
                // The pids hierarchy is joined whenever there is one: it also finds every
                // process of the tree when it ends, even one that left the process group.
                if let Some(base) = pids {
                    let d = make(&base.join(stale::child_name(id)))?;
                    cg.dirs.push(d.clone());
                    if let Some(max) = c.pids_max {
                        put(&d, "pids.max", max)?;
                    }
                    cg.pids = Some(d);
                }
                if let (Some(pct), Some(base)) = (c.cpu_max_percent, cpu) {
                    let d = make(&base.join(stale::child_name(id)))?;
                    cg.dirs.push(d.clone());
                    put(&d, "cpu.cfs_period_us", CPU_PERIOD_US)?;
                    put(&d, "cpu.cfs_quota_us", u64::from(pct) * CPU_PERIOD_US / 100)?;
                }
            }
            CgroupMode::Unavailable(why) => {
                return Err(SandboxError(format!("cgroups are unavailable: {why}")));
            }
        }
        Ok(cg)
    }

    /// `cgroup.procs` of each directory, opened for the child to write itself into.
    pub(super) fn procs_files(&self) -> Result<Vec<OwnedFd>, SandboxError> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|e| fail(format!("opening {}", path.display()), e))
            })
            .collect()
    }

    /// Whether the memory or the pids limit was hit (the OOM killer ran, or a fork failed).
    pub(super) fn limit_hit(&self) -> Option<ExitReason> {
        if let Some(d) = &self.memory {
            let file = if self.v2 {
                "memory.events"
            } else {
                "memory.oom_control"
            };
            if counter(&d.join(file), "oom_kill") > 0 {
                return Some(ExitReason::Oom);
            }
        }
        if let Some(d) = &self.pids
            && counter(&d.join("pids.events"), "max") > 0
        {
            return Some(ExitReason::Pids);
        }
        None
    }

    /// Kills what is left of the tree and removes the cgroup, waiting for the kernel to
    /// release it (a dying process still counts for a moment).
    pub(super) async fn remove(self) {
        let deadline = tokio::time::Instant::now() + REMOVE_DEADLINE;
        while !self.try_remove() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(cgroup = ?self.dirs, "the child's cgroup is still busy; left behind");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs every process still in the cgroup and removes its directories; true when all
    /// are gone.
    fn try_remove(&self) -> bool {
        stale::try_remove(&self.dirs)
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        // A cgroup never outlives its handle by accident: a tree still dying (the handle
        // dropped with its runtime) is waited for on a thread; a proxy that dies first leaves
        // it to the next one's sweep.
        if !self.try_remove() {
            stale::remove_in_background(std::mem::take(&mut self.dirs), REMOVE_DEADLINE);
        }
    }
}

fn make(dir: &Path) -> Result<PathBuf, SandboxError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("creating cgroup {}", dir.display()), e))?;
    Ok(dir.to_owned())
}

fn put(dir: &Path, file: &str, value: impl ToString) -> Result<(), SandboxError> {
    let path = dir.join(file);
    std::fs::write(&path, value.to_string())
        .map_err(|e| fail(format!("writing {}", path.display()), e))
}

/// The value of `key N` in a cgroup's flat-keyed file (0 when absent).
fn counter(path: &Path, key: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
    const HYBRID_OWN: &str = "8:pids:/\n4:memory:/jobs/42\n1:cpu:/\n0::/\n";

    /// This machine's layout: v2 without controllers, v1 memory/pids/cpu.
    #[test]
    fn a_hybrid_host_uses_v1_below_the_proxys_own_cgroups() {
        let mode = detect_from(HYBRID_MOUNTS, HYBRID_OWN, |_| (String::new(), true));
        let CgroupMode::V1 { memory, pids, cpu } = mode else {
            panic!("v1 expected: {mode:?}");
        };
        assert_eq!(
            memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/jobs/42/mcp-auth-proxy"))
        );
        assert_eq!(
            pids.as_deref(),
            Some(Path::new("/sys/fs/cgroup/pids/mcp-auth-proxy"))
        );
        assert!(cpu.is_some());
    }

    /// systemd `Delegate=yes`: the service's own v2 cgroup, with its controllers.
    #[test]
    fn a_delegated_v2_cgroup_is_preferred() {
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        let own = "0::/system.slice/mcp-auth-proxy.service\n";
        let want = Path::new("/sys/fs/cgroup/system.slice/mcp-auth-proxy.service");
        let mode = detect_from(mounts, own, |d| {
            assert_eq!(d, want);
            ("cpuset cpu io memory pids".into(), true)
        });
        let CgroupMode::V2 { dir, controllers } = mode else {
            panic!("v2 expected: {mode:?}");
        };
        assert_eq!(dir, want);
        assert_eq!(controllers, ["cpu", "memory", "pids"]);
        // Not delegated (not writable), or without the controllers: nothing to use.
        let mode = detect_from(mounts, own, |_| ("cpu memory pids".into(), false));
        assert!(matches!(mode, CgroupMode::Unavailable(_)), "{mode:?}");
        let mode = detect_from(mounts, own, |_| ("cpu io".into(), true));
        assert!(matches!(mode, CgroupMode::Unavailable(_)), "{mode:?}");
    }

    /// In a container the mount's root is the container's cgroup: paths are below it.
    #[test]
    fn a_mount_root_is_stripped_from_the_proxys_path() {
        let mounts = "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        let own = "0::/kubepods/pod1/app\n";
        let mode = detect_from(mounts, own, |_| ("memory pids".into(), true));
        let CgroupMode::V2 { dir, .. } = mode else {
            panic!("v2 expected: {mode:?}");
        };
        assert_eq!(dir, Path::new("/sys/fs/cgroup/app"));
    }
}
