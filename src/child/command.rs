//! The command line of a child: no shell, piped stdio, its own process group, the
//! parent-death signal and, when configured, its sandbox (both set between fork and exec,
//! `preexec`).

use std::path::PathBuf;
use std::process::Stdio;

use super::ChildSpec;
use super::sandbox::Prepared;

/// The command: no shell, piped stdio, own process group, parent-death signal, and the
/// prepared sandbox (its cwd, TMPDIR and the steps between fork and exec).
pub(super) fn command(spec: &ChildSpec, sandbox: Option<&mut Prepared>) -> tokio::process::Command {
    // A relative program path with a directory part is resolved against the proxy's working
    // directory, not the child's `cwd` (std leaves that case platform-defined).
    let program = if spec.command.contains('/') {
        std::path::absolute(&spec.command).unwrap_or_else(|_| PathBuf::from(&spec.command))
    } else {
        PathBuf::from(&spec.command)
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(&spec.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for key in &spec.env_remove {
        cmd.env_remove(key);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut plan = None;
    if let Some(sandbox) = sandbox {
        let unset = |k: &String| !spec.env.iter().any(|(set, _)| set == k);
        cmd.envs(
            sandbox
                .default_env
                .iter()
                .filter(|(k, _)| unset(k))
                .map(|(k, v)| (k, v)),
        );
        cmd.envs(sandbox.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &sandbox.cwd {
            cmd.current_dir(cwd);
        }
        plan = sandbox.plan.take();
    }
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    super::preexec::install(&mut cmd, plan);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd
}
