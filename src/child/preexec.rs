//! Between fork and exec: the crate's one `unsafe` place (STYLE.md habit 12). Everything here
//! runs in the forked child of a multi-threaded parent, so it may only make async-signal-safe
//! calls — raw syscalls on values and descriptors the parent prepared (`sandbox::prepare`);
//! it allocates nothing and takes no locks. On a failure the child writes the step's number to
//! the report pipe and returns the errno, which std hands back to the parent as the spawn
//! error: the child never runs with less containment than asked.

use std::os::unix::process::CommandExt;

use super::sandbox::{ExecPlan, Step};

/// Installs the hook: the parent-death signal (children are spawned from the runtime's own
/// threads, which live as long as the process — never from `spawn_blocking`, whose threads
/// exit when idle and would take the child with them), then the sandbox, if any.
#[allow(unsafe_code)]
pub(super) fn install(cmd: &mut std::process::Command, plan: Option<ExecPlan>) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It calls only
    // async-signal-safe functions (prctl, getppid, write, unshare, socket, ioctl, close,
    // setrlimit, syscall(landlock_restrict_self), setgroups, setgid, setuid, _exit) on data
    // that was allocated before the fork and is only read here; it allocates nothing
    // (`io::Error::last_os_error` is a plain errno) and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            parent_death_signal(parent)?;
            if let Some(plan) = &plan {
                enter(plan, parent)?;
            }
            Ok(())
        });
    }
}

/// SIGKILL when the spawning thread dies; exits if the parent is already gone.
fn parent_death_signal(parent: u32) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(std::io::Error::from)?;
    // The parent may have died between fork and prctl: then nobody would signal us.
    if nix::unistd::getppid().as_raw() as u32 != parent {
        // SAFETY: _exit is async-signal-safe and ends the forked child at once.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::_exit(1)
        };
    }
    Ok(())
}

/// The errno of the last call, after telling the parent which step failed.
#[allow(unsafe_code)]
fn failed(plan: &ExecPlan, step: Step) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    let byte = step as u8;
    // SAFETY: write(2) of one byte from a live stack variable to a descriptor the parent
    // opened for this (close-on-exec); async-signal-safe. A failed report only loses the
    // step's name, never the refusal.
    unsafe {
        libc::write(plan.report_fd, (&raw const byte).cast(), 1);
    }
    e
}

/// The sandbox, in an order that needs the privileges while they are there: the cgroup and
/// the network namespace first (they need root), Landlock before the user switch (as root it
/// needs no no_new_privs), the user last, then the parent-death signal again (a credential
/// change clears it).
#[allow(unsafe_code)]
fn enter(plan: &ExecPlan, parent: u32) -> std::io::Result<()> {
    // SAFETY (every block of this function): raw syscalls on integers, descriptors the parent
    // opened for this child, and memory allocated before the fork or on this stack; each is
    // async-signal-safe; none allocates or locks.
    for &fd in &plan.cgroup_procs {
        // "0" is the writing process itself (v1 and v2 alike).
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(failed(plan, Step::Cgroup));
        }
    }
    if plan.new_netns {
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(failed(plan, Step::Netns));
        }
        loopback_up().map_err(|()| failed(plan, Step::Loopback))?;
    }
    if let Some(n) = plan.max_open_files {
        let limit = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(failed(plan, Step::Rlimit));
        }
    }
    // prctl is variadic and the kernel reads its arguments as unsigned longs (and insists the
    // unused ones are 0): pass them at that width.
    let (one, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
    if plan.no_new_privs
        && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) } != 0
    {
        return Err(failed(plan, Step::NoNewPrivs));
    }
    if let Some(fd) = plan.landlock_fd
        && unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                libc::c_long::from(fd),
                zero as libc::c_long,
            )
        } != 0
    {
        return Err(failed(plan, Step::Landlock));
    }
    if let Some((uid, gid, groups)) = &plan.ids {
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(failed(plan, Step::Groups));
        }
        if unsafe { libc::setgid(*gid) } != 0 {
            return Err(failed(plan, Step::SetGid));
        }
        if unsafe { libc::setuid(*uid) } != 0 {
            return Err(failed(plan, Step::SetUid));
        }
        parent_death_signal(parent).map_err(|_| failed(plan, Step::ParentDeath))?;
    }
    Ok(())
}

/// Brings `lo` up in the new network namespace (so the child can still talk to itself).
#[allow(unsafe_code)]
fn loopback_up() -> Result<(), ()> {
    // SAFETY: socket/ioctl/close on a stack-allocated, zero-initialised `ifreq` (a plain C
    // struct for which all-zero is valid); async-signal-safe.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        let ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 && {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) == 0
        };
        libc::close(s);
        if ok { Ok(()) } else { Err(()) }
    }
}
