//! `loadgen`: the load generator of issue 7. It starts the proxy (release build) with a
//! generated config and an HS256 secret, drives it over legacy SSE and Streamable HTTP (both
//! eras), drives supergateway and the bare child over stdio as baselines in the same run, and
//! prints a table with the issue's targets and whether they were met.
//!
//! Scenarios: `lat-1x1` (one session, one call in flight), `tput-1x16` (one session, 16 in
//! flight), `tput-50x1` (50 sessions, each its own child), `idle-N` (N idle sessions, proxy
//! RSS), `setup` (connect → first tool result, cold and with a warm pool), and with
//! `--scale` the 2,000-session soak. Every call is `tools/call echo` with a unique marker; an
//! answer without the marker counts as mismatched, one with an id nobody waits for as foreign.
//!
//! Run through `scripts/bench.sh` (builds, installs supergateway, raises `ulimit -n`).
//! Only loopback is ever contacted; every loop is bounded by a deadline.

mod http;
mod otlp_sink;
mod procs;
mod report;
mod scenarios;
mod targets;
mod tls;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;

use procs::{Features, Proxy, ServerCmd, Supergateway};
use report::{Report, Row};
use transport::{FIRST_CALL_ID, MARKER, Session, Target, answer_matches};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    about = "Load generator for mcp-auth-proxy (issue 7)"
)]
pub(crate) struct Args {
    /// The proxy binary (default: target/release/mcp-auth-proxy).
    #[arg(long)]
    proxy: Option<PathBuf>,
    /// The wrapped stdio server (default: target/release/mcp-example-server).
    #[arg(long)]
    server: Option<PathBuf>,
    /// supergateway's executable (e.g. benches/node_modules/.bin/supergateway); omitted: no
    /// comparison rows.
    #[arg(long)]
    supergateway: Option<PathBuf>,
    /// The command line of @modelcontextprotocol/server-everything for `setup`, e.g.
    /// "node tests/interop/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio".
    #[arg(long)]
    everything: Option<String>,
    /// Comma-separated scenarios: lat-1x1, tput-1x16, tput-50x1, idle, setup.
    #[arg(long, default_value = "lat-1x1,tput-1x16,tput-50x1,idle,setup")]
    scenarios: String,
    /// Comma-separated targets: direct, proxy-sse, proxy-streamable, proxy-modern,
    /// supergateway, http-floor (GET /healthz on the proxy: HTTP alone, no auth, no child),
    /// tls-sse, tls-streamable, tls-modern (a second proxy, with TLS on its listener),
    /// audit-sse, audit-streamable, audit-modern (a third, with the audit log on),
    /// otel-sse, otel-streamable, otel-modern (a fourth, with telemetry on, exporting to a sink).
    #[arg(
        long,
        default_value = "direct,proxy-sse,proxy-streamable,proxy-modern,supergateway,http-floor"
    )]
    targets: String,
    /// Measured seconds per load run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Rounds of the load scenarios: each runs every target once, one after the other, and
    /// each row is the target's median round by calls/s (its note gives the range).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Unmeasured warm-up seconds before each load run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Sessions held by the idle scenario.
    #[arg(long, default_value_t = 1000)]
    idle_sessions: usize,
    /// Sessions set up one after another by the setup scenario, per variant.
    #[arg(long, default_value_t = 10)]
    setup_iterations: usize,
    /// Run only the scale soak: --scale-sessions sessions, each its own child, one call per
    /// second each for --scale-secs.
    #[arg(long)]
    scale: bool,
    #[arg(long, default_value_t = 2000)]
    scale_sessions: usize,
    #[arg(long, default_value_t = 60)]
    scale_secs: u64,
    /// RUST_LOG for the proxy.
    #[arg(long, default_value = "warn")]
    proxy_log: String,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the report as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Free text describing the machine, printed with the table.
    #[arg(long, default_value = "")]
    machine: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (soft, hard) = procs::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut report = runtime.block_on(run(args.clone(), soft, hard))?;
    report.compute_checks(args.idle_sessions);
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown())?;
    }
    Ok(())
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_owned())
        .filter(|x| !x.is_empty())
        .collect()
}

