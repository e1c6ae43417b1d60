//! What the tests read from /proc: whether a process lives, its parent and process group, its
//! environment and resident memory — one parser for `/proc/<pid>/stat`, one walk of /proc.

use std::time::Duration;

use super::wait::wait_until;

/// The fields of `/proc/<pid>/stat` the tests use.
struct Stat {
    zombie: bool,
    ppid: u32,
    pgrp: u32,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesized and may itself contain spaces and ')': the fields
    // that follow start after the last ')'. They are: state, ppid, pgrp, …
    let rest = text.rsplit(')').next()?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat {
        zombie: state == "Z",
        ppid,
        pgrp,
    })
}

/// Every live (non-zombie) process with its stat fields.
fn live_processes() -> Vec<(u32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(|pid| stat(pid).map(|s| (pid, s)))
        .filter(|(_, s)| !s.zombie)
        .collect()
}

/// True while a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| !s.zombie)
}

/// Waits (bounded) until the process is gone; true if it went.
pub async fn wait_gone(pid: u32, within: Duration) -> bool {
    wait_until(within, async || !process_alive(pid)).await
}

/// Pids of the live processes in a process group.
pub fn group_members(pgid: u32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|(_, s)| s.pgrp == pgid)
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits (bounded) until a process group is empty; true if it emptied.
pub async fn wait_group_empty(pgid: u32, within: Duration) -> bool {
    wait_until(within, async || group_members(pgid).is_empty()).await
}

/// Live descendants of `root` (children, grandchildren, …).
pub fn descendants(root: u32) -> Vec<u32> {
    let all = live_processes();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, s) in &all {
            if s.ppid == parent {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    out
}

/// Live processes whose environment carries `marker` (`NAME=value`): children and anything
/// they left behind, wherever it was reparented.
pub fn processes_with_env(marker: &str) -> Vec<u32> {
    live_processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect()
}

/// Resident memory of one process, in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
