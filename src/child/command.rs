//! The command line of a child: no shell, piped stdio, its own process group, and the crate's
//! one `unsafe` block — the parent-death signal set between fork and exec.

use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::signal::Signal;

use super::ChildSpec;

/// The command: no shell, piped stdio, own process group, parent-death signal.
pub(super) fn command(spec: &ChildSpec) -> tokio::process::Command {
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
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    set_parent_death_signal(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd
}

/// The one `unsafe` of the crate (STYLE.md habit 12): a `pre_exec` hook that asks the kernel to
/// SIGKILL the child when the thread that spawned it dies, so a SIGKILLed proxy leaves nothing
/// behind. Children are spawned from the runtime's own threads (with one worker: the main
/// thread, `main.rs`), which live as long as the process, never from `spawn_blocking`
/// (whose threads exit when idle and would take the child with them).
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (prctl, getppid, _exit); it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl: then nobody would signal us.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}
