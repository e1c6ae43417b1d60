//! `subscriptions/listen` for a legacy child, answered by the proxy (spec 2026-07-28
//! patterns/subscriptions): the acknowledgement first, then every change notification of the
//! child that the stream's filter asked for, tagged with the stream's subscription id. Resource
//! subscriptions become the legacy `resources/subscribe` / `resources/unsubscribe`, counted
//! per URI across the child's streams.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use serde_json::{Map, Value, json};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{ChildBridge, Legacy, StreamEnd};
use crate::budget::queue::{self, Receiver, Sender};
use crate::mux::Mux;
use crate::protocol::SUBSCRIPTION_ID;
use crate::protocol::jsonrpc::ClientMessage;
use crate::sync::lock;

/// Notifications waiting for one listen stream, besides its bytes (`sessions.max_pending_bytes`,
/// a budget of the stream's own); past either a slow client misses some.
const LISTEN_QUEUE: usize = 64;
/// Most resource URIs one stream may subscribe to.
const MAX_RESOURCE_SUBSCRIPTIONS: usize = 256;

/// What a stream receives (schema `SubscriptionFilter`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Vec<String>,
}

/// A change notification of the child.
enum Change {
    Tools,
    Prompts,
    Resources,
    Updated(String),
}

impl Filter {
    /// The filter of a `subscriptions/listen` request's `params`.
    pub(super) fn requested(params: &Value) -> Filter {
        let n = params.get("notifications");
        let flag = |k: &str| n.and_then(|n| n.get(k)).and_then(Value::as_bool) == Some(true);
        let mut uris: Vec<String> = n
            .and_then(|n| n.get("resourceSubscriptions"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        uris.sort();
        uris.dedup();
        uris.truncate(MAX_RESOURCE_SUBSCRIPTIONS);
        Filter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris,
        }
    }

    /// The part the child can produce, by its legacy capabilities: list changes of what it
    /// offers, resource updates only if it supports `resources/subscribe`.
    pub(super) fn honored(&self, caps: &Value) -> Filter {
        let has = |k: &str| caps.get(k).is_some_and(Value::is_object);
        let subscribe = caps
            .pointer("/resources/subscribe")
            .and_then(Value::as_bool)
            == Some(true);
        Filter {
            tools: self.tools && has("tools"),
            prompts: self.prompts && has("prompts"),
            resources: self.resources && has("resources"),
            uris: if subscribe {
                self.uris.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// The acknowledged filter: only what is honored.
    pub(super) fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (key, on) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if on {
                m.insert(key.into(), Value::Bool(true));
            }
        }
        if !self.uris.is_empty() {
            m.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(m)
    }

    fn wants(&self, change: &Change) -> bool {
        match change {
            Change::Tools => self.tools,
            Change::Prompts => self.prompts,
            Change::Resources => self.resources,
            Change::Updated(uri) => self.uris.iter().any(|u| u == uri),
        }
    }
}

struct Listener {
    subscription_id: Value,
    filter: Filter,
    tx: Sender<String>,
}

#[derive(Default)]
struct Inner {
    next_key: u64,
    streams: HashMap<u64, Listener>,
    /// URI → number of streams subscribed to it (the child is subscribed while > 0).
    uris: HashMap<String, usize>,
}

/// The listen streams of one child.
#[derive(Default)]
pub(super) struct Listeners {
    inner: Mutex<Inner>,
}

impl Listeners {
    pub(super) fn len(&self) -> usize {
        lock(&self.inner).streams.len()
    }

    /// Registers a stream; returns its key and the URIs the child must now subscribe to.
    fn add(&self, listener: Listener) -> (u64, Vec<String>) {
        let mut inner = lock(&self.inner);
        let mut new = Vec::new();
        for uri in &listener.filter.uris {
            let count = inner.uris.entry(uri.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                new.push(uri.clone());
            }
        }
        inner.next_key += 1;
        let key = inner.next_key;
        inner.streams.insert(key, listener);
        (key, new)
    }

    /// Forgets a stream; returns the URIs no stream wants any more.
    fn remove(&self, key: u64) -> Vec<String> {
        let mut inner = lock(&self.inner);
        let Some(listener) = inner.streams.remove(&key) else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for uri in listener.filter.uris {
            if let Some(count) = inner.uris.get_mut(&uri) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    inner.uris.remove(&uri);
                    gone.push(uri);
                }
            }
        }
        gone
    }

    /// Delivers a change notification of the child to every stream that asked for it; false
    /// when it is none or nobody did.
    pub(super) fn deliver(&self, line: &str) -> bool {
        let Ok(mut note) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        let change = match note.get("method").and_then(Value::as_str) {
            Some("notifications/tools/list_changed") => Change::Tools,
            Some("notifications/prompts/list_changed") => Change::Prompts,
            Some("notifications/resources/list_changed") => Change::Resources,
            Some("notifications/resources/updated") => {
                match note.pointer("/params/uri").and_then(Value::as_str) {
                    Some(uri) => Change::Updated(uri.to_owned()),
                    None => return false,
                }
            }
            _ => return false,
        };
        let targets: Vec<(Value, Sender<String>)> = lock(&self.inner)
            .streams
            .values()
            .filter(|l| l.filter.wants(&change))
            .map(|l| (l.subscription_id.clone(), l.tx.clone()))
            .collect();
        if targets.is_empty() {
            return false;
        }
        // params and params._meta as objects, keeping what the child put there.
        if !note.get("params").is_some_and(Value::is_object) {
            note["params"] = json!({});
        }
        if !note["params"].get("_meta").is_some_and(Value::is_object) {
            note["params"]["_meta"] = json!({});
        }
        for (subscription_id, tx) in targets {
            note["params"]["_meta"][SUBSCRIPTION_ID] = subscription_id;
            let Ok(text) = serde_json::to_string(&note) else {
                continue;
            };
            if tx.try_send(text).is_err() {
                tracing::debug!("a listen stream is behind or closing; notification dropped");
            }
        }
        true
    }
}

/// Removes its stream when the client goes away, unsubscribing the child from resources no
/// other stream wants.
struct ListenGuard {
    bridge: Arc<ChildBridge>,
    key: u64,
}

impl Drop for ListenGuard {
    fn drop(&mut self) {
        let gone = self.bridge.listeners.remove(self.key);
        if let Some(mux) = self.bridge.mux.upgrade() {
            resource_requests(&mux, "resources/unsubscribe", &gone);
        }
    }
}

/// Sends `resources/subscribe` or `resources/unsubscribe` for each URI. The answers carry ids
/// the multiplexer never issued (strings), so it drops them: nothing waits for them, and a
/// failure only means no updates arrive.
fn resource_requests(mux: &Mux, method: &str, uris: &[String]) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    for uri in uris {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let line = json!({
            "jsonrpc": "2.0",
            "id": format!("mcp-auth-proxy/{method}/{n}"),
            "method": method,
            "params": { "uri": uri },
        });
        if !mux.child().try_send(line.to_string().into_bytes()) {
            tracing::warn!(
                method,
                uri,
                "could not queue a resource subscription change"
            );
        }
    }
}

