//! What this host can contain (for `check` and the start-up log), and whether one server's
//! sandbox can be applied here: a sandbox that cannot is a configuration error (exit 64),
//! never a child started with less containment than configured.

use crate::config::SandboxConfig;

use super::cgroup::cgroup_mode;
use super::landlock::kernel_abi;

/// The containment features of this host.
#[derive(Debug, Clone)]
pub struct HostSupport {
    /// "ABI 6" (the newest fully enforced ABI), or why there is none.
    pub landlock: String,
    /// "v1 (controllers: memory pids cpu)", "v2 at … (controllers: …)" or why not.
    pub cgroups: String,
    /// Whether user namespaces can be created (`/proc/sys/user/max_user_namespaces` > 0).
    pub user_namespaces: bool,
}

/// Probes the host (Landlock, cgroups, user namespaces).
pub fn host_support() -> HostSupport {
    let landlock = match kernel_abi() {
        // The probes distinguish ABIs up to 6 (later ones add no access rights).
        Some(abi) if abi as i32 >= 6 => "ABI 6 or newer".to_owned(),
        Some(abi) => format!("ABI {}", abi as i32),
        None => "unsupported by this kernel".to_owned(),
    };
    let user_namespaces = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    HostSupport {
        landlock,
        cgroups: cgroup_mode().describe(),
        user_namespaces,
    }
}

/// Whether this sandbox can be applied on this host: what it will do, or why not.
pub(crate) fn server_report(sandbox: &SandboxConfig) -> Result<String, String> {
    let mut parts = Vec::new();
    if let Some(user) = &sandbox.user {
        parts.push(format!("user {user}"));
    }
    if sandbox.no_new_privileges {
        parts.push("no_new_privs".to_owned());
    }
    if sandbox.landlock() {
        match kernel_abi() {
            Some(abi) => parts.push(format!("Landlock ABI {}", abi as i32)),
            None => return Err("Landlock is not supported by this kernel".into()),
        }
    }
    if sandbox.network == crate::config::Network::None {
        parts.push("own network namespace".to_owned());
    }
    let mode = cgroup_mode();
    for (set, controller) in [
        (sandbox.memory_max_bytes.is_some(), "memory"),
        (sandbox.pids_max.is_some(), "pids"),
        (sandbox.cpu_max_percent.is_some(), "cpu"),
    ] {
        if set {
            if !mode.has(controller) {
                return Err(format!(
                    "the cgroup {controller} controller is not available (cgroups {})",
                    mode.describe()
                ));
            }
            parts.push(format!("cgroup {controller}"));
        }
    }
    if sandbox.private_tmp {
        parts.push("private TMPDIR".to_owned());
    }
    if let Some(n) = sandbox.max_open_files {
        parts.push(format!("RLIMIT_NOFILE {n}"));
    }
    Ok(parts.join(", "))
}
