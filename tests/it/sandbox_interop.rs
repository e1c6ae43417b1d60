//! `@modelcontextprotocol/server-everything` started by `npx` under the README's ready-made
//! sandbox block (user nobody, Landlock, no network, cgroup limits) and driven by the
//! TypeScript SDK client: tools/list and a tool call (issue 15).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::{Proxy, base_config};
use crate::interop::{call_args, first_text, interop};
use crate::sandbox::work_dir;
use crate::skip_unless_supported;

const PACKAGE: &str = "@modelcontextprotocol/server-everything@2026.8.31";

/// The package cache the children read: filled once, as an operator would (README), then
/// owned by the children's user (npm refuses a cache it does not own).
fn npm_cache() -> Result<PathBuf, String> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-npm-cache");
    let ready = cache.join(".filled");
    if !ready.exists() {
        let out = std::process::Command::new("npx")
            .args(["-y", PACKAGE, "stdio"])
            .env("npm_config_cache", &cache)
            .env("npm_config_update_notifier", "false")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("npx: {e}"))?;
        if !cache.join("_npx").is_dir() {
            return Err(format!(
                "cannot fill the npm cache (registry unreachable?): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(&ready, "").map_err(|e| e.to_string())?;
    }
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&cache)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    if !status.success() {
        return Err("chown of the npm cache failed".into());
    }
    Ok(cache)
}

/// The README's block for npx servers, with this machine's paths.
fn npx_block(cache: &Path, work: &Path) -> String {
    format!(
        r#"
[servers.everything]
command = "npx"
args = ["-y", "{PACKAGE}", "stdio"]
env = {{ npm_config_cache = "{cache}", npm_config_offline = "true", npm_config_update_notifier = "false" }}

[servers.everything.sandbox]
user = "nobody"
private_tmp = true
cwd = "{work}/{{sub}}"
network = "none"
read_only_paths = ["/usr", "/etc", "/lib", "/lib64", "/bin", "/proc", "/dev/urandom"]
writable_paths = ["{{cwd}}", "{{tmp}}", "/dev/null", "{cache}"]
memory_max_bytes = 1073741824
pids_max = 256
cpu_max_percent = 100
max_open_files = 4096
"#,
        cache = cache.display(),
        work = work.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_via_npx_works_under_the_readme_sandbox() {
    skip_unless_supported!(true);
    let cache = match npm_cache() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let _ = interop();
    let work = work_dir();
    let proxy = Proxy::with_config(&base_config(&npx_block(&cache, work.path())), &[]).await;
    let token = proxy.token("ts-user");
    let url = format!("{}/servers/everything/mcp", proxy.url);
    let report = crate::interop::ts_client(&call_args(
        &url,
        "streamable",
        &token,
        "echo",
        r#"{"message":"contained"}"#,
        &[],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    let tools = report["tools"].as_array().expect("tools/list");
    assert!(tools.iter().any(|t| t == "echo"), "{report}");
    assert!(first_text(&report).contains("contained"), "{report}");
}
