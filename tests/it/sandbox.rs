//! `[servers.NAME.sandbox]` with real processes (issue 15): the example server's
//! `sandbox_probe` tries the escapes — its uid, NoNewPrivs, TMPDIR and cwd, another
//! principal's files, `/etc`, a listener in the host's network — and the proxy refuses a
//! sandbox it cannot apply. Limits (memory, pids) are in `sandbox_limits`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::mcp::{Answer, Session, post};
use crate::common::wait::eventually;
use crate::common::{Proxy, base_config, example_server, http};

pub const VERSION: &str = "2025-11-25";

/// Why these tests cannot run on this host, if they cannot (printed, then the test passes).
pub fn unsupported(needs_cgroups: bool) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the sandbox tests switch to user `nobody`: they need root".into());
    }
    if !matches!(nix::unistd::User::from_name("nobody"), Ok(Some(_))) {
        return Some("no user `nobody` on this host".into());
    }
    let host = mcp_auth_proxy::host_support();
    if host.landlock.starts_with("unsupported") {
        return Some(format!("Landlock: {}", host.landlock));
    }
    if needs_cgroups && host.cgroups.starts_with("unavailable") {
        return Some(format!("cgroups: {}", host.cgroups));
    }
    None
}

/// Skips the test (with the reason printed) where the host lacks a feature.
#[macro_export]
macro_rules! skip_unless_supported {
    ($cgroups:expr) => {
        if let Some(why) = $crate::sandbox::unsupported($cgroups) {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A directory for working directories that `nobody` can traverse (tempdirs are 700).
pub fn work_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A sandboxed example server named `name`: user nobody, per-principal cwd below `dir`,
/// private TMPDIR, the system's read-only paths plus the example server's directory.
pub fn server(name: &str, dir: &Path, extra: &str) -> String {
    let exe = example_server();
    let bin_dir = Path::new(exe)
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    format!(
        r#"
[servers.{name}]
command = "{exe}"

[servers.{name}.sandbox]
user = "nobody"
private_tmp = true
cwd = "{dir}/{{sub}}"
read_only_paths = ["/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "{bin_dir}"]
writable_paths = ["{{cwd}}", "{{tmp}}", "/dev/null"]
{extra}
"#,
        dir = dir.display()
    )
}

/// `sandbox_probe` with `args`; its JSON report.
pub async fn probe(s: &Session, id: i64, args: Value) -> Value {
    let a = s.call_tool(json!(id), "sandbox_probe", args).await;
    report(&a)
}

pub fn report(a: &Answer) -> Value {
    let text = a.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a tool result: {a:?}"));
    serde_json::from_str(text).expect("the probe's JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contained_child_runs_as_its_user_in_its_own_directories() {
    skip_unless_supported!(false);
    let dir = work_dir();
    let proxy = Proxy::with_config(&base_config(&server("default", dir.path(), "")), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let alice = Session::open(&url, &proxy.token("alice"), VERSION).await;
    let bob = Session::open(&url, &proxy.token("bob"), VERSION).await;
    let (alice_dir, bob_dir) = (dir.path().join("alice"), dir.path().join("bob"));
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "not for children").expect("write");

    let me = probe(&bob, 1, json!({"write": bob_dir.join("mine.txt")})).await;
    assert_eq!(me["write"], "ok", "{me}");
    let r = probe(
        &alice,
        2,
        json!({"write": alice_dir.join("notes.txt"), "read": bob_dir.join("mine.txt")}),
    )
    .await;
    assert_ne!(r["uid"], 0, "{r}");
    assert_eq!(r["uid"], 65534, "runs as nobody: {r}");
    assert_eq!(r["no_new_privs"], "1", "{r}");
    assert_eq!(r["cwd"], alice_dir.display().to_string(), "{r}");
    assert_eq!(r["write"], "ok", "its own cwd is writable: {r}");
    assert_eq!(r["read"], "EACCES", "another principal's file: {r}");
    assert_eq!(r["tmpdir_exists"], true, "{r}");
    let tmpdir = PathBuf::from(r["tmpdir"].as_str().expect("TMPDIR set"));
    assert!(tmpdir.is_dir(), "{}", tmpdir.display());

    for (args, what) in [
        (
            json!({"write": bob_dir.join("x")}),
            "another principal's cwd",
        ),
        (json!({"write": "/etc/mcp-sandbox-test"}), "/etc"),
        (
            json!({"write": dir.path().join("x")}),
            "outside writable_paths",
        ),
        (json!({"read": outside}), "outside read_only_paths"),
        (json!({"read": "/root/.bashrc"}), "root's home"),
    ] {
        let r = probe(&alice, 3, args.clone()).await;
        let outcome = r["write"].as_str().or(r["read"].as_str());
        assert_eq!(outcome, Some("EACCES"), "{what}: {args} → {r}");
    }
    assert!(!Path::new("/etc/mcp-sandbox-test").exists());
    // Another child's environment (claims, credentials) stays its own: each child is its own
    // Landlock domain, and /proc/PID/environ needs ptrace access across domains.
    let bob_pid = proxy.state.session_pid(&bob.id).expect("bob's child");
    let r = probe(
        &alice,
        5,
        json!({"read": format!("/proc/{bob_pid}/environ")}),
    )
    .await;
    assert_eq!(r["read"], "EACCES", "{r}");
    // HOME is the user's (where tools look for caches), not the proxy's.
    let home = alice
        .call_tool(json!(4), "env", json!({"name": "HOME"}))
        .await;
    assert_eq!(home.last()["result"]["content"][0]["text"], "/nonexistent");

    // The child's cgroup (when it has one) and TMPDIR go with the session.
    let r = http()
        .delete(&url)
        .bearer_auth(&alice.token)
        .header("mcp-session-id", &alice.id)
        .header("mcp-protocol-version", VERSION)
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "{}", r.status());
    eventually(Duration::from_secs(10), "TMPDIR removed", async || {
        !tmpdir.exists()
    })
    .await;
    assert!(
        alice_dir.join("notes.txt").exists(),
        "cwd outlives the session"
    );
}

/// A warm child is contained like any other (its cwd names no caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_child_is_contained_too() {
    skip_unless_supported!(false);
    let dir = work_dir();
    let section = server("default", dir.path(), "")
        .replace("/{sub}\"", "/pool\"")
        .replace(
            "\n\n[servers.default.sandbox]",
            "\nwarm_pool = 1\n\n[servers.default.sandbox]",
        );
    let proxy = Proxy::with_config(&base_config(&section), &[]).await;
    let warm = async || !proxy.state.warm_pids("default").is_empty();
    eventually(Duration::from_secs(10), "the pool fills", warm).await;
    let warm_pid = proxy.state.warm_pids("default")[0];
    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("alice"), VERSION).await;
    assert_eq!(
        proxy.state.session_pid(&s.id),
        Some(warm_pid),
        "the warm child"
    );
    let r = probe(&s, 1, json!({"write": "/etc/mcp-sandbox-test"})).await;
    assert_eq!(r["uid"], 65534, "{r}");
    assert_eq!(
        r["cwd"],
        dir.path().join("pool").display().to_string(),
        "{r}"
    );
    assert_eq!(r["write"], "EACCES", "{r}");
}

/// `../../etc` as `sub` stays one directory below cwd's parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_cannot_name_another_directory() {
    skip_unless_supported!(false);
    let dir = work_dir();
    let proxy = Proxy::with_config(&base_config(&server("default", dir.path(), "")), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("../../etc"), VERSION).await;
    let r = probe(&s, 1, json!({})).await;
    let cwd = PathBuf::from(r["cwd"].as_str().expect("cwd"));
    assert_eq!(cwd.parent(), Some(dir.path()), "{r}");
    assert_eq!(
        cwd.file_name().and_then(|n| n.to_str()),
        Some("%2E%2E%2F%2E%2E%2Fetc")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_cannot_reach_a_host_listener_host_can() {
    skip_unless_supported!(false);
    let dir = work_dir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let servers = format!(
        "{}{}",
        server("none", &dir.path().join("n"), "network = \"none\""),
        server("host", &dir.path().join("h"), "network = \"host\"")
    );
    for d in ["n", "h"] {
        std::fs::create_dir(dir.path().join(d)).expect("mkdir");
    }
    let proxy = Proxy::with_config(&base_config(&servers), &[]).await;
    for (name, want_ok) in [("none", false), ("host", true)] {
        let url = format!("{}/servers/{name}/mcp", proxy.url);
        let s = Session::open(&url, &proxy.token("alice"), VERSION).await;
        let r = probe(&s, 1, json!({"connect": addr})).await;
        assert_eq!(r["connect"] == "ok", want_ok, "network = {name}: {r}");
    }
}

/// A sandbox that cannot be applied when the session starts refuses it with the reason (and
/// nothing runs); `check` refuses the impossible ones up front with exit 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_sandbox_refuses_the_session_and_check_exits_64() {
    skip_unless_supported!(false);
    let dir = work_dir();
    let gone = dir.path().join("vanishing");
    std::fs::create_dir(&gone).expect("mkdir");
    let extra = format!("read_only_paths = [\"/usr\", \"{}\"]", gone.display());
    let config = base_config(&server("default", dir.path(), "").replace(
        "read_only_paths = [\"/usr\"",
        &format!("read_only_paths = [\"{}\", \"/usr\"", gone.display()),
    ));
    let proxy = Proxy::with_config(&config, &[]).await;
    std::fs::remove_dir(&gone).expect("rmdir");
    let url = format!("{}/mcp", proxy.url);
    let a = post(
        &url,
        &proxy.token("alice"),
        &[("mcp-protocol-version", VERSION)],
        &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion": VERSION, "capabilities": {},
            "clientInfo": {"name": "it", "version": "0"}}}),
    )
    .await;
    assert_eq!(a.status, 502, "{a:?}");
    assert!(
        a.raw.contains("the sandbox could not be applied"),
        "{}",
        a.raw
    );
    assert!(
        a.raw.contains(&gone.display().to_string()),
        "names the path: {}",
        a.raw
    );
    let text = proxy.metrics().await;
    assert_eq!(
        crate::common::metric(
            &text,
            "mcp_proxy_child_spawns_total{server=\"default\",result=\"error\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(proxy.state.session_pids(), Vec::<u32>::new());

    // A sandbox the host can apply: check says what it will do, and what the host supports.
    let path = dir.path().join("good.toml");
    let good = base_config(&server("default", dir.path(), ""));
    std::fs::write(&path, good).expect("write");
    let out = crate::common::check_config(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "host: Landlock ABI",
        "host: cgroups",
        "host: user namespaces",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert!(
        stdout.contains("server default: sandbox can be applied: user nobody"),
        "{stdout}"
    );

    for (sandbox, key) in [
        ("user = \"no-such-user-here\"".to_owned(), "sandbox.user"),
        (extra, "sandbox.read_only_paths[1]"),
    ] {
        let path = dir.path().join("proxy.toml");
        let text = format!(
            "{}\n[servers.default.sandbox]\n{sandbox}\n",
            crate::common::base_config(&format!(
                "[servers.default]\ncommand = \"{}\"",
                example_server()
            ))
        );
        std::fs::write(&path, text).expect("write");
        let out = crate::common::check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{sandbox}: {stderr}");
        assert!(stderr.contains(key), "{sandbox}: names {key}: {stderr}");
    }
}
