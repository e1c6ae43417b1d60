//! A real modern-era client: `rmcp` 3.11 in `Discover` mode (2026-07-28 only, no fallback to
//! `initialize`) against the legacy example server behind the bridge.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, GetPromptRequestParams, Implementation,
    ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams, RequestMetaObject,
    ResourceContents, ServerNotification, SubscriptionFilter,
};
use rmcp::service::{MaybeSendFuture, NotificationContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::json;

use crate::common::Proxy;
use crate::common::wait::eventually;

/// Counts the progress notifications the SDK hands to the client.
#[derive(Clone, Default)]
struct Client {
    progress: Arc<AtomicUsize>,
}

impl ClientHandler for Client {
    fn on_progress(
        &self,
        _params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.progress.fetch_add(1, Ordering::SeqCst);
        std::future::ready(())
    }
}

fn text(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

fn args(value: serde_json::Value) -> rmcp::model::JsonObject {
    value.as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_discover_mode_client_uses_a_legacy_server() {
    let proxy = Proxy::start().await;
    let handler = Client::default();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", proxy.url))
            .auth_header(proxy.token("rust-user")),
    );
    let client = handler
        .clone()
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("rmcp settles on 2026-07-28 with the proxy");

    let mut meta = RequestMetaObject::new();
    meta.set_protocol_version(ProtocolVersion::V_2026_07_28);
    meta.set_client_info(Implementation::new("it-rmcp", "0"));
    meta.set_client_capabilities(ClientCapabilities::default());
    let discovered = client.discover(meta).await.expect("server/discover");
    assert_eq!(
        discovered.server_info().map(|i| i.name),
        Some("mcp-example-server".to_owned())
    );

    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "progress"), "{tools:?}");

    let done = client
        .call_tool(CallToolRequestParams::new("progress").with_arguments(args(json!({"steps": 3}))))
        .await
        .expect("tools/call");
    assert_eq!(text(&done), "done 3 steps");
    // Progress is handled asynchronously by the SDK; it arrives before the result on the wire.
    eventually(
        Duration::from_secs(5),
        "progress notifications",
        async || handler.progress.load(Ordering::SeqCst) >= 3,
    )
    .await;

    let read = client
        .read_resource(ReadResourceRequestParams::new("example://readme"))
        .await
        .expect("resources/read");
    assert!(matches!(
        read.contents.first(),
        Some(ResourceContents::TextResourceContents { text, .. }) if text.contains("mcp-example-server")
    ));
    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("greet").with_arguments(args(json!({"name": "Ferris"}))),
        )
        .await
        .expect("prompts/get");
    assert_eq!(prompt.messages.len(), 1);

    let mut subscription = client
        .listen(SubscriptionFilter::builder().tools_list_changed().build())
        .await
        .expect("subscriptions/listen acknowledged");
    client
        .call_tool(
            CallToolRequestParams::new("notify")
                .with_arguments(args(json!({"method": "notifications/tools/list_changed"}))),
        )
        .await
        .expect("notify");
    let note = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a notification in time")
        .expect("a valid notification");
    assert!(
        matches!(
            note,
            Some(ServerNotification::ToolListChangedNotification(_))
        ),
        "{note:?}"
    );
    subscription.cancel().await.expect("cancel");
    client.cancel().await.expect("close");
}
