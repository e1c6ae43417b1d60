//! The scenarios beyond steady load: `idle-N` (RSS with N idle sessions), `setup` (connect →
//! first tool result, cold and with a warm pool) and the `--scale` soak.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[path = "sandboxed.rs"]
mod sandboxed;

use crate::procs::{self, Proxy, ServerCmd};
use crate::report::{Report, Row};
use crate::transport::{FIRST_CALL_ID, Session, Target};
use crate::{Args, Tally, echo, mib};

/// Opens `n` sessions concurrently (at most `parallel` at a time).
async fn open_many(target: &Target, n: usize, parallel: usize) -> (Vec<Session>, u64, String) {
    let mut out = Vec::with_capacity(n);
    let mut errors = 0;
    let mut note = String::new();
    let mut started = 0;
    let mut set = tokio::task::JoinSet::new();
    while started < n || !set.is_empty() {
        while started < n && set.len() < parallel {
            let t = target.clone();
            set.spawn(async move { Session::open(&t).await });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => out.push(s),
            Some(Ok(Err(e))) => {
                errors += 1;
                note = format!("{e:#}");
            }
            Some(Err(_)) => errors += 1,
            None => break,
        }
    }
    (out, errors, note)
}

/// `n` idle legacy SSE sessions (each with its child); the proxy's RSS with them open.
pub(crate) async fn idle(proxy: &Proxy, token: &Arc<str>, n: usize) -> Row {
    let mut row = Row::new(&format!("idle-{n}"), "proxy-sse");
    let before = proxy.rss();
    let target = Target::LegacySse {
        addr: proxy.addr.clone(),
        path: "/sse".into(),
        token: Some(token.clone()),
    };
    let t0 = Instant::now();
    let (sessions, errors, note) = open_many(&target, n, 32).await;
    let opened_in = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proxy.rss();
    row.calls = sessions.len() as u64;
    row.errors = errors;
    row.rss_mib = after.map(mib);
    let children = procs::children_of(proxy.pid).len();
    row.note = format!(
        "{} sessions open ({children} children) in {:.1} s; RSS before {} MiB, {:.1} KiB/session; proxy fds {}, threads {}{}",
        sessions.len(),
        opened_in.as_secs_f64(),
        before.map(mib).map_or("-".into(), |m| format!("{m:.1}")),
        match (before, after) {
            (Some(b), Some(a)) if !sessions.is_empty() =>
                (a.saturating_sub(b)) as f64 / 1024.0 / sessions.len() as f64,
            _ => 0.0,
        },
        procs::fd_count(proxy.pid).unwrap_or(0),
        procs::thread_count(proxy.pid).unwrap_or(0),
        if note.is_empty() {
            String::new()
        } else {
            format!("; last error: {note}")
        }
    );
    for s in sessions {
        s.close().await;
    }
    wait_children(proxy.pid, Duration::from_secs(30)).await;
    row
}

/// Waits (bounded) until the proxy has no children left.
async fn wait_children(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline && !procs::children_of(pid).is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Time from connect to the first tool result, one session after another.
pub(crate) async fn setup_series(target: &Target, n: usize, pause: Duration) -> Row {
    let mut row = Row::new("setup", "");
    let mut samples = Vec::new();
    for i in 0..n {
        let t0 = Instant::now();
        let result = async {
            let session = Session::open(target).await?;
            let mut lane = session.lane().await?;
            let ok = echo(&session, &mut lane, FIRST_CALL_ID).await?;
            Ok::<_, anyhow::Error>((session, ok))
        }
        .await;
        match result {
            Ok((session, ok)) => {
                samples.push(t0.elapsed().as_nanos() as u64);
                row.calls += 1;
                if !ok {
                    row.mismatched += 1;
                }
                session.close().await;
            }
            Err(e) => {
                row.errors += 1;
                row.note = format!("{e:#}");
            }
        }
        if i + 1 < n {
            tokio::time::sleep(pause).await;
        }
    }
    row.set_latencies(&mut samples);
    row
}

pub(crate) async fn setup(
    args: &Args,
    proxy_bin: &Path,
    server: &str,
    proxy: &Proxy,
    token: &Arc<str>,
    report: &mut Report,
) {
    let n = args.setup_iterations;
    let pause = Duration::from_millis(1500);
    eprintln!("setup (bundled server) ...");
    let mut row = setup_series(
        &Target::Stdio {
            program: server.into(),
            args: vec![],
        },
        n,
        Duration::from_millis(100),
    )
    .await;
    row.target = "direct example".into();
    report.rows.push(row);
    let mut row = setup_series(
        &Target::LegacySse {
            addr: proxy.addr.clone(),
            path: "/sse".into(),
            token: Some(token.clone()),
        },
        n,
        Duration::from_millis(100),
    )
    .await;
    row.target = "proxy-sse example cold".into();
    report.rows.push(row);
    sandboxed::setup(args, proxy_bin, server, report).await;

    let Some(everything) = &args.everything else {
        report
            .notes
            .push("setup with server-everything not run (no --everything)".into());
        return;
    };
    let mut parts = everything.split_whitespace().map(str::to_owned);
    let Some(command) = parts.next() else {
        return;
    };
    let cmd_args: Vec<String> = parts.collect();
    eprintln!("setup (server-everything) ...");
    let mut row = setup_series(
        &Target::Stdio {
            program: command.clone(),
            args: cmd_args.clone(),
        },
        n,
        pause,
    )
    .await;
    row.target = "direct everything".into();
    report.rows.push(row);
    sandboxed::everything(args, proxy_bin, &command, &cmd_args, report).await;
    for (label, warm_pool) in [("cold", 0), ("warm4", 4)] {
        let server = ServerCmd {
            command: command.clone(),
            args: cmd_args.clone(),
            warm_pool,
        };
        let p = match Proxy::start(proxy_bin, &server, &args.proxy_log).await {
            Ok(p) => p,
            Err(e) => {
                report
                    .notes
                    .push(format!("setup {label}: proxy did not start: {e:#}"));
                continue;
            }
        };
        // A pool fills after start-up: give it time, as a deployed proxy would have had.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = match p.token("setup", Duration::from_secs(3600)) {
            Ok(t) => t,
            Err(_) => continue,
        };
        let target = Target::LegacySse {
            addr: p.addr.clone(),
            path: "/sse".into(),
            token: Some(t.into()),
        };
        let mut row = setup_series(&target, n, pause).await;
        row.target = format!("proxy-sse everything {label}");
        report.rows.push(row);
        p.stop().await;
    }
}

