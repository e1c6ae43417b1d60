//! `[servers.NAME.sandbox]`: what contains a server's children (issue 15) — their user, their
//! view of the filesystem (Landlock), their network, their cgroup limits — its checks, each
//! naming its key, and the encoding that turns a claim into one safe path component.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ChildScope, ConfigError, ServerConfig};

/// The smallest memory limit accepted: below it no runtime starts and the error would be a
/// mystery OOM instead of a config error.
const MIN_MEMORY_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Fewer open files than this and a child cannot even hold its stdio and a library or two.
const MIN_MAX_OPEN_FILES: u64 = 16;
/// A path component may not be longer (NAME_MAX).
const MAX_COMPONENT_BYTES: usize = 255;

/// `[servers.NAME.sandbox]`. Absent: the child runs as today, uncontained.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Run the child as this user and its groups (the proxy needs root or CAP_SETUID/CAP_SETGID).
    pub user: Option<String>,
    /// PR_SET_NO_NEW_PRIVS before exec: no setuid binary or file capability raises it again.
    pub no_new_privileges: bool,
    /// A fresh TMPDIR per child (mode 700, owned by `user`), removed when the child ends.
    pub private_tmp: bool,
    /// The child's working directory, created on first use (owned by `user`, mode 700);
    /// `{sub}` and `{iss}` are replaced by the caller's claims, encoded by [`encode_component`].
    pub cwd: Option<String>,
    pub network: Network,
    /// Landlock: read and execute beneath these paths.
    pub read_only_paths: Vec<String>,
    /// Landlock: read and write beneath these paths (`{cwd}`, `{tmp}` allowed).
    pub writable_paths: Vec<String>,
    /// cgroup memory limit of the child's whole process tree.
    pub memory_max_bytes: Option<u64>,
    /// cgroup limit on the processes and threads of the child's tree.
    pub pids_max: Option<u64>,
    /// cgroup CPU quota of the child's tree in percent of one core.
    pub cpu_max_percent: Option<u32>,
    /// RLIMIT_NOFILE of the child.
    pub max_open_files: Option<u64>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            user: None,
            no_new_privileges: true,
            private_tmp: false,
            cwd: None,
            network: Network::Host,
            read_only_paths: Vec::new(),
            writable_paths: Vec::new(),
            memory_max_bytes: None,
            pids_max: None,
            cpu_max_percent: None,
            max_open_files: None,
        }
    }
}

/// `network`: the host's, or an empty namespace (loopback only, no routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Host,
    None,
}

impl SandboxConfig {
    /// True when a Landlock ruleset is wanted (any path list is set).
    pub fn landlock(&self) -> bool {
        !self.read_only_paths.is_empty() || !self.writable_paths.is_empty()
    }

    /// True when a cgroup is wanted (any cgroup limit is set).
    pub fn cgroup(&self) -> bool {
        self.memory_max_bytes.is_some() || self.pids_max.is_some() || self.cpu_max_percent.is_some()
    }

    /// True when `cwd` depends on the caller (`{sub}` or `{iss}`).
    pub fn per_principal(&self) -> bool {
        self.cwd
            .as_deref()
            .is_some_and(|c| c.contains("{sub}") || c.contains("{iss}"))
    }

    /// The checks that need no caller: keys, paths, the user, the proxy's privileges.
    /// `server` is the key prefix (`servers.NAME`).
    pub(super) fn validate(&self, server: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{server}.sandbox.{k}");
        if let Some(user) = &self.user {
            match nix::unistd::User::from_name(user) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(ConfigError::new(
                        key("user"),
                        format!("no user `{user}` on this host"),
                    ));
                }
                Err(e) => {
                    return Err(ConfigError::new(
                        key("user"),
                        format!("cannot look up user `{user}`: {e}"),
                    ));
                }
            }
            if !has_capabilities(&[CAP_SETUID, CAP_SETGID]) {
                return Err(ConfigError::new(
                    key("user"),
                    "running children as another user needs root or CAP_SETUID and CAP_SETGID",
                ));
            }
        }
        if self.network == Network::None && !has_capabilities(&[CAP_SYS_ADMIN]) {
            return Err(ConfigError::new(
                key("network"),
                "an own network namespace needs root or CAP_SYS_ADMIN",
            ));
        }
        if self.landlock() && !self.no_new_privileges && !has_capabilities(&[CAP_SYS_ADMIN]) {
            return Err(ConfigError::new(
                key("no_new_privileges"),
                "Landlock without no_new_privileges needs CAP_SYS_ADMIN",
            ));
        }
        if let Some(cwd) = &self.cwd {
            check_cwd(cwd).map_err(|m| ConfigError::new(key("cwd"), m))?;
        }
        for (list, paths) in [
            ("read_only_paths", &self.read_only_paths),
            ("writable_paths", &self.writable_paths),
        ] {
            for (i, path) in paths.iter().enumerate() {
                self.check_path(path)
                    .map_err(|m| ConfigError::new(format!("{}[{i}]", key(list)), m))?;
            }
        }
        if self
            .memory_max_bytes
            .is_some_and(|m| m < MIN_MEMORY_MAX_BYTES)
        {
            return Err(ConfigError::new(
                key("memory_max_bytes"),
                format!("must be at least {MIN_MEMORY_MAX_BYTES} (16 MiB)"),
            ));
        }
        if self.pids_max == Some(0) {
            return Err(ConfigError::new(key("pids_max"), "must be > 0"));
        }
        if self.cpu_max_percent == Some(0) {
            return Err(ConfigError::new(key("cpu_max_percent"), "must be > 0"));
        }
        if self.max_open_files.is_some_and(|n| n < MIN_MAX_OPEN_FILES) {
            return Err(ConfigError::new(
                key("max_open_files"),
                format!("must be at least {MIN_MAX_OPEN_FILES}"),
            ));
        }
        Ok(())
    }

    /// A Landlock path: `{cwd}` or `{tmp}` (each only when configured), or a path that exists.
    fn check_path(&self, path: &str) -> Result<(), String> {
        if let Some(rest) = path.strip_prefix("{cwd}") {
            if self.cwd.is_none() {
                return Err("`{cwd}` needs sandbox.cwd".into());
            }
            return check_suffix(rest);
        }
        if let Some(rest) = path.strip_prefix("{tmp}") {
            if !self.private_tmp {
                return Err("`{tmp}` needs sandbox.private_tmp = true".into());
            }
            return check_suffix(rest);
        }
        if path.contains('{') {
            return Err(format!(
                "`{path}`: only {{cwd}} and {{tmp}} may start a path"
            ));
        }
        if !Path::new(path).is_absolute() {
            return Err(format!("`{path}` is not an absolute path"));
        }
        if !Path::new(path).exists() {
            return Err(format!("`{path}` does not exist"));
        }
        Ok(())
    }
}

