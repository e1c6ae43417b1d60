//! `sandbox_probe`: what a contained child can see and do, for the proxy's sandbox tests — its
//! uid, NoNewPrivs, TMPDIR and cwd, and the outcome (`ok` or an errno name like `EACCES`) of a
//! read, a write, a TCP connect, an allocation and a fork bomb it is asked to try.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::rpc::{RpcError, RpcResult, u64_arg};
use crate::tools::text_result;

/// Upper bounds, so a typo cannot take the test machine down when run uncontained.
const MAX_ALLOC_BYTES: u64 = 8 << 30;
const MAX_FORKS: u64 = 4096;

/// Runs the probe; every attempt is optional and reported under its own key.
pub(crate) fn sandbox_probe(args: &Map<String, Value>) -> RpcResult {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let tmpdir = std::env::var("TMPDIR").ok();
    let mut out = json!({
        "uid": nix::unistd::getuid().as_raw(),
        "no_new_privs": field("NoNewPrivs:"),
        "tmpdir": tmpdir,
        "tmpdir_exists": tmpdir.as_deref().is_some_and(|t| std::path::Path::new(t).is_dir()),
        "cwd": std::env::current_dir().ok().map(|p| p.display().to_string()),
    });
    let string = |key: &str| args.get(key).and_then(Value::as_str);
    if let Some(path) = string("read") {
        out["read"] = outcome(std::fs::read(path).map(drop)).into();
    }
    if let Some(path) = string("write") {
        out["write"] = outcome(std::fs::write(path, b"probe")).into();
    }
    if let Some(addr) = string("connect") {
        let addr: SocketAddr = addr.parse().map_err(|_| {
            RpcError::invalid_params("`connect` must be an address like 127.0.0.1:80")
        })?;
        let connected = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop);
        out["connect"] = outcome(connected).into();
    }
    if args.contains_key("alloc") {
        let bytes = u64_arg(args, "alloc")?.min(MAX_ALLOC_BYTES);
        // Written, not only reserved: every page counts against the memory limit.
        let block = vec![1u8; bytes as usize];
        out["alloc"] = json!(format!(
            "ok ({} bytes)",
            block.iter().map(|b| *b as u64).sum::<u64>()
        ));
    }
    if args.contains_key("fork") {
        let n = u64_arg(args, "fork")?.min(MAX_FORKS);
        out["fork"] = fork_bomb(n);
    }
    text_result(out.to_string())
}

/// Starts up to `n` sleeping processes (they end with the server's process group); reports
/// how many started and the error that stopped the rest.
fn fork_bomb(n: u64) -> Value {
    let mut children: Vec<Child> = Vec::new();
    let mut error = None;
    // An absolute path: a PATH search would stop at the first directory the sandbox hides.
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("sleep");
    for _ in 0..n {
        match Command::new(sleep)
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => children.push(child),
            Err(e) => {
                error = Some(errno_name(&e));
                break;
            }
        }
    }
    let started = children.len();
    // Kept running until the session ends: the limit holds while they live.
    std::mem::forget(children);
    json!({ "started": started, "error": error })
}

fn outcome(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => errno_name(&e),
    }
}

/// `EACCES`, `ECONNREFUSED`, … (the error's text when it has no errno).
fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{:?}", nix::errno::Errno::from_raw(code)),
        None => e.to_string(),
    }
}
