//! The official TypeScript SDK v2 client (`@modelcontextprotocol/client`, 2026-07-28 with era
//! negotiation) through the bridge: it stays modern only if the proxy's `server/discover`
//! is valid, and rejects results that lack `resultType` or the cache hints.

use serde_json::{Value, json};

use crate::common::mcp::Session;
use crate::common::{Proxy, base_config, example_server, example_server_section};
use crate::interop::{everything_section, interop, run_client};

async fn ts2_client(url: &str, token: &str, scenario: Value) -> Value {
    let node = interop().node;
    run_client(
        &node,
        "ts2_client.mjs",
        &[
            "--url",
            url,
            "--token",
            token,
            "--scenario",
            &scenario.to_string(),
        ],
    )
    .await
}

fn assert_modern(report: &Value, server: &str) {
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["era"], "modern", "{report}");
    assert_eq!(report["protocolVersion"], "2026-07-28", "{report}");
    assert_eq!(report["serverName"], server, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_v2_stays_modern_with_legacy_servers() {
    let config = base_config(&format!(
        "{}{}[servers.off]\ncommand = \"{}\"\nera = \"modern\"\n",
        example_server_section(),
        everything_section("everything"),
        example_server(),
    ));
    let proxy = Proxy::with_config(&config, &[]).await;
    let token = proxy.token("ts2-user");
    let url = format!("{}/mcp", proxy.url);
    let legacy = Session::open(&url, &token, "2025-11-25").await;

    let report = ts2_client(&url, &token, json!({
        "call": {"name": "progress", "arguments": {"steps": 3}, "progress": true},
        "read": "example://readme",
        "prompt": {"name": "greet", "arguments": {"name": "TS"}},
        "listen": {
            "filter": {"toolsListChanged": true},
            "trigger": {"name": "notify", "arguments": {"method": "notifications/tools/list_changed"}},
            "expect": "notifications/tools/list_changed"
        }
    }))
    .await;
    assert_modern(&report, "mcp-example-server");
    assert_eq!(
        report["call"]["content"][0]["text"], "done 3 steps",
        "{report}"
    );
    assert_eq!(report["progress"], 3, "{report}");
    let read = legacy
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"example://readme"}}))
        .await;
    assert_eq!(
        report["read"]["contents"],
        read.last()["result"]["contents"]
    );
    let prompt = legacy
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"greet","arguments":{"name":"TS"}}}))
        .await;
    assert_eq!(
        report["prompt"]["messages"],
        prompt.last()["result"]["messages"]
    );
    assert_eq!(
        report["listen"]["honored"],
        json!({"toolsListChanged": true})
    );
    assert_eq!(
        report["listen"]["received"],
        "notifications/tools/list_changed"
    );

    let url = format!("{}/servers/everything/mcp", proxy.url);
    let report = ts2_client(&url, &token, json!({
        "call": {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 4}, "progress": true},
        "prompt": {"name": "simple-prompt"},
        "listen": {
            "filter": {"resourcesListChanged": true},
            "trigger": {"name": "gzip-file-as-resource", "arguments": {"name": "x.gz", "data": "data:text/plain;base64,aGk="}},
            "expect": "notifications/resources/list_changed"
        }
    }))
    .await;
    assert_modern(&report, "mcp-servers/everything");
    assert_eq!(report["progress"], 4, "{report}");
    assert!(
        report["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("echo")))
    );
    assert_eq!(
        report["listen"]["received"],
        "notifications/resources/list_changed"
    );

    // The control: with the bridge off the same client falls back to a legacy session.
    let url = format!("{}/servers/off/mcp", proxy.url);
    let report = ts2_client(&url, &token, json!({})).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["era"], "legacy", "{report}");
}