/// The scale soak: `scale_sessions` legacy SSE sessions, each its own child, each making one
/// call per second for `scale_secs`.
pub(crate) async fn scale(args: &Args, proxy: &Proxy) -> Row {
    let n = args.scale_sessions;
    let mut row = Row::new(&format!("scale-{n}x{}s", args.scale_secs), "proxy-sse");
    let token: Arc<str> = match proxy.token("scale", Duration::from_secs(6 * 3600)) {
        Ok(t) => t.into(),
        Err(e) => {
            row.note = format!("{e:#}");
            return row;
        }
    };
    let target = Target::LegacySse {
        addr: proxy.addr.clone(),
        path: "/sse".into(),
        token: Some(token),
    };
    eprintln!("opening {n} sessions ...");
    let t0 = Instant::now();
    let (sessions, open_errors, note) = open_many(&target, n, 32).await;
    let opened_in = t0.elapsed();
    eprintln!(
        "{} sessions open in {:.1} s ({open_errors} failed)",
        sessions.len(),
        opened_in.as_secs_f64()
    );
    let children = procs::children_of(proxy.pid).len();
    let fds_open = procs::fd_count(proxy.pid).unwrap_or(0);
    let threads = procs::thread_count(proxy.pid).unwrap_or(0);
    let tally = Arc::new(Tally::default());
    let period = Duration::from_secs(1);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(args.scale_secs);
    let mut tasks = tokio::task::JoinSet::new();
    let count = sessions.len().max(1);
    let mut max_rss = 0u64;
    for (i, session) in sessions.into_iter().enumerate() {
        let tally = tally.clone();
        // Spread the sessions' calls evenly over each second.
        let offset = period.mul_f64(i as f64 / count as f64);
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(args_cap(period, end.duration_since(start)));
            let mut lane = match session.lane().await {
                Ok(l) => l,
                Err(_) => {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    return (samples, session);
                }
            };
            let mut next = start + offset;
            let mut id = FIRST_CALL_ID;
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                let t0 = Instant::now();
                match echo(&session, &mut lane, id).await {
                    Ok(ok) => {
                        samples.push(t0.elapsed().as_nanos() as u64);
                        tally.calls.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            tally.mismatched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(l) = session.lane().await {
                            lane = l;
                        }
                    }
                }
                id += 1;
                next += period;
            }
            (samples, session)
        });
    }
    // Sample the proxy's RSS while the soak runs.
    let sampler_end = end;
    while Instant::now() < sampler_end {
        if let Some(r) = proxy.rss() {
            max_rss = max_rss.max(r);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut samples = Vec::new();
    let mut done = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok((s, session)) = r {
            samples.extend(s);
            done.push(session);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    row.calls = tally.calls.load(Ordering::Relaxed);
    row.errors = open_errors + tally.errors.load(Ordering::Relaxed);
    row.mismatched = tally.mismatched.load(Ordering::Relaxed);
    row.foreign = done
        .iter()
        .map(|s| s.counters().foreign.load(Ordering::Relaxed))
        .sum();
    row.calls_per_sec = Some(row.calls as f64 / elapsed);
    row.rss_mib = Some(mib(max_rss));
    row.set_latencies(&mut samples);
    row.note = format!(
        "{} sessions opened in {:.1} s; proxy: {children} children, {fds_open} fds, {threads} threads, peak RSS {:.1} MiB{}",
        done.len(),
        opened_in.as_secs_f64(),
        mib(max_rss),
        if note.is_empty() {
            String::new()
        } else {
            format!("; last open error: {note}")
        }
    );
    for s in done {
        s.close().await;
    }
    wait_children(proxy.pid, Duration::from_secs(60)).await;
    row
}

fn args_cap(period: Duration, total: Duration) -> usize {
    (total.as_secs_f64() / period.as_secs_f64()).ceil() as usize + 1
}
