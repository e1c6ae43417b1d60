//! Streamable HTTP on /mcp: the session era and the modern era, status by status.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::mcp::{self, MODERN, Session, post, post_raw};
use crate::common::procfs::wait_group_empty;
use crate::common::wait::eventually;
use crate::common::{Proxy, http, metric};

fn text(a: &mcp::Answer) -> String {
    a.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {a:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_era_round_trip_json_and_sse() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("alice"), "2025-11-25").await;
    assert_eq!(s.id.len(), 32);
    // A plain answer comes back as application/json, id restored exactly.
    let a = s
        .call_tool(json!("str-1"), "echo", json!({"message": "hi"}))
        .await;
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    assert_eq!(a.last()["id"], json!("str-1"));
    assert_eq!(text(&a), "hi");
    let a = s.call_tool(json!(7), "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(a.last()["id"], json!(7));
    assert_eq!(text(&a), "3");
    // Notifications first: an SSE stream with the progress, then the answer, then the end.
    let a = s
        .post(
            &json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{
            "name":"progress","arguments":{"steps":3},"_meta":{"progressToken":"tok-a"}}}),
        )
        .await;
    assert!(a.content_type.starts_with("text/event-stream"), "{a:?}");
    assert_eq!(a.messages.len(), 4, "{a:?}");
    for (i, m) in a.messages[..3].iter().enumerate() {
        assert_eq!(m["method"], "notifications/progress");
        assert_eq!(m["params"]["progressToken"], "tok-a", "token restored");
        assert_eq!(m["params"]["progress"], i as u64 + 1);
    }
    assert_eq!(a.messages[3]["id"], 8);
    assert_eq!(
        a.messages[3]["result"]["content"][0]["text"],
        "done 3 steps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_era_statuses() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    // No session, not initialize: 400.
    assert_eq!(post(&url, &token, &[], &ping).await.status, 400);
    // Unknown session: 404.
    let a = post(&url, &token, &[("mcp-session-id", "nope")], &ping).await;
    assert_eq!(a.status, 404);
    let s = Session::open(&url, &token, "2025-06-18").await;
    // Notification and response from the client: 202.
    let a = s
        .post(&json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"}))
        .await;
    assert_eq!((a.status, a.raw.as_str()), (202, ""));
    let a = s
        .post(&json!({"jsonrpc":"2.0","id":"srv-1","result":{}}))
        .await;
    assert_eq!(a.status, 202);
    // Unsupported protocol version header: 400.
    let a = post(
        &url,
        &token,
        &[
            ("mcp-session-id", &s.id),
            ("mcp-protocol-version", "1999-01-01"),
        ],
        &ping,
    )
    .await;
    assert_eq!(a.status, 400);
    // Batches only in 2025-03-26.
    let batch =
        json!([{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]);
    assert_eq!(s.post(&batch).await.status, 400);
    // Not JSON: 400 with a parse error, session kept.
    let a = post_raw(&url, &token, &[("mcp-session-id", &s.id)], "{oops".into()).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.last()["error"]["code"], -32700);
    assert_eq!(
        s.call_tool(json!(3), "echo", json!({"message":"ok"}))
            .await
            .status,
        200
    );
    // Someone else's session: 404, exactly like an unknown one.
    let other = post(
        &url,
        &proxy.token("mallory"),
        &[
            ("mcp-session-id", &s.id),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        &ping,
    )
    .await;
    assert_eq!(other.status, 404);
    // GET/DELETE without a session: 405.
    let r = http()
        .get(&url)
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 405);
    let r = http()
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 405);
    // DELETE ends the session and its child; reuse is 404.
    let pid = proxy.state.session_pids()[0];
    let r = http()
        .delete(&url)
        .bearer_auth(&token)
        .header("mcp-session-id", &s.id)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert_eq!(s.post(&ping).await.status, 404);
    assert!(wait_group_empty(pid, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_2025_03_26() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("alice"), "2025-03-26").await;
    let a = s
        .post(&json!([
            {"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo","arguments":{"message":"one"}}},
            {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x","progress":1}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"two"}}}
        ]))
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let mut by_id: Vec<(Value, String)> = a
        .messages
        .iter()
        .flat_map(|m| m.as_array().cloned().unwrap_or_else(|| vec![m.clone()]))
        .filter(|m| m.get("id").is_some())
        .map(|m| {
            (
                m["id"].clone(),
                m["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    by_id.sort_by_key(|(id, _)| id.to_string());
    assert_eq!(
        by_id,
        vec![(json!("a"), "one".to_owned()), (json!(2), "two".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_in_flight_id_is_rejected_not_cross_wired() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("alice"), "2025-11-25").await;
    let to_child = "mcp_proxy_relayed_messages_total{server=\"default\",direction=\"to_child\"}";
    let relayed = async || metric(&proxy.metrics().await, to_child).unwrap_or(0.0);
    // An answered ping: everything sent so far (also `notifications/initialized`, which was
    // accepted before it was written) has reached the child and been counted.
    let ping = json!({"jsonrpc":"2.0","id":"p","method":"ping"});
    assert_eq!(s.post(&ping).await.status, 200);
    let before = relayed().await;
    let slow = s.call_tool(json!(5), "sleep", json!({"ms": 1500}));
    let dup = async {
        // The proxy registers a request's id before it writes it to the child: once the slow
        // one has reached the child, id 5 is taken.
        eventually(
            Duration::from_secs(10),
            "the slow call never reached the child",
            async || relayed().await > before,
        )
        .await;
        s.call_tool(json!(5), "echo", json!({"message": "dup"}))
            .await
    };
    let (slow, dup) = tokio::join!(slow, dup);
    assert_eq!(dup.status, 400, "{dup:?}");
    assert_eq!(text(&slow), "slept 1500 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_stream_carries_server_messages_and_replays_after_last_event_id() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let s = Session::open(&url, &token, "2025-11-25").await;
    let open_get = |last: Option<String>| {
        let mut req = http()
            .get(&url)
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &s.id)
            .header("mcp-protocol-version", "2025-11-25")
            .timeout(Duration::from_secs(60));
        if let Some(l) = last {
            req = req.header("last-event-id", l);
        }
        req.send()
    };
    let mut get = open_get(None).await.expect("GET");
    assert_eq!(get.status(), 200);
    assert_eq!(get.headers()["content-type"], "text/event-stream");
    let mut events = Vec::new();
    let mut buf = String::new();
    for i in 0..3 {
        let a = s
            .call_tool(
                json!(i),
                "notify",
                json!({"method": format!("notifications/n{i}")}),
            )
            .await;
        assert_eq!(text(&a), "ok");
    }
    // Read three events (id + data) off the GET stream.
    while events.len() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), get.chunk())
            .await
            .expect("event in time")
            .expect("chunk")
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().to_owned());
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(|v| v.trim().to_owned());
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    let methods: Vec<String> = events
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).expect("json")["method"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        methods,
        ["notifications/n0", "notifications/n1", "notifications/n2"]
    );
    // Disconnect; two more arrive while nobody listens.
    drop(get);
    for i in 3..5 {
        s.call_tool(
            json!(i),
            "notify",
            json!({"method": format!("notifications/n{i}")}),
        )
        .await;
    }
    // Resume after the second event: exactly events 3, 4 and 5 (n2, n3, n4).
    let resumed = open_get(Some(events[1].0.clone())).await.expect("GET");
    let mut got = Vec::new();
    let mut buf = String::new();
    let mut resumed = resumed;
    while got.len() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resumed.chunk())
            .await
            .expect("replay in time")
            .expect("chunk")
            .expect("open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        for data in mcp::sse_data(&buf.clone()) {
            if let Ok(v) = serde_json::from_str::<Value>(&data) {
                got.push(v["method"].as_str().unwrap_or_default().to_owned());
            }
        }
        if got.len() < 3 {
            got.clear();
        }
    }
    assert_eq!(
        got,
        ["notifications/n2", "notifications/n3", "notifications/n4"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_era_headers_are_checked_against_the_body() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let ok = mcp::modern_tool(&url, &token, json!(1), "echo", json!({"message":"m"})).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(text(&ok), "m");
    assert!(ok.session.is_none(), "no session in the modern era");
    let body = |name: &str| {
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":{"message":"m"},
        "_meta":{"io.modelcontextprotocol/protocolVersion":MODERN}}})
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "name mismatch",
            vec![
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "add"),
            ],
        ),
        (
            "method mismatch",
            vec![
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
                ("mcp-name", "echo"),
            ],
        ),
        (
            "no method",
            vec![("mcp-protocol-version", MODERN), ("mcp-name", "echo")],
        ),
        (
            "no name",
            vec![
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
            ],
        ),
    ];
    for (name, headers) in cases {
        let a = post(&url, &token, &headers, &body("echo")).await;
        assert_eq!(a.status, 400, "{name}");
        assert_eq!(a.last()["error"]["code"], -32020, "{name}: {a:?}");
        assert_eq!(a.last()["id"], 1, "{name}");
    }
    // Base64 sentinel form of Mcp-Name.
    let a = post(
        &url,
        &token,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZWNobw==?="),
        ],
        &body("echo"),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    // Body version differs from the header.
    let mut b = body("echo");
    b["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2025-11-25");
    let a = post(
        &url,
        &token,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ],
        &b,
    )
    .await;
    assert_eq!(a.last()["error"]["code"], -32020);
    // An unknown version: 400 UnsupportedProtocolVersionError listing what is served.
    let a = post(
        &url,
        &token,
        &[("mcp-protocol-version", "2099-01-01")],
        &body("echo"),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.last()["error"]["code"], -32022);
    assert!(
        a.last()["error"]["data"]["supported"]
            .as_array()
            .is_some_and(|s| s.contains(&json!(MODERN)))
    );
    // An unknown method: 404 with -32601.
    let a = mcp::modern(&url, &token, json!(2), "no/such", json!({})).await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(a.last()["error"]["code"], -32601);
}