async fn run(args: Args, soft: u64, hard: u64) -> Result<Report> {
    let proxy_bin = args
        .proxy
        .clone()
        .unwrap_or_else(|| procs::default_bin("mcp-auth-proxy"));
    let server_bin = args
        .server
        .clone()
        .unwrap_or_else(|| procs::default_bin("mcp-example-server"));
    for bin in [&proxy_bin, &server_bin] {
        if !bin.exists() {
            bail!(
                "{} not found (build with cargo build --release)",
                bin.display()
            );
        }
    }
    let server = server_bin.to_string_lossy().into_owned();
    let mut report = Report {
        machine: format!(
            "{}; loadgen open-file limit {soft}/{hard}",
            if args.machine.is_empty() {
                format!(
                    "{} cores",
                    std::thread::available_parallelism().map_or(0, |n| n.get())
                )
            } else {
                args.machine.clone()
            },
        ),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Report::default()
    };
    let proxy = Proxy::start(
        &proxy_bin,
        &ServerCmd {
            command: server.clone(),
            args: vec![],
            warm_pool: 0,
        },
        &args.proxy_log,
    )
    .await?;
    eprintln!("proxy pid {} on {}", proxy.pid, proxy.addr);
    if args.scale {
        let row = scenarios::scale(&args, &proxy).await;
        report.rows.push(row);
        proxy.stop().await;
        return Ok(report);
    }

    let scenarios = list(&args.scenarios);
    let wanted = list(&args.targets);
    let sg = match (
        &args.supergateway,
        wanted.iter().any(|t| t == "supergateway"),
    ) {
        (Some(bin), true) => match Supergateway::start(bin, &server).await {
            Ok(sg) => Some(sg),
            Err(e) => {
                report.notes.push(format!("supergateway not run: {e:#}"));
                None
            }
        },
        _ => None,
    };
    let token: Arc<str> = proxy.token("bench", Duration::from_secs(6 * 3600))?.into();
    // The same proxy and server with TLS on the listener, for the tls-* rows.
    let tls_proxy = if wanted.iter().any(|t| t.starts_with("tls-")) {
        let files = tls::setup()?;
        let p = Proxy::start_with(
            &proxy_bin,
            &ServerCmd {
                command: server.clone(),
                args: vec![],
                warm_pool: 0,
            },
            &args.proxy_log,
            Some(&files),
        )
        .await?;
        eprintln!("TLS proxy pid {} on {}", p.pid, p.addr);
        Some((p, files))
    } else {
        None
    };
    // The same proxy with the audit log on (audit-* rows), and with telemetry on, every trace
    // sampled and exported to a sink of the loadgen's own (otel-* rows).
    let wants = |prefix: &str| wanted.iter().any(|t| t.starts_with(prefix));
    let sink = wants("otel-").then(otlp_sink::Sink::start).transpose()?;
    let mut featured: Vec<(&str, Proxy, Arc<str>)> = Vec::new();
    for (prefix, features) in [
        (
            "audit-",
            Features {
                audit: true,
                otlp_endpoint: None,
            },
        ),
        (
            "otel-",
            Features {
                audit: false,
                otlp_endpoint: sink.as_ref().map(|s| s.url.clone()),
            },
        ),
    ] {
        if !wants(prefix) {
            continue;
        }
        let cmd = ServerCmd {
            command: server.clone(),
            args: vec![],
            warm_pool: 0,
        };
        let p = Proxy::start_full(&proxy_bin, &cmd, &args.proxy_log, None, &features).await?;
        eprintln!("{prefix}proxy pid {} on {}", p.pid, p.addr);
        let token = p.token("bench", Duration::from_secs(6 * 3600))?.into();
        featured.push((prefix, p, token));
    }
    let featured_proxy = |name: &str| {
        featured
            .iter()
            .find(|(prefix, ..)| name.starts_with(prefix))
    };
    let tls_token: Option<Arc<str>> = match &tls_proxy {
        Some((p, _)) => Some(p.token("bench", Duration::from_secs(6 * 3600))?.into()),
        None => None,
    };
    let mut targets: Vec<(&str, Target)> = Vec::new();
    for name in &wanted {
        let t = match name.as_str() {
            "direct" => Target::Stdio {
                program: server.clone(),
                args: vec![],
            },
            "proxy-sse" | "proxy-streamable" | "proxy-modern" => {
                targets::mcp(name, proxy.addr.clone(), Some(token.clone()))
            }
            "tls-sse" | "tls-streamable" | "tls-modern" | "audit-sse" | "audit-streamable"
            | "audit-modern" | "otel-sse" | "otel-streamable" | "otel-modern" => {
                let (p, token) = if name.starts_with("tls-") {
                    let (Some((p, _)), Some(token)) = (&tls_proxy, &tls_token) else {
                        continue;
                    };
                    (p, token)
                } else {
                    let Some((_, p, token)) = featured_proxy(name) else {
                        continue;
                    };
                    (p, token)
                };
                targets::mcp(name, p.addr.clone(), Some(token.clone()))
            }
            "http-floor" => Target::HttpFloor {
                addr: proxy.addr.clone(),
                path: "/healthz".into(),
            },
            "supergateway" => match &sg {
                Some(sg) => Target::LegacySse {
                    addr: sg.addr.clone(),
                    path: "/sse".into(),
                    token: None,
                },
                None => continue,
            },
            other => bail!("unknown target {other}"),
        };
        targets.push((name.as_str(), t));
    }

    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);
    for scenario in &scenarios {
        let (sessions, lanes) = match scenario.as_str() {
            "lat-1x1" => (1, 1),
            "tput-1x16" => (1, 16),
            "tput-50x1" => (50, 1),
            _ => (0, 0),
        };
        // Each round runs every target once, in order: a slow spell of the machine falls on
        // all of them, and the median round of each target is its row.
        let mut runs: Vec<Vec<Row>> = vec![Vec::new(); targets.len()];
        for round in 0..if sessions > 0 { args.rounds.max(1) } else { 0 } {
            for (i, (name, target)) in targets.iter().enumerate() {
                // supergateway shares one child between all its sessions and broadcasts
                // every answer to all of them: only single-session runs compare.
                if *name == "supergateway" && sessions > 1 {
                    continue;
                }
                eprintln!("{scenario} {name} (round {}) ...", round + 1);
                // The proxy the row measures.
                let measured = match &tls_proxy {
                    Some((p, _)) if name.starts_with("tls-") => p,
                    _ => featured_proxy(name).map_or(&proxy, |(_, p, _)| p),
                };
                let cpu_pid = match *name {
                    "direct" => None,
                    "supergateway" => sg.as_ref().and_then(|s| s.pid()),
                    _ => Some(measured.pid),
                };
                // Every session its own child: a 2026-07-28 "session" is a principal (the
                // proxy keeps one child per principal), so each gets its own token.
                let per_session: Vec<Target> = match target {
                    Target::Modern { addr, path, .. } if sessions > 1 => (0..sessions)
                        .map(|i| {
                            let token = measured
                                .token(&format!("bench-{i}"), Duration::from_secs(6 * 3600));
                            token.map(|t| Target::Modern {
                                addr: addr.clone(),
                                path: path.clone(),
                                token: Some(t.into()),
                            })
                        })
                        .collect::<Result<_>>()?,
                    _ => vec![target.clone()],
                };
                let mut row = load(&per_session, sessions, lanes, warmup, duration, cpu_pid).await;
                row.scenario = scenario.clone();
                row.target = (*name).into();
                row.rss_mib = match *name {
                    "direct" => None,
                    "supergateway" => sg
                        .as_ref()
                        .and_then(|s| s.pid())
                        .and_then(procs::rss_of)
                        .map(mib),
                    _ => row.rss_mib.or(measured.rss().map(mib)),
                };
                runs[i].push(row);
                // Let the proxy reap the children of the run before the next.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        report
            .rows
            .extend(runs.into_iter().filter_map(report::median_round));
        match scenario.as_str() {
            "idle" => {
                eprintln!("idle-{} proxy-sse ...", args.idle_sessions);
                // A fresh proxy: the load runs leave per-principal children (2026-07-28
                // traffic) in its pool until they idle out, which are not this scenario's.
                let fresh = Proxy::start(
                    &proxy_bin,
                    &ServerCmd {
                        command: server.clone(),
                        args: vec![],
                        warm_pool: 0,
                    },
                    &args.proxy_log,
                )
                .await?;
                let fresh_token: Arc<str> =
                    fresh.token("bench", Duration::from_secs(6 * 3600))?.into();
                report
                    .rows
                    .push(scenarios::idle(&fresh, &fresh_token, args.idle_sessions).await);
                fresh.stop().await;
            }
            "setup" => {
                scenarios::setup(&args, &proxy_bin, &server, &proxy, &token, &mut report).await
            }
            _ => {}
        }
    }
    if let Some(sg) = sg {
        sg.stop().await;
    }
    if let Some((p, _files)) = tls_proxy {
        p.stop().await;
    }
    for (_, p, _) in featured {
        p.stop().await;
    }
    if let Some(sink) = &sink {
        // After the stop: the proxy exports what is queued on SIGTERM.
        let (exports, spans) = sink.counts();
        report.notes.push(format!(
            "otel-*: [telemetry] on, sample_ratio 1.0, the batch exporter posting to the \
             loadgen's OTLP/HTTP sink: {spans} spans received in {exports} exports"
        ));
    }
    proxy.stop().await;
    report.notes.push(
        "latency = POST sent → answer received (for legacy SSE: the 202 and the event both in); \
         calls/s over the measured window; RSS = VmRSS of the proxy process only"
            .into(),
    );
    Ok(report)
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Results gathered by the lanes of one run.
#[derive(Default)]
pub(crate) struct Tally {
    calls: AtomicU64,
    errors: AtomicU64,
    mismatched: AtomicU64,
}

/// One call of echo with a fresh marker; true when the answer carries it.
pub(crate) async fn echo(session: &Session, lane: &mut transport::Lane, id: u64) -> Result<bool> {
    let marker = format!("m{}", MARKER.fetch_add(1, Ordering::Relaxed));
    let args = format!(r#"{{"message":"{marker}"}}"#);
    let answer = session.call_tool(lane, id, "echo", &args).await?;
    if session.is_floor() {
        return Ok(&answer[..] == b"ok");
    }
    Ok(answer_matches(&answer, &marker))
}

/// `sessions` × `lanes` calls in flight for `warmup + duration`; the latencies of calls that
/// start after the warm-up are kept. Session `i` connects to `targets[i % targets.len()]`.
async fn load(
    targets: &[Target],
    sessions: usize,
    lanes: usize,
    warmup: Duration,
    duration: Duration,
    cpu_pid: Option<u32>,
) -> Row {
    let mut row = Row::new("", "");
    let mut opened = Vec::new();
    for i in 0..sessions {
        let Some(target) = targets.get(i % targets.len().max(1)) else {
            row.note = "no target".into();
            return row;
        };
        match Session::open(target).await {
            Ok(s) => opened.push(Arc::new(s)),
            Err(e) => {
                row.errors += 1;
                row.note = format!("session failed: {e:#}");
                break;
            }
        }
    }
    if opened.len() < sessions {
        for s in opened {
            if let Ok(s) = Arc::try_unwrap(s) {
                s.close().await;
            }
        }
        return row;
    }
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    // The server's CPU time over the measured window.
    let me = std::process::id();
    let cpu_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        (cpu_pid.and_then(procs::cpu_time), procs::cpu_time(me))
    });
    let mut tasks = tokio::task::JoinSet::new();
    for session in &opened {
        let next_id = Arc::new(AtomicU64::new(FIRST_CALL_ID));
        for _ in 0..lanes {
            let session = session.clone();
            let tally = tally.clone();
            let next_id = next_id.clone();
            tasks.spawn(async move {
                let mut samples: Vec<u64> = Vec::with_capacity(1 << 16);
                let mut lane = match session.lane().await {
                    Ok(l) => l,
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        return samples;
                    }
                };
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let outcome = echo(&session, &mut lane, id).await;
                    let measured = t0 >= measure_from;
                    match outcome {
                        Ok(matched) => {
                            if measured {
                                samples.push(t0.elapsed().as_nanos() as u64);
                                tally.calls.fetch_add(1, Ordering::Relaxed);
                                if !matched {
                                    tally.mismatched.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(_) => {
                            if measured {
                                tally.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            // A broken lane gets a fresh connection, not a busy loop.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if let Ok(l) = session.lane().await {
                                lane = l;
                            }
                        }
                    }
                }
                samples
            });
        }
    }
    let mut samples = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(s) = r {
            samples.extend(s);
        }
    }
    let elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let (cpu_end, client_end) = (cpu_pid.and_then(procs::cpu_time), procs::cpu_time(me));
    let (cpu_start, client_start) = cpu_start.await.unwrap_or((None, None));
    row.calls = tally.calls.load(Ordering::Relaxed);
    let per_call = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if row.calls > 0 => {
            Some(b.saturating_sub(a).as_secs_f64() * 1e6 / row.calls as f64)
        }
        _ => None,
    };
    row.cpu_us_per_call = per_call(cpu_start, cpu_end);
    if let Some(c) = per_call(client_start, client_end) {
        row.note = format!("loadgen {c:.1} µs CPU/call");
    }
    row.errors += tally.errors.load(Ordering::Relaxed);
    row.mismatched = tally.mismatched.load(Ordering::Relaxed);
    row.foreign = opened
        .iter()
        .map(|s| s.counters().foreign.load(Ordering::Relaxed))
        .sum();
    row.calls_per_sec = (elapsed > 0.0).then(|| row.calls as f64 / elapsed);
    row.set_latencies(&mut samples);
    for s in opened {
        if let Ok(s) = Arc::try_unwrap(s) {
            s.close().await;
        }
    }
    row
}
