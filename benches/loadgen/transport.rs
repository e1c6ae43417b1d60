//! The transports the load generator speaks, behind one interface: a [`Session`] (one MCP
//! conversation) with any number of [`Lane`]s (one call in flight each).
//!
//! - `Stdio`: the wrapped server spawned directly, newline-delimited JSON-RPC on its pipes
//!   (the baseline: the cost of a bare pipe).
//! - `LegacySse`: `GET /sse` → `endpoint` event, `POST` to it (202), answers on the stream
//!   (spec 2024-11-05 §HTTP with SSE). Used for the proxy and for supergateway.
//! - `Streamable`: `POST /mcp` `initialize` → `Mcp-Session-Id`, later POSTs carry it; each
//!   answer on its POST's own response, JSON or SSE (spec 2025-11-25 Transports).
//! - `Modern`: `POST /mcp` with `MCP-Protocol-Version: 2026-07-28`, `Mcp-Method`, `Mcp-Name`
//!   and `_meta` in the body; no initialize, no session (spec 2026-07-28 Streamable HTTP).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{Mutex as AsyncMutex, oneshot};

use crate::http::{Conn, IO_TIMEOUT, SseReader, read_body};

pub(crate) const LEGACY_VERSION: &str = "2024-11-05";
pub(crate) const SESSION_VERSION: &str = "2025-11-25";
pub(crate) const MODERN_VERSION: &str = "2026-07-28";

/// What to connect to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// Spawn this program and talk to it over its pipes.
    Stdio { program: String, args: Vec<String> },
    /// `addr` is `host:port`; `path` the SSE endpoint (`/sse`).
    LegacySse {
        addr: String,
        path: String,
        token: Option<Arc<str>>,
    },
    /// `path` is the MCP endpoint (`/mcp`).
    Streamable {
        addr: String,
        path: String,
        token: Option<Arc<str>>,
    },
    Modern {
        addr: String,
        path: String,
        token: Option<Arc<str>>,
    },
    /// Not MCP: `GET path` (the proxy's `/healthz`) on the same lanes and connections. The
    /// cost of one HTTP exchange with this client and the proxy's HTTP stack, without auth or
    /// a child: the ceiling of any HTTP transport on this machine.
    HttpFloor { addr: String, path: String },
}

/// Answers waiting for their request, by id (the shared-stream transports).
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

/// Counters a session keeps about what arrived.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Responses whose id no request of this session is waiting for.
    pub(crate) foreign: AtomicU64,
}

pub(crate) enum Session {
    Stdio {
        child: Child,
        stdin: AsyncMutex<ChildStdin>,
        pending: Pending,
        counters: Arc<Counters>,
        reader: tokio::task::JoinHandle<()>,
    },
    LegacySse {
        addr: String,
        endpoint: String,
        auth: Option<String>,
        pending: Pending,
        counters: Arc<Counters>,
        reader: tokio::task::JoinHandle<()>,
    },
    Streamable {
        addr: String,
        path: String,
        auth: Option<String>,
        session_id: String,
        counters: Arc<Counters>,
    },
    Modern {
        addr: String,
        path: String,
        auth: Option<String>,
        counters: Arc<Counters>,
    },
    HttpFloor {
        addr: String,
        path: String,
        counters: Arc<Counters>,
    },
}

/// One call in flight at a time: its own connection for the HTTP transports.
pub(crate) struct Lane {
    conn: Option<Conn>,
}

/// Routing fields of one incoming message.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(borrow, default)]
    method: Option<&'a str>,
}

fn probe(data: &[u8]) -> Option<(Option<u64>, bool)> {
    let p: Probe<'_> = serde_json::from_slice(data).ok()?;
    Some((p.id.as_ref().and_then(|v| v.as_u64()), p.method.is_some()))
}

