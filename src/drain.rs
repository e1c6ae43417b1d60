//! Serving and stopping: [`serve`] runs the router on a bound listener, loads the JWKS keys,
//! fills the warm pools and reaps idle sessions; on the shutdown signal it drains — readiness
//! off, new sessions refused, existing ones given `shutdown_grace_secs` — then stops every
//! child within a bound (DESIGN §5; STYLE habit 7).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::edge::tls::Tls;
use crate::error::StartError;
use crate::http::AppState;
use crate::reload::{self, Reloader};

pub const STOP_BOUND: Duration = Duration::from_secs(10);

/// Serves a prepared state (tests build the state themselves) until `shutdown` resolves, then
/// drains (DESIGN §5):
/// 1. `draining`: `/readyz` answers 503 and new sessions (and new sessionless requests) get
///    503 at once; the listener stays open, so existing sessions (whose POSTs may come on new
///    connections) keep working;
/// 2. when the last session has ended the listener closes and the exchanges still in flight
///    may finish — all within `shutdown_grace_secs` from the signal;
/// 3. then every remaining child is stopped — its in-flight requests are answered with a
///    JSON-RPC error and its stream ends — and reaped; streams still open are cancelled
///    (bounded by [`STOP_BOUND`]).
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    serve_with(state, listener, shutdown, None).await
}

/// As [`serve`]; with a [`Reloader`], SIGHUP also reloads the config file.
pub(crate) async fn serve_with(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloader: Option<Reloader>,
) -> Result<(), StartError> {
    // Before "listening": from then on a SIGHUP (logrotate, a reload) may come, and without a
    // handler its default action would end the process.
    start_hangup_listener(&state, reloader);
    let live = state.live();
    tracing::info!(
        addr = %listener.local_addr()?,
        public_url = %state.public_url,
        config_generation = live.generation,
        config_sha256 = %live.sha256,
        "listening"
    );
    reload::start_key_loading(&live);
    start_idle_reaper(&state);
    for server in live.servers.values() {
        reload::fill_warm_pool(server);
    }
    let app = crate::http::router::router(state.clone());
    let tls = Tls::load(&live.config.listen, state.metrics.edge())?;
    if let Some(tls) = &tls {
        tls.clone().watch(state.shutdown.clone());
    }
    let close_listener = CancellationToken::new();
    let server = crate::edge::serve(
        listener,
        app,
        crate::edge::Settings::new(&live.config),
        tls,
        state.metrics.edge(),
        close_listener.clone(),
    );
    let mut server = tokio::spawn(server);
    tokio::select! {
        _ = shutdown => {}
        // Not expected: the accept loop returns only after the graceful shutdown asked for below.
        result = &mut server => {
            state.shutdown.cancel();
            return match result {
                Ok(r) => r.map_err(StartError::Io),
                Err(e) => Err(StartError::Io(std::io::Error::other(e))),
            };
        }
    }
    let grace = Duration::from_secs(state.live().config.http.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        sessions = state.sessions.len(),
        grace_secs = grace.as_secs(),
        "draining: new sessions refused, existing sessions may finish"
    );
    state.draining.cancel();
    if tokio::time::timeout_at(deadline, state.sessions.wait_empty())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = state.sessions.len(),
            "shutdown_grace_secs passed; stopping the remaining sessions"
        );
    }
    // No session needs the listener any more. Closing it lets the exchanges in flight (a
    // sessionless request on a pooled child) finish, within what is left of the grace.
    close_listener.cancel();
    let mut served = tokio::time::timeout_at(deadline, &mut server).await.is_ok();
    if !served {
        tracing::warn!(
            in_flight = state.pool.in_flight(),
            "shutdown_grace_secs passed with requests in flight; stopping their children"
        );
    }
    for session in state.sessions.all() {
        state.sessions.remove(&session.id);
    }
    state.pool.stop_all();
    for server in state.live().servers.values() {
        if let Some(warm) = server.warm.get() {
            warm.clear();
        }
    }
    state.tracker.close();
    let stopped = tokio::time::timeout(STOP_BOUND, async {
        state.tracker.wait().await;
        state.shutdown.cancel();
        if !served {
            let _ = (&mut server).await;
            served = true;
        }
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("children or connections did not stop in time");
        state.shutdown.cancel();
        if !served {
            server.abort();
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP never stops the proxy (its default action would): it reloads the config file (with
/// a [`Reloader`]), reopens the audit log and checks the TLS files (their own listeners act
/// on those two).
fn start_hangup_listener(state: &Arc<AppState>, reloader: Option<Reloader>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP");
        return;
    };
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = hangup.recv() => match &reloader {
                    Some(reloader) => {
                        tracing::info!("SIGHUP: reloading the config; the audit log is reopened and the TLS files checked");
                        reloader.reload(&state).await;
                    }
                    None => tracing::info!(
                        "SIGHUP: the audit log is reopened and the TLS files checked (no config file to reload)"
                    ),
                },
                () = state.shutdown.cancelled() => return,
            }
        }
    });
}

