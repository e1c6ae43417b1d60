//! Finding out a child's era (the `server/discover` probe) and the legacy handshake the proxy
//! performs in the client's place.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::{BridgeError, Era, Legacy};
use crate::child::ChildError;
use crate::config;
use crate::mux::{Dispatch, Item, ItemTx, Mux, queue};
use crate::protocol::MODERN_VERSIONS;
use crate::protocol::jsonrpc;
use crate::sync::lock;

/// How long the probe waits: a legacy server may stay silent on an unknown pre-`initialize`
/// request (spec 2026-07-28 stdio §Backward Compatibility: "does not respond within a
/// reasonable timeout: the server is legacy").
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the whole `initialize` exchange (a child may still be starting up).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Legacy versions offered in `initialize`, newest first; the next is tried when the child
/// refuses one with an error.
const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Modern errors that still identify a modern server (spec 2026-07-28 index §Error Codes):
/// `HeaderMismatch`, `MissingRequiredClientCapability`, `UnsupportedProtocolVersion`.
const MODERN_ERRORS: &[i64] = &[-32020, -32021, -32022];

/// The era of one server configuration: configured, or probed once and remembered (spec
/// 2026-07-28 versioning: clients MAY persist it for the same server configuration,
/// re-probing if the cached assumption later fails).
#[derive(Debug)]
pub(crate) struct EraCache {
    configured: config::Era,
    detected: Mutex<Option<Era>>,
    probes: AtomicU64,
}

impl EraCache {
    pub(crate) fn new(configured: config::Era) -> Self {
        Self {
            configured,
            detected: Mutex::new(None),
            probes: AtomicU64::new(0),
        }
    }

    /// The era, when configured or already probed.
    pub(crate) fn known(&self) -> Option<Era> {
        match self.configured {
            config::Era::Legacy => Some(Era::Legacy),
            config::Era::Modern => Some(Era::Modern),
            config::Era::Auto => *lock(&self.detected),
        }
    }

    pub(super) fn remember(&self, era: Era) {
        if self.configured == config::Era::Auto {
            *lock(&self.detected) = Some(era);
        }
    }

    pub(super) fn forget(&self) {
        *lock(&self.detected) = None;
    }

