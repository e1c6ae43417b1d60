//! The era bridge: 2026-07-28 clients served by legacy stdio servers (the bundled example
//! server, `@modelcontextprotocol/server-everything`, a fixture), with the answers a legacy
//! client gets from the same server.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::mcp::{self, EventStream, Session};
use crate::common::wait::eventually;
use crate::common::{Proxy, base_config, example_server};

const SUB: &str = "io.modelcontextprotocol/subscriptionId";
const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const WAIT: Duration = Duration::from_secs(15);

/// A modern result without the fields the bridge adds, to compare with the legacy answer.
fn legacy_shape(result: &Value) -> Value {
    let mut r = result.clone();
    if let Some(o) = r.as_object_mut() {
        for k in ["resultType", "ttlMs", "cacheScope"] {
            o.remove(k);
        }
        if let Some(meta) = o.get_mut("_meta").and_then(Value::as_object_mut) {
            meta.remove(SERVER_INFO);
            if meta.is_empty() {
                o.remove("_meta");
            }
        }
    }
    r
}

/// The result of a successful modern answer, checked for what every modern result carries.
fn modern_result(a: &mcp::Answer, cacheable: bool) -> Value {
    assert_eq!(a.status, 200, "{a:?}");
    let result = a.last()["result"].clone();
    assert_eq!(result["resultType"], "complete", "{a:?}");
    if cacheable {
        assert!(result["ttlMs"].is_u64(), "{a:?}");
        assert!(
            matches!(result["cacheScope"].as_str(), Some("private" | "public")),
            "{a:?}"
        );
    }
    result
}

/// Sends `method` in the modern era and on the `legacy` session: the answers must agree but
/// for the fields the bridge adds. Returns the modern result.
async fn same_as_legacy(
    url: &str,
    token: &str,
    legacy: &Session,
    id: Value,
    method: &str,
    params: Value,
) -> Value {
    let cacheable = method.ends_with("/list") || method == "resources/read";
    let m = mcp::modern(url, token, id, method, params.clone()).await;
    let m = modern_result(&m, cacheable);
    let l = legacy
        .post(&json!({"jsonrpc":"2.0","id":9,"method":method,"params":params}))
        .await;
    assert_eq!(legacy_shape(&m), l.last()["result"], "{method}");
    m
}

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