fn deliver(pending: &Pending, counters: &Counters, data: Bytes) {
    match probe(&data) {
        Some((Some(id), false)) => {
            let tx = pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
            match tx {
                Some(tx) => {
                    let _ = tx.send(data);
                }
                None => {
                    counters.foreign.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Notifications and server requests: not answers.
        Some((_, true)) | Some((None, false)) => {}
        None => {
            counters.foreign.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn bearer(token: &Option<Arc<str>>) -> Option<String> {
    token.as_ref().map(|t| format!("Bearer {t}"))
}

fn request_line(id: u64, method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

fn initialize_params(version: &str) -> String {
    format!(
        r#"{{"protocolVersion":"{version}","capabilities":{{}},"clientInfo":{{"name":"loadgen","version":"0"}}}}"#
    )
}

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// Request ids below this are the handshake's; calls count up from it.
pub(crate) const FIRST_CALL_ID: u64 = 16;

impl Session {
    /// Connects and (for eras that have one) runs the initialize handshake.
    pub(crate) async fn open(target: &Target) -> Result<Session> {
        let session = match target {
            Target::Stdio { program, args } => open_stdio(program, args).await?,
            Target::LegacySse { addr, path, token } => open_sse(addr, path, token).await?,
            Target::Streamable { addr, path, token } => open_streamable(addr, path, token).await?,
            Target::Modern { addr, path, token } => Session::Modern {
                addr: addr.clone(),
                path: path.clone(),
                auth: bearer(token),
                counters: Default::default(),
            },
            Target::HttpFloor { addr, path } => Session::HttpFloor {
                addr: addr.clone(),
                path: path.clone(),
                counters: Default::default(),
            },
        };
        Ok(session)
    }

    pub(crate) fn counters(&self) -> &Counters {
        match self {
            Session::Stdio { counters, .. }
            | Session::LegacySse { counters, .. }
            | Session::Streamable { counters, .. }
            | Session::Modern { counters, .. }
            | Session::HttpFloor { counters, .. } => counters,
        }
    }

    pub(crate) async fn lane(&self) -> Result<Lane> {
        let conn = match self {
            Session::Stdio { .. } => None,
            Session::LegacySse { addr, .. }
            | Session::Streamable { addr, .. }
            | Session::Modern { addr, .. }
            | Session::HttpFloor { addr, .. } => Some(Conn::open(addr).await?),
        };
        Ok(Lane { conn })
    }

    /// True for the `HttpFloor` pseudo-session (its answers are not JSON-RPC).
    pub(crate) fn is_floor(&self) -> bool {
        matches!(self, Session::HttpFloor { .. })
    }

    /// Calls `tools/call` `name` with `arguments` (JSON text) under `id`; returns the raw
    /// response message.
    pub(crate) async fn call_tool(
        &self,
        lane: &mut Lane,
        id: u64,
        name: &str,
        arguments: &str,
    ) -> Result<Bytes> {
        match self {
            Session::Modern { .. } => {
                let params = format!(
                    r#"{{"name":"{name}","arguments":{arguments},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN_VERSION}","io.modelcontextprotocol/clientInfo":{{"name":"loadgen","version":"0"}},"io.modelcontextprotocol/clientCapabilities":{{}}}}}}"#
                );
                let line = request_line(id, "tools/call", &params);
                self.request(lane, id, line, Some(name)).await
            }
            _ => {
                let params = format!(r#"{{"name":"{name}","arguments":{arguments}}}"#);
                let line = request_line(id, "tools/call", &params);
                self.request(lane, id, line, Some(name)).await
            }
        }
    }

    /// Sends one request and waits for its response.
    async fn request(
        &self,
        lane: &mut Lane,
        id: u64,
        line: String,
        name: Option<&str>,
    ) -> Result<Bytes> {
        match self {
            Session::Stdio { stdin, pending, .. } => {
                let rx = register(pending, id);
                {
                    let mut stdin = stdin.lock().await;
                    let mut bytes = line.into_bytes();
                    bytes.push(b'\n');
                    stdin.write_all(&bytes).await?;
                }
                await_answer(pending, id, rx).await
            }
            Session::LegacySse {
                endpoint,
                auth,
                pending,
                ..
            } => {
                let rx = register(pending, id);
                let conn = lane_conn(lane)?;
                let status = post(conn, endpoint, auth.as_deref(), &[], line).await?;
                if status.0 != 202 && status.0 != 200 {
                    remove(pending, id);
                    bail!("POST answered {}", status.0);
                }
                await_answer(pending, id, rx).await
            }
            Session::Streamable {
                path,
                auth,
                session_id,
                ..
            } => {
                let conn = lane_conn(lane)?;
                let headers = [
                    ("mcp-session-id", session_id.as_str()),
                    ("mcp-protocol-version", SESSION_VERSION),
                ];
                streamable_post(conn, path, auth.as_deref(), &headers, line, id).await
            }
            Session::HttpFloor { path, .. } => {
                let conn = lane_conn(lane)?;
                let response = conn
                    .request(http::Method::GET, path, &[], Bytes::new())
                    .await?;
                let status = response.status().as_u16();
                let body = read_body(response.into_body()).await?;
                if status != 200 {
                    bail!("GET {path} answered {status}");
                }
                Ok(body)
            }
            Session::Modern { path, auth, .. } => {
                let conn = lane_conn(lane)?;
                let mut headers = vec![
                    ("mcp-protocol-version", MODERN_VERSION),
                    ("mcp-method", "tools/call"),
                ];
                if let Some(name) = name {
                    headers.push(("mcp-name", name));
                }
                streamable_post(conn, path, auth.as_deref(), &headers, line, id).await
            }
        }
    }

    /// Ends the session: closes stdin / the stream / sends DELETE.
    pub(crate) async fn close(self) {
        match self {
            Session::Stdio {
                mut child,
                stdin,
                reader,
                ..
            } => {
                drop(stdin);
                if tokio::time::timeout(Duration::from_secs(2), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
                reader.abort();
            }
            Session::LegacySse { reader, .. } => reader.abort(),
            Session::Streamable {
                addr,
                path,
                auth,
                session_id,
                ..
            } => {
                if let Ok(mut conn) = Conn::open(&addr).await {
                    let mut headers = vec![("mcp-session-id", session_id.as_str())];
                    if let Some(a) = auth.as_deref() {
                        headers.push(("authorization", a));
                    }
                    let _ = conn
                        .request(http::Method::DELETE, &path, &headers, Bytes::new())
                        .await;
                }
            }
            Session::Modern { .. } | Session::HttpFloor { .. } => {}
        }
    }
}

fn lane_conn(lane: &mut Lane) -> Result<&mut Conn> {
    lane.conn
        .as_mut()
        .ok_or_else(|| anyhow!("lane without a connection"))
}

fn register(pending: &Pending, id: u64) -> oneshot::Receiver<Bytes> {
    let (tx, rx) = oneshot::channel();
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id, tx);
    rx
}

fn remove(pending: &Pending, id: u64) {
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&id);
}

async fn await_answer(pending: &Pending, id: u64, rx: oneshot::Receiver<Bytes>) -> Result<Bytes> {
    match tokio::time::timeout(IO_TIMEOUT, rx).await {
        Ok(Ok(data)) => Ok(data),
        Ok(Err(_)) => bail!("stream ended before the answer"),
        Err(_) => {
            remove(pending, id);
            bail!("no answer within {IO_TIMEOUT:?}")
        }
    }
}

/// POSTs a JSON body; returns the status and the body (for 202 the body is empty).
async fn post(
    conn: &mut Conn,
    path: &str,
    auth: Option<&str>,
    extra: &[(&str, &str)],
    body: String,
) -> Result<(u16, Bytes)> {
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    headers.extend_from_slice(extra);
    let response = conn
        .request(http::Method::POST, path, &headers, Bytes::from(body))
        .await?;
    let status = response.status().as_u16();
    let body = read_body(response.into_body()).await?;
    Ok((status, body))
}

/// A Streamable HTTP POST of one request: the answer is the JSON body, or the event on the
/// response's SSE stream whose id is ours (notifications before it are skipped).
async fn streamable_post(
    conn: &mut Conn,
    path: &str,
    auth: Option<&str>,
    extra: &[(&str, &str)],
    body: String,
    id: u64,
) -> Result<Bytes> {
    let (status, answer, _) = streamable_exchange(conn, path, auth, extra, body, Some(id)).await?;
    if status != 200 {
        bail!("POST answered {status}");
    }
    answer.ok_or_else(|| anyhow!("no answer on the response stream"))
}

/// The shared part of Streamable POSTs: status, the answer (if a request), response headers.
async fn streamable_exchange(
    conn: &mut Conn,
    path: &str,
    auth: Option<&str>,
    extra: &[(&str, &str)],
    body: String,
    id: Option<u64>,
) -> Result<(u16, Option<Bytes>, http::HeaderMap)> {
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    headers.extend_from_slice(extra);
    let response = conn
        .request(http::Method::POST, path, &headers, Bytes::from(body))
        .await?;
    let status = response.status().as_u16();
    let head = response.headers().clone();
    let is_sse = head
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = response.into_body();
    let Some(id) = id else {
        let _ = read_body(body).await?;
        return Ok((status, None, head));
    };
    if !is_sse {
        let data = read_body(body).await?;
        return Ok((status, (!data.is_empty()).then_some(data), head));
    }
    let mut reader = SseReader::new(body);
    while let Some(event) = reader.next(IO_TIMEOUT).await? {
        if event.event != "message" {
            continue;
        }
        if let Some((Some(got), false)) = probe(&event.data) {
            if got == id {
                return Ok((status, Some(event.data), head));
            }
            bail!("foreign answer (id {got}) on the response stream of {id}");
        }
    }
    Ok((status, None, head))
}

async fn open_stdio(program: &str, args: &[String]) -> Result<Session> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {program}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("missing pipes");
    };
    let pending: Pending = Default::default();
    let counters: Arc<Counters> = Default::default();
    let reader = tokio::spawn({
        let pending = pending.clone();
        let counters = counters.clone();
        async move {
            let mut lines = BufReader::with_capacity(64 * 1024, stdout);
            let mut line = Vec::with_capacity(4096);
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let data = Bytes::copy_from_slice(line.trim_ascii_end());
                        deliver(&pending, &counters, data);
                    }
                }
            }
            pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
    });
    let session = Session::Stdio {
        child,
        stdin: AsyncMutex::new(stdin),
        pending,
        counters,
        reader,
    };
    handshake_shared(&session, LEGACY_VERSION).await?;
    Ok(session)
}

/// initialize + notifications/initialized over a shared-stream transport.
async fn handshake_shared(session: &Session, version: &str) -> Result<()> {
    let mut lane = session.lane().await?;
    let answer = session
        .request(
            &mut lane,
            1,
            request_line(1, "initialize", &initialize_params(version)),
            None,
        )
        .await?;
    check_not_error(&answer).context("initialize")?;
    match session {
        Session::Stdio { stdin, .. } => {
            let mut stdin = stdin.lock().await;
            stdin.write_all(INITIALIZED.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
        }
        Session::LegacySse { endpoint, auth, .. } => {
            let conn = lane_conn(&mut lane)?;
            let (status, _) =
                post(conn, endpoint, auth.as_deref(), &[], INITIALIZED.to_owned()).await?;
            if status != 202 && status != 200 {
                bail!("notifications/initialized answered {status}");
            }
        }
        _ => {}
    }
    Ok(())
}

async fn open_sse(addr: &str, path: &str, token: &Option<Arc<str>>) -> Result<Session> {
    let auth = bearer(token);
    let mut conn = Conn::open(addr).await?;
    let mut headers = vec![("accept", "text/event-stream")];
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    let response = conn
        .request(http::Method::GET, path, &headers, Bytes::new())
        .await?;
    if response.status() != 200 {
        bail!("GET {path} answered {}", response.status());
    }
    let mut reader = SseReader::new(response.into_body());
    let first = reader
        .next(IO_TIMEOUT)
        .await?
        .ok_or_else(|| anyhow!("stream ended before the endpoint event"))?;
    if first.event != "endpoint" {
        bail!("first event is `{}`, not `endpoint`", first.event);
    }
    let endpoint = std::str::from_utf8(&first.data)?.trim().to_owned();
    // The endpoint may be absolute (the proxy) or a path (supergateway): keep the path.
    let endpoint = match endpoint.find("://") {
        Some(scheme) => {
            let rest = &endpoint[scheme + 3..];
            rest.find('/')
                .map(|p| rest[p..].to_owned())
                .unwrap_or("/".into())
        }
        None => endpoint,
    };
    let pending: Pending = Default::default();
    let counters: Arc<Counters> = Default::default();
    let reader = tokio::spawn({
        let pending = pending.clone();
        let counters = counters.clone();
        async move {
            // Keep the connection's task alive with the stream.
            let _conn = conn;
            while let Ok(Some(event)) = reader.next(Duration::from_secs(24 * 3600)).await {
                if event.event == "message" {
                    deliver(&pending, &counters, event.data);
                }
            }
            pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
    });
    let session = Session::LegacySse {
        addr: addr.to_owned(),
        endpoint,
        auth,
        pending,
        counters,
        reader,
    };
    handshake_shared(&session, LEGACY_VERSION).await?;
    Ok(session)
}

async fn open_streamable(addr: &str, path: &str, token: &Option<Arc<str>>) -> Result<Session> {
    let auth = bearer(token);
    let mut conn = Conn::open(addr).await?;
    let line = request_line(1, "initialize", &initialize_params(SESSION_VERSION));
    let (status, answer, head) =
        streamable_exchange(&mut conn, path, auth.as_deref(), &[], line, Some(1)).await?;
    if status != 200 {
        bail!("initialize answered {status}");
    }
    check_not_error(&answer.ok_or_else(|| anyhow!("no initialize answer"))?)?;
    let session_id = head
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("initialize answer has no Mcp-Session-Id"))?
        .to_owned();
    let headers = [
        ("mcp-session-id", session_id.as_str()),
        ("mcp-protocol-version", SESSION_VERSION),
    ];
    let (status, _, _) = streamable_exchange(
        &mut conn,
        path,
        auth.as_deref(),
        &headers,
        INITIALIZED.to_owned(),
        None,
    )
    .await?;
    if status != 202 {
        bail!("notifications/initialized answered {status}");
    }
    Ok(Session::Streamable {
        addr: addr.to_owned(),
        path: path.to_owned(),
        auth,
        session_id,
        counters: Default::default(),
    })
}

/// The answer's `result`, or an error naming the JSON-RPC error.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

fn check_not_error(data: &[u8]) -> Result<()> {
    let a: Answer<'_> = serde_json::from_slice(data).context("answer is not JSON")?;
    if let Some(e) = a.error {
        bail!("JSON-RPC error {}", e.get());
    }
    if a.result.is_none() {
        bail!("answer without result");
    }
    Ok(())
}

/// True when an echo answer carries `marker` in its result (and is no error).
pub(crate) fn answer_matches(data: &[u8], marker: &str) -> bool {
    let Ok(a) = serde_json::from_slice::<Answer<'_>>(data) else {
        return false;
    };
    a.error.is_none() && a.result.is_some_and(|r| r.get().contains(marker))
}

/// A per-process counter for unique echo markers.
pub(crate) static MARKER: AtomicU64 = AtomicU64::new(0);