    /// Probes sent so far (tests: the cache spares later children the probe).
    pub(crate) fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    fn count_probe(&self) {
        self.probes.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `_meta` every modern request of the proxy's own carries.
fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSIONS[0],
        "io.modelcontextprotocol/clientInfo": client_info(),
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

fn client_info() -> Value {
    json!({ "name": "mcp-auth-proxy", "version": env!("CARGO_PKG_VERSION") })
}

/// Sends one request of the proxy's own through the multiplexer and waits for its answer;
/// `None` when none came within `within`.
async fn request(
    mux: &Arc<Mux>,
    body: &Value,
    within: Duration,
) -> Result<Option<Value>, BridgeError> {
    let (tx, mut rx) = queue(16, mux.budget().clone());
    let ticket = send(mux, &body.to_string(), tx).await?;
    let answer = tokio::time::timeout(within, async {
        while let Some(item) = rx.recv().await {
            if let Item::Final(line) = item {
                return Some(line);
            }
        }
        None
    })
    .await;
    drop(ticket);
    match answer {
        Ok(Some(line)) => Ok(serde_json::from_str(&line).ok()),
        Ok(None) => Err(BridgeError::Child(ChildError::Gone)),
        Err(_) => Ok(None),
    }
}

/// Sends a message of the proxy's own; its wait is bounded by the caller.
async fn send(mux: &Arc<Mux>, body: &str, tx: ItemTx) -> Result<crate::mux::Ticket, BridgeError> {
    let message = jsonrpc::client_message(body.as_bytes())
        .map_err(|e| BridgeError::Refused(e.message().to_owned()))?;
    let dispatch = Dispatch {
        owner: None,
        tx,
        cancel_on_drop: false,
        timeout: false,
        finish: None,
        audit: None,
        trace: None,
    };
    Ok(mux.send(&message, dispatch).await?)
}

/// Sends `server/discover` as the child's first message and classifies the answer.
pub(super) async fn probe(mux: &Arc<Mux>, cache: &EraCache) -> Result<Era, BridgeError> {
    cache.count_probe();
    let body = json!({
        "jsonrpc": "2.0", "id": 0, "method": "server/discover",
        "params": { "_meta": modern_meta() },
    });
    let answer = request(mux, &body, PROBE_TIMEOUT).await?;
    let era = match &answer {
        Some(answer) => classify(answer),
        None => Era::Legacy,
    };
    tracing::info!(?era, answered = answer.is_some(), "server/discover probe");
    Ok(era)
}

/// A `DiscoverResult`, or a modern error, identifies a modern server; anything else (any
/// other error, an odd result) a legacy one (the fallback MUST NOT be keyed to one code).
pub(super) fn classify(answer: &Value) -> Era {
    let discover = answer
        .pointer("/result/supportedVersions")
        .is_some_and(Value::is_array);
    let modern_error = answer
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .is_some_and(|code| MODERN_ERRORS.contains(&code));
    if discover || modern_error {
        Era::Modern
    } else {
        Era::Legacy
    }
}

/// `initialize` (newest legacy version first, no client capabilities), then
/// `notifications/initialized`.
pub(super) async fn handshake(mux: &Arc<Mux>) -> Result<Legacy, BridgeError> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut refusal = String::new();
    for version in LEGACY_VERSIONS {
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": { "protocolVersion": version, "capabilities": {}, "clientInfo": client_info() },
        });
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(answer) = request(mux, &body, left).await? else {
            return Err(BridgeError::Timeout(HANDSHAKE_TIMEOUT));
        };
        let Some(result) = answer.get("result").filter(|r| r.is_object()) else {
            refusal = answer
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no result")
                .to_owned();
            continue;
        };
        let chosen = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !LEGACY_VERSIONS.contains(&chosen) {
            return Err(BridgeError::Version(chosen.to_owned()));
        }
        let (tx, _rx) = queue(1, mux.budget().clone());
        send(
            mux,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            tx,
        )
        .await?;
        return Ok(Legacy {
            protocol_version: chosen.to_owned(),
            capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
            server_info: result.get("serverInfo").cloned().unwrap_or(Value::Null),
            instructions: result
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    Err(BridgeError::Refused(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_classify_by_shape_not_by_one_code() {
        let cases = [
            (
                json!({"id":1,"result":{"supportedVersions":["2026-07-28"],"capabilities":{}}}),
                Era::Modern,
            ),
            (
                json!({"id":1,"result":{"supportedVersions":["2099-01-01"]}}),
                Era::Modern,
            ),
            (
                json!({"id":1,"error":{"code":-32022,"message":"Unsupported protocol version"}}),
                Era::Modern,
            ),
            (
                json!({"id":1,"error":{"code":-32601,"message":"Method not found"}}),
                Era::Legacy,
            ),
            (
                json!({"id":1,"error":{"code":-32602,"message":"Invalid params"}}),
                Era::Legacy,
            ),
            (
                json!({"id":1,"error":{"code":-32000,"message":"Not initialized"}}),
                Era::Legacy,
            ),
            (json!({"id":1,"result":{}}), Era::Legacy),
        ];
        for (answer, era) in cases {
            assert_eq!(classify(&answer), era, "{answer}");
        }
    }

    #[test]
    fn the_cache_honours_the_configured_era() {
        let auto = EraCache::new(config::Era::Auto);
        assert_eq!(auto.known(), None);
        auto.remember(Era::Legacy);
        assert_eq!(auto.known(), Some(Era::Legacy));
        auto.forget();
        assert_eq!(auto.known(), None);
        let legacy = EraCache::new(config::Era::Legacy);
        legacy.remember(Era::Modern);
        assert_eq!(legacy.known(), Some(Era::Legacy));
        assert_eq!(
            EraCache::new(config::Era::Modern).known(),
            Some(Era::Modern)
        );
    }
}