/// Opens a listen stream for a legacy child.
pub(super) fn open(
    bridge: &Arc<ChildBridge>,
    mux: &Arc<Mux>,
    legacy: &Legacy,
    message: &ClientMessage,
    end: StreamEnd,
) -> ListenStream {
    let subscription_id: Value =
        serde_json::from_str(message.first_request_id()).unwrap_or(Value::Null);
    let params = serde_json::from_str::<Value>(&message.line)
        .ok()
        .and_then(|m| m.get("params").cloned())
        .unwrap_or(Value::Null);
    let filter = Filter::requested(&params).honored(&legacy.capabilities);
    // A budget of the stream's own: a listen stream that is not read misses notifications
    // rather than taking the room of the child's other streams.
    let (tx, rx) = queue::channel(LISTEN_QUEUE, end.budget);
    // The acknowledgement goes first: queued before the stream can receive anything else.
    let ack = json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": { "_meta": { SUBSCRIPTION_ID: subscription_id }, "notifications": filter.to_json() },
    });
    let _ = tx.try_send_anyway(ack.to_string());
    let (key, subscribe) = bridge.listeners.add(Listener {
        subscription_id: subscription_id.clone(),
        filter,
        tx,
    });
    let guard = ListenGuard {
        bridge: bridge.clone(),
        key,
    };
    resource_requests(mux, "resources/subscribe", &subscribe);
    // Graceful closure (spec §Graceful Closure): the listen request's own response.
    let closing = json!({
        "jsonrpc": "2.0",
        "id": subscription_id,
        "result": { "resultType": "complete", "_meta": { SUBSCRIPTION_ID: subscription_id } },
    })
    .to_string();
    ListenStream {
        rx,
        _guard: guard,
        shutdown: Box::pin(end.shutdown.cancelled_owned()),
        exited: Box::pin(mux.child().exited_token().cancelled_owned()),
        expiry: end.expiry.map(|d| Box::pin(tokio::time::sleep(d))),
        closing: Some(closing),
        done: false,
    }
}