/// Ends sessions and pool children idle for longer than `sessions.idle_timeout_secs` — also
/// legacy sessions whose stream is open but silent (a stream a client forgot holds a child).
fn start_idle_reaper(state: &Arc<AppState>) {
    let idle_now =
        |state: &AppState| Duration::from_secs(state.live().config.sessions.idle_timeout_secs);
    let every = (idle_now(state) / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A reload may change the timeout (the tick stays as it was at start).
            let idle = idle_now(&state);
            for session in state.sessions.all() {
                if !session.is_busy()
                    && session.idle_for() >= idle
                    && state.sessions.remove(&session.id).is_some()
                {
                    tracing::info!(session = %session.id, "session idle for {}s; ended", idle.as_secs());
                }
            }
            let reaped = state.pool.reap_idle(idle);
            if reaped > 0 {
                tracing::info!(reaped, "idle children stopped");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::budget::Budget;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, env};
    use crate::mux::{Dispatch, Mux, queue};
    use crate::protocol::jsonrpc::client_message;
    use crate::session::{Kind, Standalone};

    /// The reaper ends a session idle past `idle_timeout_secs` but leaves one with a request in
    /// flight alone; time is paused and advanced instead of waited for.
    #[tokio::test(start_paused = true)]
    async fn idle_sessions_are_reaped_busy_ones_kept() {
        let text = format!("[sessions]\nidle_timeout_secs = 60\n{MINIMAL}");
        let config = Config::parse(&text, &env()).expect("config");
        let addr = "127.0.0.1:9".parse().expect("addr");
        let state = crate::build_state(config, addr, &env()).expect("state");
        let streamable = || Kind::Streamable {
            standalone: Arc::new(Standalone::new(Budget::new(1 << 20), 1 << 20)),
            share: None,
        };
        let open = |id: &str| {
            let (mux, _stdin) = Mux::in_memory(Duration::from_secs(600), &state.tracker);
            let owner = crate::auth::PrincipalKey {
                iss: "dev".into(),
                sub: id.into(),
            };
            let slot = state.sessions.reserve(&owner).expect("slot");
            state
                .sessions
                .insert(id.into(), slot, "default", mux, streamable())
        };
        let _idle = open("idle");
        let busy = open("busy");
        let (tx, _rx) = queue(4, Budget::new(1 << 20));
        let call = client_message(
            json!({"jsonrpc":"2.0","id":1,"method":"ping"})
                .to_string()
                .as_bytes(),
        )
        .expect("body");
        let dispatch = Dispatch {
            owner: Some(busy.tag),
            tx,
            cancel_on_drop: false,
            timeout: true,
            finish: None,
            audit: None,
            trace: None,
        };
        let _ticket = busy.mux.send(&call, dispatch).await.expect("sent");
        start_idle_reaper(&state);
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert_eq!(state.sessions.len(), 2, "nothing is idle for 60 s yet");
        tokio::time::sleep(Duration::from_secs(30)).await;
        let left: Vec<String> = state.sessions.all().iter().map(|s| s.id.clone()).collect();
        assert_eq!(left, vec!["busy".to_owned()], "only the idle session ended");
        state.shutdown.cancel();
    }
}
