//! The `mcp-auth-proxy` binary: CLI, logging, config loading (exit 64 on error, before any
//! port is bound), then `mcp_auth_proxy::run` (or a subcommand of [`cli`]).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mcp_auth_proxy::config::{Config, LogFormat as ConfigLogFormat, TelemetryConfig};
use mcp_auth_proxy::telemetry::Telemetry;
use mcp_auth_proxy::{LogLevelHook, Reloader};

/// Exit code for a configuration error (sysexits.h EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "mcp-auth-proxy",
    version,
    about = "An authenticating reverse proxy in front of stdio MCP servers"
)]
struct Cli {
    /// The config file.
    #[arg(long, short, env = "MCP_PROXY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format (default: `log.format` from the config, else text; the level comes from
    /// RUST_LOG, else `log.level`).
    #[arg(long, env = "MCP_PROXY_LOG_FORMAT", value_enum, global = true)]
    log_format: Option<LogFormat>,
    /// Listen on this address instead of `listen.addr` (`127.0.0.1:0`: any free port; the
    /// bound address is logged as `listening addr=…`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and print what it would serve.
    Check,
    /// Print an HMAC-signed token from a configured HS issuer (development and tests).
    Token {
        /// The token's subject.
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Which HS issuer signs (default: the first one).
        #[arg(long)]
        issuer: Option<String>,
        /// The audience (default: the proxy's public URL).
        #[arg(long)]
        aud: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(path) = cli.config.clone() else {
        eprintln!("mcp-auth-proxy: no config file: pass --config FILE or set MCP_PROXY_CONFIG");
        return ExitCode::from(EXIT_CONFIG);
    };
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-auth-proxy: {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(listen) = cli.listen.clone() {
        config.listen.addr = listen;
    }
    if let Err(e) = mcp_auth_proxy::check_tls(&config.listen) {
        eprintln!("mcp-auth-proxy: {}: {e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    // A sandbox this host cannot apply refuses to start: never a child with less containment.
    // (`token` spawns nothing: it does not care.)
    let sandboxes = match mcp_auth_proxy::check_sandboxes(&config) {
        Ok(s) => s,
        Err(_) if matches!(cli.command, Some(Command::Token { .. })) => Vec::new(),
        Err(e) => {
            if matches!(cli.command, Some(Command::Check)) {
                cli::print_host();
            }
            eprintln!("mcp-auth-proxy: {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let format = cli.log_format.unwrap_or(match config.log.format {
        ConfigLogFormat::Text => LogFormat::Text,
        ConfigLogFormat::Json => LogFormat::Json,
    });
    // Spans are exported only by a proxy that serves (not by `check` or `token`).
    let telemetry = cli.command.is_none().then_some(&config.telemetry);
    let (exporter, log_level) = match init_logging(format, &config.log.level, telemetry) {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("mcp-auth-proxy: {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = match cli.command {
        Some(Command::Check) => cli::check(&config, &sandboxes),
        Some(Command::Token {
            sub,
            scope,
            ttl,
            issuer,
            aud,
        }) => cli::token(&config, &sub, scope, ttl, issuer, aud),
        None => {
            let reloader = Reloader::new(path)
                .listen_override(cli.listen)
                .on_log_level(log_level);
            serve(config, reloader)
        }
    };
    // After the runtime is gone: the exporter's client blocks.
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    code
}

/// Installs the log subscriber (and, when `telemetry` is on, the span exporter); returns the
/// exporter and how a reload sets `log.level` (`RUST_LOG`, when set, overrides the file at
/// start and on every reload).
fn init_logging(
    format: LogFormat,
    level: &str,
    telemetry: Option<&TelemetryConfig>,
) -> Result<(Option<Telemetry>, LogLevelHook), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_wins = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    // Colours only for a person at a terminal, never in files or log collectors.
    let ansi = std::io::stderr().is_terminal();
    let traces = match telemetry {
        Some(config) => mcp_auth_proxy::telemetry::layer(config)?,
        None => None,
    };
    type Set = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
    let (set, exporter): (Set, _) = match traces {
        None => {
            // Without telemetry the subscriber is what it always was (a global filter).
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(std::io::stderr);
            let set: Set = match format {
                LogFormat::Text => {
                    let builder = builder.with_filter_reloading();
                    let handle = builder.reload_handle();
                    builder.init();
                    Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
                }
                LogFormat::Json => {
                    let builder = builder.json().with_filter_reloading();
                    let handle = builder.reload_handle();
                    builder.init();
                    Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
                }
            };
            (set, None)
        }
        Some((traces, exporter)) => {
            // With it, the log level filters the log layer only: spans are exported whatever
            // it is.
            let logs = tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr);
            let logs = match format {
                LogFormat::Text => logs.boxed(),
                LogFormat::Json => logs.json().boxed(),
            };
            let (filter, handle) = tracing_subscriber::reload::Layer::new(without_spans(filter));
            tracing_subscriber::registry()
                .with(logs.with_filter(filter))
                .with(traces)
                .init();
            let set: Set =
                Box::new(move |f| handle.reload(without_spans(f)).map_err(|e| e.to_string()));
            (set, Some(exporter))
        }
    };
    let hook: LogLevelHook = Box::new(move |level: &str| {
        if env_wins {
            return Err("RUST_LOG is set and overrides log.level".into());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        set(filter)?;
        tracing::info!(level, "log.level applied");
        Ok(())
    });
    Ok((exporter, hook))
}

/// The log layer never prints the exported spans (they are never entered); without this
/// directive it would still format their fields at every span's creation.
fn without_spans(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    match format!("{}=off", mcp_auth_proxy::telemetry::TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Raises the soft limit on open files to the hard limit: each session holds a client socket
/// and three pipes to its child, so the usual soft limit of 1024 caps the proxy at ~250
/// sessions long before memory or CPU does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, soft, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Runtime worker threads unless `TOKIO_WORKER_THREADS` says otherwise: half the cores,
/// rounded up. The wrapped servers do the real work and need the other half, and every
/// message crosses a pipe both ways: on 2 cores one worker used 10-25% less CPU per call than
/// two (fewer wake-ups between workers) at equal or better calls/s (README, "Benchmarks").
fn worker_threads() -> usize {
    if let Some(v) = std::env::var_os("TOKIO_WORKER_THREADS") {
        match v.to_str().and_then(|v| v.trim().parse::<usize>().ok()) {
            Some(n) if n > 0 => return n,
            _ => eprintln!(
                "mcp-auth-proxy: ignoring TOKIO_WORKER_THREADS={v:?} (not a positive integer)"
            ),
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.div_ceil(2)
}

/// One worker runs on tokio's current-thread scheduler: the same single thread of work
/// without the multi-thread scheduler's work-stealing bookkeeping, which on 2 cores served
/// 15-25% more calls/s at 10-20% less CPU per call (README, "Benchmarks"). Children are
/// spawned from this thread, which lives as long as the process (PR_SET_PDEATHSIG, `child.rs`).
fn runtime_builder(workers: usize) -> tokio::runtime::Builder {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    }
}

fn serve(config: Config, reloader: Reloader) -> ExitCode {
    raise_fd_limit();
    let mut builder = runtime_builder(worker_threads());
    builder.enable_all();
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-auth-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = match config.listen_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("mcp-auth-proxy: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mcp-auth-proxy: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match mcp_auth_proxy::run_reloadable(config, listener, shutdown_signal(), reloader).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcp-auth-proxy: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
