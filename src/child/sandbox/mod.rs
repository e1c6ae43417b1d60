//! Containment of one child (issue 15): what the parent prepares before the fork — the user's
//! ids, the working directory and private TMPDIR (created and chowned here), the Landlock
//! ruleset, the cgroup and its limits, a pipe for the reason of a failure — and what is left
//! to tidy when the child's tree is gone. The steps between fork and exec are in
//! `super::preexec`; they only use what is prepared here, so they need no allocation.

mod cgroup;
mod host;
mod landlock;
mod stale;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Network, SandboxConfig};
use crate::metrics::ExitReason;

pub(crate) use host::server_report;
pub use host::{HostSupport, host_support};

/// A child's sandbox, resolved for its caller (`cwd` expanded).
#[derive(Debug, Clone)]
pub(crate) struct SandboxSpec {
    pub(crate) config: Arc<SandboxConfig>,
    /// The working directory with `{sub}`/`{iss}` replaced.
    pub(crate) cwd: Option<PathBuf>,
}

/// Why a sandbox could not be applied (the child is not started).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SandboxError(pub(crate) String);

fn fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> SandboxError {
    SandboxError(format!("{what}: {e}"))
}

/// What the steps between fork and exec use: plain values and descriptors opened here.
#[derive(Debug)]
pub(crate) struct ExecPlan {
    /// Written to with the failed step's number, then the child exits (`Step`).
    pub(crate) report_fd: RawFd,
    /// `cgroup.procs` of each hierarchy the child joins.
    pub(crate) cgroup_procs: Vec<RawFd>,
    pub(crate) new_netns: bool,
    pub(crate) max_open_files: Option<u64>,
    pub(crate) no_new_privs: bool,
    pub(crate) landlock_fd: Option<RawFd>,
    /// uid, gid and supplementary groups to switch to.
    pub(crate) ids: Option<(u32, u32, Vec<u32>)>,
}

/// The step between fork and exec that failed (the byte the child writes to the report pipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    Cgroup = 1,
    Netns = 2,
    Loopback = 3,
    Rlimit = 4,
    NoNewPrivs = 5,
    Landlock = 6,
    Groups = 7,
    SetGid = 8,
    SetUid = 9,
    ParentDeath = 10,
}

impl Step {
    fn describe(byte: u8) -> &'static str {
        match byte {
            1 => "joining the cgroup",
            2 => "creating the network namespace",
            3 => "bringing up loopback in the network namespace",
            4 => "setting RLIMIT_NOFILE",
            5 => "setting no_new_privs",
            6 => "applying the Landlock ruleset",
            7 => "setting the user's groups",
            8 => "setting the user's gid",
            9 => "setting the user's uid",
            10 => "re-arming the parent-death signal",
            _ => "preparing the child",
        }
    }
}

/// Everything prepared for one child: the plan, the descriptors it names (closed in the parent
/// once the child is spawned), and what must be removed when the child's tree is gone.
pub(crate) struct Prepared {
    /// Taken by the command builder into the pre-exec hook.
    pub(crate) plan: Option<ExecPlan>,
    /// Set in the child's environment over the server's `env` (TMPDIR).
    pub(crate) env: Vec<(String, String)>,
    /// Set unless the server's `env` sets them: HOME, USER and LOGNAME of `user` (as login
    /// and systemd's `User=` do), so tools look for their caches there, not in the proxy's.
    pub(crate) default_env: Vec<(String, String)>,
    pub(crate) cwd: Option<PathBuf>,
    fds: Vec<OwnedFd>,
    report_rx: std::io::PipeReader,
    running: Running,
}

impl Prepared {
    /// The child started: the parent's copies of what it needed are closed (dropped).
    pub(crate) fn started(mut self) -> Running {
        std::mem::take(&mut self.running)
    }

    /// The child did not start: the step between fork and exec that failed, if one did (else
    /// the exec itself failed, as it could without a sandbox).
    pub(crate) fn failed(mut self, e: std::io::Error) -> SpawnFailure {
        self.plan = None;
        self.fds.clear();
        use std::io::Read;
        let mut byte = [0u8; 1];
        match self.report_rx.read(&mut byte) {
            Ok(1) => SpawnFailure::Sandbox(fail(Step::describe(byte[0]), e)),
            _ => SpawnFailure::Exec(e),
        }
    }
}

/// Why a contained child did not start.
#[derive(Debug)]
pub(crate) enum SpawnFailure {
    /// A step of the sandbox failed in the child.
    Sandbox(SandboxError),
    /// Starting the program failed (as without a sandbox).
    Exec(std::io::Error),
}

/// A contained child's leftovers: its cgroup and private TMPDIR.
#[derive(Debug, Default)]
pub(crate) struct Running {
    cgroup: Option<cgroup::ChildCgroup>,
    tmp: Option<PathBuf>,
}

impl Running {
    /// After the child's process group is gone: kills whatever of its tree remains in the
    /// cgroup, says whether a limit killed it, removes the cgroup and the TMPDIR.
    pub(crate) async fn finish(mut self, reason: ExitReason) -> ExitReason {
        let mut reason = reason;
        if let Some(cg) = self.cgroup.take() {
            if reason == ExitReason::Exited {
                reason = cg.limit_hit().unwrap_or(reason);
            }
            cg.remove().await;
        }
        if let Some(tmp) = self.tmp.take() {
            // A child may leave many files: not on the runtime's thread.
            let _ = tokio::task::spawn_blocking(move || remove_tmp(&tmp)).await;
        }
        reason
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Reached without `finish` only when spawning failed after the preparation.
        if let Some(tmp) = self.tmp.take() {
            remove_tmp(&tmp);
        }
        // Dropping the cgroup's handle removes it.
        drop(self.cgroup.take());
    }
}