/// The lines of one listen stream. It ends when the client goes away (the guard drops), with
/// a graceful result on shutdown, and without one when the child exits or the token expires
/// (the client re-listens).
pub(crate) struct ListenStream {
    rx: Receiver<String>,
    _guard: ListenGuard,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    exited: Pin<Box<WaitForCancellationFutureOwned>>,
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    closing: Option<String>,
    done: bool,
}

impl Stream for ListenStream {
    type Item = String;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(this.closing.take());
        }
        let expired = this
            .expiry
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if expired || this.exited.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        this.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acknowledged_filter_is_what_the_child_can_produce() {
        let requested = Filter::requested(&json!({"notifications": {
            "toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": false,
            "resourceSubscriptions": ["b://x", "a://y", "b://x"]}}));
        assert_eq!(requested.uris, vec!["a://y", "b://x"]);
        let caps = json!({"tools": {}, "resources": {"subscribe": true}});
        assert_eq!(
            requested.honored(&caps).to_json(),
            json!({"toolsListChanged": true, "resourceSubscriptions": ["a://y", "b://x"]})
        );
        let no_subscribe = json!({"tools": {}, "prompts": {}, "resources": {}});
        assert_eq!(
            requested.honored(&no_subscribe).to_json(),
            json!({"toolsListChanged": true, "promptsListChanged": true})
        );
        assert_eq!(Filter::requested(&Value::Null).to_json(), json!({}));
    }

    #[tokio::test]
    async fn changes_reach_only_the_streams_that_asked_with_their_own_id() {
        let listeners = Listeners::default();
        let budget = crate::budget::Budget::new(1 << 20);
        let (tools_tx, mut tools_rx) = queue::channel(4, budget.clone());
        let (res_tx, mut res_rx) = queue::channel(4, budget.clone());
        let (_, first) = listeners.add(Listener {
            subscription_id: json!("s-1"),
            filter: Filter {
                tools: true,
                ..Filter::default()
            },
            tx: tools_tx,
        });
        assert!(first.is_empty());
        let (key, subscribe) = listeners.add(Listener {
            subscription_id: json!(7),
            filter: Filter {
                uris: vec!["a://y".into()],
                ..Filter::default()
            },
            tx: res_tx,
        });
        assert_eq!(subscribe, vec!["a://y"]);
        assert!(
            listeners.deliver(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#)
        );
        assert!(budget.used() > 0, "charged until the stream takes it");
        let got: Value = serde_json::from_str(&tools_rx.recv().await.expect("note")).expect("json");
        assert_eq!(budget.used(), 0);
        assert_eq!(got["params"]["_meta"][SUBSCRIPTION_ID], "s-1");
        assert!(listeners.deliver(
            r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"a://y","_meta":{"k":1}}}"#
        ));
        let got: Value = serde_json::from_str(&res_rx.recv().await.expect("note")).expect("json");
        assert_eq!(got["params"]["_meta"], json!({"k": 1, SUBSCRIPTION_ID: 7}));
        assert!(!listeners.deliver(
            r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"a://other"}}"#
        ));
        assert!(!listeners.deliver(r#"{"jsonrpc":"2.0","method":"notifications/message"}"#));
        assert!(tools_rx.try_recv().is_none() && res_rx.try_recv().is_none());
        assert_eq!(listeners.remove(key), vec!["a://y"]);
        assert_eq!(listeners.len(), 1);
    }
}