/// A server's sandbox: its own checks, then how it combines with the server's other keys.
pub(super) fn validate_sandbox(
    name: &str,
    server: &ServerConfig,
    sandbox: &SandboxConfig,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("servers.{name}.{k}");
    sandbox.validate(&format!("servers.{name}"))?;
    if server.cwd.is_some() && sandbox.cwd.is_some() {
        return Err(ConfigError::new(
            key("sandbox.cwd"),
            "set either servers.NAME.cwd or sandbox.cwd, not both",
        ));
    }
    if sandbox.per_principal() && server.warm_pool > 0 {
        return Err(ConfigError::new(
            key("warm_pool"),
            "a warm child is spawned before its caller is known: it cannot have a per-caller sandbox.cwd ({sub}/{iss})",
        ));
    }
    if sandbox.per_principal() && server.child_scope == ChildScope::Shared {
        return Err(ConfigError::new(
            key("sandbox.cwd"),
            "a shared child serves everyone: its cwd cannot name one caller ({sub}/{iss})",
        ));
    }
    Ok(())
}

/// What may follow `{cwd}`/`{tmp}`: nothing, or `/relative/path` without `..`.
fn check_suffix(rest: &str) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    let ok = rest.starts_with('/')
        && !rest.contains('{')
        && Path::new(rest)
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{rest}` after the template must be /a/relative/path without `..`"
        ))
    }
}

/// `cwd`: absolute, no `..`, templates only `{sub}`/`{iss}` and only as whole components, and
/// the directory it is created in (the one above the first templated component, or above the
/// cwd itself) exists.
fn check_cwd(cwd: &str) -> Result<(), String> {
    let path = Path::new(cwd);
    if !path.is_absolute() {
        return Err(format!("`{cwd}` is not an absolute path"));
    }
    let mut base = PathBuf::new();
    let mut templated = false;
    for c in path.components() {
        let s = c.as_os_str().to_string_lossy();
        if matches!(c, std::path::Component::ParentDir) {
            return Err(format!("`{cwd}` must not contain `..`"));
        }
        if s.contains('{') || s.contains('}') {
            if s != "{sub}" && s != "{iss}" {
                return Err(format!(
                    "`{s}`: a templated component is exactly {{sub}} or {{iss}}"
                ));
            }
            templated = true;
        }
        if !templated {
            base.push(c);
        }
    }
    let parent = if templated {
        base.as_path()
    } else {
        path.parent().unwrap_or(path)
    };
    if !parent.is_dir() {
        return Err(format!(
            "`{}` (where the working directories are created) does not exist",
            parent.display()
        ));
    }
    Ok(())
}

/// Why a claim cannot name a directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    #[error("the claim is empty")]
    Empty,
    #[error("the claim is too long to name a directory")]
    TooLong,
}

/// Encodes a claim value as exactly one path component that names no other path: every byte
/// outside `[A-Za-z0-9_-]` becomes `%XX` (so `.`, `/`, NUL and `%` itself never appear
/// raw, and no value is `.` or `..`). The mapping is injective: two principals never share
/// a directory.
pub fn encode_component(value: &str) -> Result<String, ComponentError> {
    if value.is_empty() {
        return Err(ComponentError::Empty);
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_COMPONENT_BYTES {
        return Err(ComponentError::TooLong);
    }
    Ok(out)
}

/// `cwd` with `{sub}`/`{iss}` replaced by their encodings.
pub fn expand_cwd(template: &str, sub: &str, iss: &str) -> Result<PathBuf, ComponentError> {
    let mut out = PathBuf::new();
    for c in Path::new(template).components() {
        match c.as_os_str().to_str() {
            Some("{sub}") => out.push(encode_component(sub)?),
            Some("{iss}") => out.push(encode_component(iss)?),
            _ => out.push(c),
        }
    }
    Ok(out)
}

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SYS_ADMIN: u32 = 21;

/// True when the proxy holds these capabilities (root holds them all unless a bounding set
/// took them away; `CapEff` in /proc/self/status says which it really has).
fn has_capabilities(caps: &[u32]) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    caps.iter().all(|c| eff & (1 << c) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_cannot_name_another_path() {
        for (value, want) in [
            ("alice", "alice"),
            ("../../etc", "%2E%2E%2F%2E%2E%2Fetc"),
            (".", "%2E"),
            ("..", "%2E%2E"),
            (".hidden", "%2Ehidden"),
            ("a/b", "a%2Fb"),
            ("a\0b", "a%00b"),
            ("100%", "100%25"),
            ("Ünï", "%C3%9Cn%C3%AF"),
        ] {
            let got = encode_component(value).expect(value);
            assert_eq!(got, want, "{value:?}");
            assert!(!got.contains('/') && !got.contains('.') && !got.contains('\0'));
        }
        assert_eq!(encode_component(""), Err(ComponentError::Empty));
        assert_eq!(
            encode_component(&"/".repeat(100)),
            Err(ComponentError::TooLong)
        );
    }

    /// `../../etc` as `sub` stays one component below the configured parent.
    #[test]
    fn expanded_cwd_stays_below_its_parent() {
        let p = expand_cwd("/srv/mcp/{sub}", "../../etc", "https://idp").expect("encoded");
        assert_eq!(p, PathBuf::from("/srv/mcp/%2E%2E%2F%2E%2E%2Fetc"));
        assert_eq!(p.parent(), Some(Path::new("/srv/mcp")));
        let p = expand_cwd("/srv/{iss}/{sub}", "bob", "https://idp/x").expect("encoded");
        assert_eq!(p, PathBuf::from("/srv/https%3A%2F%2Fidp%2Fx/bob"));
    }

    /// Each impossible sandbox is refused naming its key; a sane one gets the defaults.
    #[test]
    fn broken_sandboxes_name_their_key() {
        use crate::config::tests::{env, load};
        let base = "[[auth.issuers]]\nissuer = \"dev\"\nalgorithms = [\"HS256\"]\nsecret_env = \"MCP_PROXY_JWT_SECRET\"\n[servers.default]\ncommand = \"true\"\n";
        let cases: &[(&str, &str, &str)] = &[
            ("", "user = \"no-such-user-here\"", "sandbox.user"),
            (
                "",
                "read_only_paths = [\"/no/such/path\"]",
                "sandbox.read_only_paths[0]",
            ),
            (
                "",
                "writable_paths = [\"{cwd}\"]",
                "sandbox.writable_paths[0]",
            ),
            (
                "",
                "writable_paths = [\"{tmp}/../x\"]\nprivate_tmp = true",
                "sandbox.writable_paths[0]",
            ),
            ("", "cwd = \"/tmp/x{sub}\"", "sandbox.cwd"),
            ("", "memory_max_bytes = 1024", "sandbox.memory_max_bytes"),
            ("", "pids_max = 0", "sandbox.pids_max"),
            ("", "network = \"bridge\"", "network"),
            ("warm_pool = 2\n", "cwd = \"/tmp/{sub}\"", "warm_pool"),
            (
                "child_scope = \"shared\"\n",
                "cwd = \"/tmp/{iss}\"",
                "sandbox.cwd",
            ),
            ("cwd = \"/tmp\"\n", "cwd = \"/tmp/x\"", "sandbox.cwd"),
        ];
        for (server, sandbox, key) in cases {
            let text = format!("{base}{server}[servers.default.sandbox]\n{sandbox}\n");
            let err = load(&text, &env()).expect_err(sandbox);
            assert!(
                err.key.ends_with(key),
                "{sandbox:?}: expected {key}, got {err}"
            );
        }
        let text = format!("{base}[servers.default.sandbox]\ncwd = \"/tmp/{{sub}}\"\n");
        let c = load(&text, &env()).expect("valid");
        let s = c.servers["default"].sandbox.clone().expect("sandbox");
        assert!(s.no_new_privileges && s.per_principal() && !s.landlock() && !s.cgroup());
    }

    #[test]
    fn cwd_templates_are_whole_components() {
        assert!(check_cwd("/tmp/{sub}").is_ok());
        assert!(check_cwd("/tmp/x{sub}").is_err());
        assert!(check_cwd("/tmp/{user}").is_err());
        assert!(check_cwd("relative/{sub}").is_err());
        assert!(check_cwd("/tmp/../{sub}").is_err());
        assert!(check_cwd("/no/such/dir/{sub}").is_err());
    }
}