fn fixture_section(name: &str, era_flag: &str, extra: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/era_server.py");
    format!(
        "[servers.{name}]\ncommand = \"python3\"\nargs = [\"{script}\", \"--era\", \"{era_flag}\"]\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_server_answers_modern_clients_as_it_answers_legacy_ones() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let legacy = Session::open(&url, &token, "2025-11-25").await;

    // server/discover: answered by the proxy from the child's InitializeResult.
    let d = mcp::modern(&url, &token, json!("d-1"), "server/discover", json!({})).await;
    assert_eq!(d.last()["id"], "d-1");
    let d = modern_result(&d, true);
    assert_eq!(d["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(d["_meta"][SERVER_INFO]["name"], "mcp-example-server");
    assert!(d["capabilities"]["tools"].is_object(), "{d}");
    assert!(
        d["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("echo"))
    );

    for (method, params) in [
        ("tools/list", json!({})),
        ("resources/list", json!({})),
        ("prompts/list", json!({})),
        ("resources/read", json!({"uri": "example://readme"})),
        (
            "prompts/get",
            json!({"name": "greet", "arguments": {"name": "Ada"}}),
        ),
        (
            "tools/call",
            json!({"name": "add", "arguments": {"a": 2, "b": 40}}),
        ),
    ] {
        let m = same_as_legacy(&url, &token, &legacy, json!(1), method, params).await;
        assert_eq!(m["_meta"][SERVER_INFO]["name"], "mcp-example-server");
    }

    // Progress reaches this request's stream with the client's own token.
    let a = mcp::modern(
        &url,
        &token,
        json!(2),
        "tools/call",
        json!({"name":"progress","arguments":{"steps":3},"_meta":{"progressToken":"tok-m"}}),
    )
    .await;
    assert!(a.content_type.starts_with("text/event-stream"), "{a:?}");
    assert_eq!(a.messages.len(), 4, "{a:?}");
    for (i, m) in a.messages[..3].iter().enumerate() {
        assert_eq!(m["method"], "notifications/progress");
        assert_eq!(m["params"]["progressToken"], "tok-m");
        assert_eq!(m["params"]["progress"], i as u64 + 1);
    }
    assert_eq!(a.messages[3]["id"], 2);
    assert_eq!(text(&modern_result(&a, false)), "done 3 steps");

    // The legacy "resource not found" (-32002) is renumbered to -32602.
    let a = mcp::modern(
        &url,
        &token,
        json!(3),
        "resources/read",
        json!({"uri": "x://no"}),
    )
    .await;
    assert_eq!(a.last()["error"]["code"], -32602, "{a:?}");

    // One probe for the server; the second principal's child reuses the answer.
    let bob = mcp::modern_tool(
        &url,
        &proxy.token("bob"),
        json!(1),
        "echo",
        json!({"message":"bob"}),
    )
    .await;
    assert_eq!(text(&modern_result(&bob, false)), "bob");
    assert_eq!(proxy.state.era_probes("default"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_streams_get_the_list_changes_they_asked_for() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let mut tools = EventStream::modern(&url, &token, json!("L-1"), "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true, "resourceSubscriptions": ["example://readme"]}})).await;
    let ack = tools.next(WAIT).await.expect("acknowledgement");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(ack["params"]["_meta"][SUB], "L-1");
    // The example server offers tools but no resource subscriptions.
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    let mut prompts = EventStream::modern(
        &url,
        &token,
        json!(5),
        "subscriptions/listen",
        json!({"notifications": {"promptsListChanged": true}}),
    )
    .await;
    assert_eq!(
        prompts.next(WAIT).await.expect("ack")["params"]["_meta"][SUB],
        5
    );
    // Another principal's stream is on another child: it must not see alice's changes.
    let mut bobs = EventStream::modern(
        &url,
        &proxy.token("bob"),
        json!("L-1"),
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    )
    .await;
    assert!(bobs.next(WAIT).await.is_some());

    let a = mcp::modern_tool(
        &url,
        &token,
        json!(1),
        "notify",
        json!({"method":"notifications/tools/list_changed"}),
    )
    .await;
    assert_eq!(text(&modern_result(&a, false)), "ok");
    let note = tools.next(WAIT).await.expect("list change");
    assert_eq!(note["method"], "notifications/tools/list_changed");
    assert_eq!(note["params"]["_meta"][SUB], "L-1");
    mcp::modern_tool(
        &url,
        &token,
        json!(2),
        "notify",
        json!({"method":"notifications/prompts/list_changed"}),
    )
    .await;
    let note = prompts.next(WAIT).await.expect("prompt change");
    assert_eq!(note["method"], "notifications/prompts/list_changed");
    assert_eq!(note["params"]["_meta"][SUB], 5);
    assert!(
        tools.next(Duration::from_millis(300)).await.is_none(),
        "not asked for"
    );
    assert!(
        bobs.next(Duration::from_millis(300)).await.is_none(),
        "someone else's child"
    );

    // Closing the streams forgets them; the children stay.
    assert_eq!(proxy.state.pool_in_flight(), 3);
    drop((tools, prompts, bobs));
    eventually(WAIT, "listen streams still registered", async || {
        proxy.state.pool_in_flight() == 0
    })
    .await;
    assert_eq!(proxy.state.pool_len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_initiated_requests_are_answered_by_the_proxy() {
    let proxy =
        Proxy::with_config(&base_config(&fixture_section("default", "legacy", "")), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let a = mcp::modern_tool(
        &url,
        &token,
        json!(1),
        "ask",
        json!({"method":"sampling/createMessage"}),
    )
    .await;
    let answer: Value = serde_json::from_str(text(&modern_result(&a, false))).expect("json");
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    let a = mcp::modern_tool(&url, &token, json!(2), "ask", json!({"method":"ping"})).await;
    assert_eq!(text(&modern_result(&a, false)), r#"{"result": {}}"#);
    // The handshake settled on the version the child offered.
    let d = mcp::modern(&url, &token, json!(3), "server/discover", json!({})).await;
    assert_eq!(
        modern_result(&d, true)["_meta"][SERVER_INFO]["name"],
        "era-fixture-legacy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_child_is_passed_through_and_the_era_can_be_pinned() {
    let config = base_config(&format!(
        "{}{}[servers.pinned]\ncommand = \"{}\"\nera = \"legacy\"\n[servers.off]\ncommand = \"{}\"\nera = \"modern\"\n",
        fixture_section("default", "modern", ""),
        fixture_section("forced", "modern", "era = \"modern\""),
        example_server(),
        example_server(),
    ));
    let proxy = Proxy::with_config(&config, &[]).await;
    let token = proxy.token("alice");
    let call = json!({"name":"echo","arguments":{"message":"m"}});
    // Probed: modern, so the child's own answers come back unchanged.
    let url = format!("{}/mcp", proxy.url);
    let d = mcp::modern(&url, &token, json!(1), "server/discover", json!({})).await;
    assert_eq!(
        modern_result(&d, true)["_meta"][SERVER_INFO]["name"],
        "era-fixture-modern"
    );
    assert_eq!(
        d.last()["result"]["ttlMs"],
        1000,
        "the child's own discover"
    );
    let a = mcp::modern(&url, &token, json!(2), "tools/call", call.clone()).await;
    assert_eq!(
        modern_result(&a, false)["_meta"],
        json!({"fixture/era": "modern"})
    );
    assert_eq!(proxy.state.era_probes("default"), 1);
    // Configured eras are never probed.
    let url = format!("{}/servers/forced/mcp", proxy.url);
    let a = mcp::modern(&url, &token, json!(1), "tools/call", call.clone()).await;
    assert_eq!(
        modern_result(&a, false)["_meta"],
        json!({"fixture/era": "modern"})
    );
    let url = format!("{}/servers/pinned/mcp", proxy.url);
    let a = mcp::modern(&url, &token, json!(1), "tools/call", call.clone()).await;
    assert_eq!(text(&modern_result(&a, false)), "m");
    // era = "modern" on a legacy server turns the bridge off: its raw answer, no resultType.
    let url = format!("{}/servers/off/mcp", proxy.url);
    let a = mcp::modern(&url, &token, json!(1), "tools/call", call).await;
    assert_eq!(
        a.last()["result"],
        json!({"content":[{"type":"text","text":"m"}]})
    );
    for name in ["forced", "pinned", "off"] {
        assert_eq!(proxy.state.era_probes(name), 0, "{name}");
    }
    // A legacy client's initialize still gets a session of its own.
    let s = Session::open(
        &format!("{}/servers/pinned/mcp", proxy.url),
        &token,
        "2025-11-25",
    )
    .await;
    assert_eq!(
        text(
            &s.call_tool(json!(1), "echo", json!({"message":"s"}))
                .await
                .last()["result"]
        ),
        "s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_refuses_the_handshake_gets_502_and_is_stopped() {
    // The modern fixture refuses initialize: pinned to "legacy", the handshake must fail.
    let config = base_config(&fixture_section("default", "modern", "era = \"legacy\""));
    let proxy = Proxy::with_config(&config, &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let a = mcp::modern(
        &url,
        &proxy.token("alice"),
        json!(1),
        "tools/list",
        json!({}),
    )
    .await;
    assert_eq!(a.status, 502, "{a:?}");
    eventually(WAIT, "the child was not stopped", async || {
        proxy.state.pool_len() == 0
    })
    .await;
}

/// `@modelcontextprotocol/server-everything` (legacy, TypeScript SDK v1) behind the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_answers_modern_clients() {
    let config = base_config(&format!(
        "{}child_scope = \"principal\"\n",
        crate::interop::everything_section("default")
    ));
    let proxy = Proxy::with_config(&config, &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let legacy = Session::open(&url, &token, "2025-11-25").await;

    let d = mcp::modern(&url, &token, json!(0), "server/discover", json!({})).await;
    let d = modern_result(&d, true);
    assert_eq!(
        d["_meta"][SERVER_INFO]["name"], "mcp-servers/everything",
        "{d}"
    );
    assert!(d["capabilities"]["resources"]["subscribe"] == true, "{d}");

    let resources = mcp::modern(&url, &token, json!(1), "resources/list", json!({})).await;
    let resources = modern_result(&resources, true);
    let uri = resources["resources"][0]["uri"]
        .as_str()
        .expect("a resource")
        .to_owned();
    for (method, params) in [
        ("tools/list", json!({})),
        ("prompts/list", json!({})),
        ("resources/read", json!({"uri": uri})),
        ("prompts/get", json!({"name": "simple-prompt"})),
        (
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "bridged"}}),
        ),
        (
            "tools/call",
            json!({"name": "get-sum", "arguments": {"a": 2, "b": 40}}),
        ),
    ] {
        same_as_legacy(&url, &token, &legacy, json!(2), method, params).await;
    }

    let a = mcp::modern(
        &url,
        &token,
        json!(3),
        "tools/call",
        json!({"name":"trigger-long-running-operation","arguments":{"duration":1,"steps":3},
               "_meta":{"progressToken":42}}),
    )
    .await;
    let progress: Vec<&Value> = a
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{a:?}");
    assert!(progress.iter().all(|p| p["params"]["progressToken"] == 42));
    assert_eq!(a.last()["id"], 3);
    assert!(
        text(&modern_result(&a, false)).contains("completed"),
        "{a:?}"
    );

    // A listen stream: resource updates via the legacy resources/subscribe, and list changes.
    let mut listen = EventStream::modern(
        &url,
        &token,
        json!("sub"),
        "subscriptions/listen",
        json!({"notifications": {"resourcesListChanged": true, "resourceSubscriptions": [uri]}}),
    )
    .await;
    let ack = listen.next(WAIT).await.expect("ack");
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourcesListChanged": true, "resourceSubscriptions": [uri]})
    );
    // A new session resource: notifications/resources/list_changed.
    let a = mcp::modern_tool(
        &url,
        &token,
        json!(4),
        "gzip-file-as-resource",
        json!({"name":"t.gz","data":"data:text/plain;base64,aGVsbG8="}),
    )
    .await;
    modern_result(&a, false);
    let a = mcp::modern_tool(
        &url,
        &token,
        json!(5),
        "toggle-subscriber-updates",
        json!({}),
    )
    .await;
    modern_result(&a, false);
    let mut seen = (false, false);
    eventually(
        Duration::from_secs(30),
        "a list change and a resource update",
        async || {
            // Updates come at once, then every 5 s.
            let note = listen
                .next(Duration::from_secs(12))
                .await
                .expect("notification");
            assert_eq!(note["params"]["_meta"][SUB], "sub", "{note}");
            match note["method"].as_str() {
                Some("notifications/resources/list_changed") => seen.0 = true,
                Some("notifications/resources/updated") => {
                    assert_eq!(note["params"]["uri"], uri.as_str());
                    seen.1 = true;
                }
                other => panic!("not asked for: {other:?}"),
            }
            seen == (true, true)
        },
    )
    .await;
}