/// 50 clients of 5 principals send the same JSON-RPC id at once; each gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_era_same_ids_from_many_clients_never_collide() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let tokens: Vec<String> = (0..5).map(|p| proxy.token(&format!("p{p}"))).collect();
    let calls = (0..50).map(|c| {
        let url = url.clone();
        let token = tokens[c % 5].clone();
        async move {
            let a = mcp::modern_tool(
                &url,
                &token,
                json!(1),
                "echo",
                json!({"message": format!("client-{c}")}),
            )
            .await;
            (c, a)
        }
    });
    for (c, a) in futures::future::join_all(calls).await {
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.last()["id"], 1);
        assert_eq!(
            text(&a),
            format!("client-{c}"),
            "client {c} got someone else's answer"
        );
    }
    // One child per principal, reused.
    assert_eq!(proxy.state.pool_len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_era_closing_the_stream_cancels_at_the_child() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    // Warm the principal's child.
    mcp::modern(&url, &token, json!(1), "ping", json!({})).await;
    let slow = tokio::time::timeout(
        Duration::from_millis(400),
        mcp::modern_tool(&url, &token, json!(2), "sleep", json!({"ms":5000})),
    )
    .await;
    assert!(slow.is_err(), "the slow call should still be running");
    // The route is forgotten as soon as the client goes away (and the child is told).
    eventually(
        Duration::from_secs(5),
        "route still registered",
        async || proxy.state.pool_in_flight() == 0,
    )
    .await;
    // The same child keeps serving.
    let a = mcp::modern_tool(&url, &token, json!(3), "echo", json!({"message":"after"})).await;
    assert_eq!(text(&a), "after");
    assert_eq!(proxy.state.pool_len(), 1);
}
