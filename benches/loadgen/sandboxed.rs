//! `setup` against a contained child (issue 15): the same connect → first tool result as the
//! cold row, with every `[servers.default.sandbox]` restriction on — user nobody, Landlock,
//! no network, private TMPDIR and cwd, cgroup limits — so one run shows what containment
//! costs a new session. Needs root (the child switches user); otherwise a note says so.

use std::path::Path;
use std::time::Duration;

use crate::Args;
use crate::procs::{Proxy, ServerCmd};
use crate::report::Report;
use crate::transport::Target;

/// The sandbox of the measured child: every key set but those in `without`; `work` holds the
/// per-principal cwds, `server_dir` the example server (read and executed).
fn sandbox(work: &Path, server_dir: &Path, without: &[&str]) -> String {
    let all = format!(
        r#"user = "nobody"
private_tmp = true
cwd = "{work}/{{sub}}"
network = "none"
read_only_paths = ["/usr", "/etc", "/lib", "/lib64", "/bin", "/proc", "{server_dir}"]
writable_paths = ["{{cwd}}", "{{tmp}}", "/dev/null"]
memory_max_bytes = 268435456
pids_max = 64
cpu_max_percent = 100
max_open_files = 1024"#,
        work = work.display(),
        server_dir = server_dir.display()
    );
    all.lines()
        .filter(|l| !without.iter().any(|k| l.starts_with(k)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every restriction, then all but one group of them: what each costs a new session.
const VARIANTS: &[(&str, &[&str])] = &[
    ("sandboxed", &[]),
    ("sandboxed -netns", &["network"]),
    (
        "sandboxed -landlock",
        &["read_only_paths", "writable_paths"],
    ),
    (
        "sandboxed -cgroup",
        &["memory_max_bytes", "pids_max", "cpu_max_percent"],
    ),
    ("sandboxed -cpu", &["cpu_max_percent"]),
];

pub(crate) async fn setup(args: &Args, proxy_bin: &Path, server: &str, report: &mut Report) {
    if !nix::unistd::geteuid().is_root() {
        report.notes.push(
            "setup sandboxed not run: the sandbox switches to user nobody (needs root)".into(),
        );
        return;
    }
    eprintln!("setup (bundled server, sandboxed) ...");
    let Ok(work) = tempfile::tempdir() else {
        report.notes.push("setup sandboxed: no temp dir".into());
        return;
    };
    let server_path = std::path::absolute(server).unwrap_or_else(|_| server.into());
    let server_dir = server_path.parent().unwrap_or(Path::new("/"));
    let cmd = ServerCmd {
        command: server_path.display().to_string(),
        args: vec![],
        warm_pool: 0,
    };
    for (label, without) in VARIANTS {
        let config = sandbox(work.path(), server_dir, without);
        let p = match Proxy::start_sandboxed(proxy_bin, &cmd, &args.proxy_log, &config).await {
            Ok(p) => p,
            Err(e) => {
                report
                    .notes
                    .push(format!("setup {label}: proxy did not start: {e:#}"));
                continue;
            }
        };
        let Ok(token) = p.token("setup", Duration::from_secs(3600)) else {
            report.notes.push(format!("setup {label}: no token"));
            continue;
        };
        let target = Target::LegacySse {
            addr: p.addr.clone(),
            path: "/sse".into(),
            token: Some(token.into()),
        };
        let mut row =
            super::setup_series(&target, args.setup_iterations, Duration::from_millis(100)).await;
        row.target = format!("proxy-sse example {label}");
        report.rows.push(row);
        p.stop().await;
    }
}
