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
/// per-principal cwds, `read` what the server needs to read and execute besides the system.
fn sandbox(work: &Path, read: &[String], without: &[&str], warm: bool) -> String {
    // A warm child has no caller yet: one cwd for all (`{sub}` refuses the pool).
    let cwd = if warm { "pool" } else { "{sub}" };
    let read: String = read.iter().map(|p| format!(", \"{p}\"")).collect();
    let all = format!(
        r#"user = "nobody"
private_tmp = true
cwd = "{work}/{cwd}"
network = "none"
read_only_paths = ["/usr", "/etc", "/lib", "/lib64", "/bin", "/proc", "/dev/urandom"{read}]
writable_paths = ["{{cwd}}", "{{tmp}}", "/dev/null"]
memory_max_bytes = 1073741824
pids_max = 256
cpu_max_percent = 100
max_open_files = 4096"#,
        work = work.display(),
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

/// The bundled server, contained: every variant.
pub(crate) async fn setup(args: &Args, proxy_bin: &Path, server: &str, report: &mut Report) {
    let server_path = std::path::absolute(server).unwrap_or_else(|_| server.into());
    let server_dir = server_path.parent().unwrap_or(Path::new("/"));
    let cmd = ServerCmd {
        command: server_path.display().to_string(),
        args: vec![],
        warm_pool: 0,
    };
    let read = [server_dir.display().to_string()];
    let pause = Duration::from_millis(100);
    run(
        args, proxy_bin, "example", &cmd, &read, VARIANTS, pause, report,
    )
    .await;
}

/// server-everything (`command args…`, a Node script), contained with every key: what the
/// README's block costs a Node server's start-up.
pub(crate) async fn everything(
    args: &Args,
    proxy_bin: &Path,
    command: &str,
    cmd_args: &[String],
    report: &mut Report,
) {
    // The package and its dependencies: the `node_modules` the script is in.
    let read: Vec<String> = cmd_args
        .iter()
        .filter_map(|a| {
            a.find("/node_modules/")
                .map(|i| a[..i + "/node_modules".len()].to_owned())
        })
        .take(1)
        .collect();
    let pause = Duration::from_millis(1500);
    let variants: &[(&str, &[&str])] = &[("sandboxed", &[])];
    // Cold, then from a warm pool of 4 (contained warm children: the cgroup join and the
    // Node start-up both off the session's path).
    for (name, warm_pool) in [("everything", 0), ("everything warm4", 4)] {
        let cmd = ServerCmd {
            command: command.to_owned(),
            args: cmd_args.to_vec(),
            warm_pool,
        };
        run(args, proxy_bin, name, &cmd, &read, variants, pause, report).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    args: &Args,
    proxy_bin: &Path,
    name: &str,
    cmd: &ServerCmd,
    read: &[String],
    variants: &[(&str, &[&str])],
    pause: Duration,
    report: &mut Report,
) {
    if !nix::unistd::geteuid().is_root() {
        report.notes.push(format!(
            "setup {name} sandboxed not run: the sandbox switches to user nobody (needs root)"
        ));
        return;
    }
    eprintln!("setup ({name}, sandboxed) ...");
    let Ok(work) = tempfile::tempdir() else {
        report.notes.push("setup sandboxed: no temp dir".into());
        return;
    };
    for (label, without) in variants {
        let config = sandbox(work.path(), read, without, cmd.warm_pool > 0);
        let p = match Proxy::start_sandboxed(proxy_bin, cmd, &args.proxy_log, &config).await {
            Ok(p) => p,
            Err(e) => {
                report
                    .notes
                    .push(format!("setup {name} {label}: proxy did not start: {e:#}"));
                continue;
            }
        };
        if cmd.warm_pool > 0 {
            // A pool fills after start-up, as a deployed proxy's would have.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let Ok(token) = p.token("setup", Duration::from_secs(3600)) else {
            report.notes.push(format!("setup {name} {label}: no token"));
            continue;
        };
        let target = Target::LegacySse {
            addr: p.addr.clone(),
            path: "/sse".into(),
            token: Some(token.into()),
        };
        let mut row = super::setup_series(&target, args.setup_iterations, pause).await;
        row.target = format!("proxy-sse {name} {label}");
        report.rows.push(row);
        p.stop().await;
    }
}
