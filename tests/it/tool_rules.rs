//! Per-tool policy: a denied tools/call never reaches the child, tools/list is filtered to what
//! the caller may call — on every transport.

use serde_json::{Value, json};

use crate::common::mcp::{self, Session};
use crate::common::sse::SseClient;
use crate::common::{Proxy, base_config, example_server};

async fn proxy() -> Proxy {
    let cfg = base_config(&format!(
        r#"
[servers.default]
command = "{}"

[[servers.default.tool_rules]]
tools = ["crash", "ad?"]
require_scopes = ["mcp:admin"]
"#,
        example_server()
    ));
    Proxy::with_config(&cfg, &[]).await
}

fn names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_denies_and_filters() {
    let proxy = proxy().await;
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    let list = c.call(json!(1), "tools/list", json!({})).await;
    let n = names(&list);
    assert!(
        n.contains(&"echo".to_owned())
            && !n.contains(&"crash".to_owned())
            && !n.contains(&"add".to_owned()),
        "{n:?}"
    );
    // If this reached the child, the child would exit.
    let denied = c
        .call(
            json!(2),
            "tools/call",
            json!({"name": "crash", "arguments": {}}),
        )
        .await;
    assert_eq!(denied["error"]["code"], -32602, "{denied}");
    assert!(
        denied["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mcp:admin")
    );
    assert_eq!(
        c.tool_text(json!(3), "echo", json!({"message": "alive"}))
            .await,
        "alive"
    );
    // The same session, a token with the scope (every POST is re-authenticated).
    let admin = proxy.token_with("alice", json!({"scope": "mcp:admin"}));
    let body = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}});
    assert_eq!(c.post_raw(body.to_string().into_bytes(), &admin).await, 202);
    assert_eq!(
        c.response_to(&json!(4)).await["result"]["content"][0]["text"],
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_denies_and_filters_in_both_eras() {
    let proxy = proxy().await;
    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("bob"), "2025-11-25").await;
    let list = s
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .await;
    let n = names(list.last());
    assert!(
        n.contains(&"echo".to_owned()) && !n.contains(&"add".to_owned()),
        "{n:?}"
    );
    let denied = s.call_tool(json!("x"), "crash", json!({})).await;
    assert_eq!(denied.last()["id"], "x");
    assert_eq!(denied.last()["error"]["code"], -32602);
    assert_eq!(
        s.call_tool(json!(3), "echo", json!({"message":"alive"}))
            .await
            .last()["result"]["content"][0]["text"],
        "alive"
    );

    let admin = proxy.token_with("carol", json!({"scope": "mcp:admin"}));
    let list = mcp::modern(&url, &admin, json!(1), "tools/list", json!({})).await;
    assert!(names(list.last()).contains(&"add".to_owned()));
    let plain = proxy.token("carol");
    let list = mcp::modern(&url, &plain, json!(1), "tools/list", json!({})).await;
    assert!(!names(list.last()).contains(&"add".to_owned()));
    let denied = mcp::modern_tool(&url, &plain, json!(2), "add", json!({"a":1,"b":2})).await;
    assert_eq!(denied.last()["error"]["code"], -32602);
    let ok = mcp::modern_tool(&url, &admin, json!(3), "add", json!({"a":1,"b":2})).await;
    assert_eq!(ok.last()["result"]["content"][0]["text"], "3");
}