fn remove_tmp(tmp: &Path) {
    // std's remove_dir_all does not follow symlinks the child may have planted.
    if let Err(e) = std::fs::remove_dir_all(tmp) {
        tracing::warn!(path = %tmp.display(), error = %e, "cannot remove the child's TMPDIR");
    }
}

/// Prepares the sandbox of one child in the parent. Any failure refuses the child.
pub(crate) fn prepare(spec: &SandboxSpec, id: &str) -> Result<Prepared, SandboxError> {
    let c = &spec.config;
    let mut default_env = Vec::new();
    let ids = match &c.user {
        Some(name) => {
            let (ids, home) = resolve_user(name)?;
            default_env.push(("HOME".to_owned(), home));
            default_env.push(("USER".to_owned(), name.clone()));
            default_env.push(("LOGNAME".to_owned(), name.clone()));
            Some(ids)
        }
        None => None,
    };
    let owner = ids.as_ref().map(|(u, g, _)| (*u, *g));
    let mut running = Running::default();
    let mut env = Vec::new();
    if let Some(cwd) = &spec.cwd {
        create_private_dir(cwd, owner, true)
            .map_err(|e| fail(format!("creating cwd {}", cwd.display()), e))?;
    }
    if c.private_tmp {
        let temp = std::env::temp_dir();
        stale::sweep_tmp_once(&temp);
        let tmp = temp.join(format!("{}{}", stale::TMP_PREFIX, stale::child_name(id)));
        create_private_dir(&tmp, owner, false)
            .map_err(|e| fail(format!("creating TMPDIR {}", tmp.display()), e))?;
        env.push(("TMPDIR".to_owned(), tmp.display().to_string()));
        running.tmp = Some(tmp);
    }
    let mut fds = Vec::new();
    let landlock_fd = if c.landlock() {
        let expand = |p: &String| expand_path(p, spec.cwd.as_deref(), running.tmp.as_deref());
        let ro: Vec<PathBuf> = c.read_only_paths.iter().map(expand).collect();
        let rw: Vec<PathBuf> = c.writable_paths.iter().map(expand).collect();
        let fd = landlock::ruleset(&ro, &rw)?;
        let raw = fd.as_raw_fd();
        fds.push(fd);
        Some(raw)
    } else {
        None
    };
    let mut cgroup_procs = Vec::new();
    if c.cgroup() {
        let cg = cgroup::ChildCgroup::create(id, c)?;
        for f in cg.procs_files()? {
            cgroup_procs.push(f.as_raw_fd());
            fds.push(f);
        }
        running.cgroup = Some(cg);
    }
    let (report_rx, report_tx) = std::io::pipe().map_err(|e| fail("creating a pipe", e))?;
    // Never blocks: a child forked meanwhile for another session holds the write end until
    // its exec, and an empty pipe only means no step failed.
    nix::fcntl::fcntl(
        &report_rx,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| fail("preparing the report pipe", e))?;
    let report_tx = OwnedFd::from(report_tx);
    let plan = Some(ExecPlan {
        report_fd: report_tx.as_raw_fd(),
        cgroup_procs,
        new_netns: c.network == Network::None,
        max_open_files: c.max_open_files,
        no_new_privs: c.no_new_privileges,
        landlock_fd,
        ids,
    });
    fds.push(report_tx);
    Ok(Prepared {
        plan,
        env,
        default_env,
        cwd: spec.cwd.clone(),
        fds,
        report_rx,
        running,
    })
}

/// `{cwd}` and `{tmp}` at the start of a Landlock path.
fn expand_path(path: &str, cwd: Option<&Path>, tmp: Option<&Path>) -> PathBuf {
    for (template, value) in [("{cwd}", cwd), ("{tmp}", tmp)] {
        if let (Some(rest), Some(value)) = (path.strip_prefix(template), value) {
            return PathBuf::from(format!("{}{rest}", value.display()));
        }
    }
    PathBuf::from(path)
}

/// The user's uid, primary gid and all its groups (as `initgroups` would set them), and its
/// home directory.
#[allow(clippy::type_complexity)]
fn resolve_user(name: &str) -> Result<((u32, u32, Vec<u32>), String), SandboxError> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| fail(format!("looking up user `{name}`"), e))?
        .ok_or_else(|| SandboxError(format!("no user `{name}` on this host")))?;
    let cname = std::ffi::CString::new(name).map_err(|e| fail(format!("user name `{name}`"), e))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map_err(|e| fail(format!("listing the groups of `{name}`"), e))?;
    Ok((
        (
            user.uid.as_raw(),
            user.gid.as_raw(),
            groups.into_iter().map(|g| g.as_raw()).collect(),
        ),
        user.dir.display().to_string(),
    ))
}

/// Creates `dir` (mode 700, owned by `owner`); parents with `parents`. An existing `cwd`
/// is the principal's from an earlier session: kept as it is.
fn create_private_dir(dir: &Path, owner: Option<(u32, u32)>, parents: bool) -> std::io::Result<()> {
    if parents && dir.is_dir() {
        return Ok(());
    }
    if parents && let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // Another session of the same principal created it first.
        Err(e) if parents && e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        other => other?,
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
