//! RFC 9728 Protected Resource Metadata: every document field by field, the path-inserted
//! forms, 404 for what is not ours, the 401 challenge pointing at them, and the official
//! TypeScript SDK's discovery reading them.

use serde_json::{Value, json};

use crate::common::keys::{JwksServer, TestKey};
use crate::common::{Proxy, example_server, http};
use crate::interop::run_client;

const WK: &str = "/.well-known/oauth-protected-resource";

async fn proxy(public_url: Option<&str>) -> (Proxy, JwksServer) {
    let jwks = JwksServer::start(vec![TestKey::ec("ec-1").jwk]).await;
    let http_section = public_url
        .map(|u| format!("[http]\npublic_url = \"{u}\"\n"))
        .unwrap_or_default();
    let cfg = format!(
        r#"
{http_section}
[auth]
required_scopes = ["mcp:tools"]

[[auth.issuers]]
issuer = "test-hs"
algorithms = ["HS256"]
secret_env = "TEST_SECRET"

[[auth.issuers]]
issuer = "https://idp.test/realms/mcp"
algorithms = ["ES256"]
jwks_url = "{jwks}"

[servers.default]
command = "{server}"

[servers.admin]
command = "{server}"
required_scopes = ["mcp:admin"]

[[servers.admin.tool_rules]]
tools = ["delete_*"]
require_scopes = ["mcp:danger"]
"#,
        jwks = jwks.url,
        server = example_server(),
    );
    (Proxy::with_config(&cfg, &[]).await, jwks)
}

async fn get(url: &str) -> (u16, Value) {
    let r = http().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn doc(resource: &str, scopes: &[&str]) -> Value {
    json!({
        "resource": resource,
        // Only issuers a client can discover: the HS issuer `test-hs` is no URL.
        "authorization_servers": ["https://idp.test/realms/mcp"],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-auth-proxy",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_has_its_document_and_nothing_else_does() {
    let (p, _jwks) = proxy(None).await;
    let all = ["mcp:admin", "mcp:danger", "mcp:tools"];
    let admin = ["mcp:admin", "mcp:danger", "mcp:tools"];
    let plain = ["mcp:tools"];
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("", p.url.clone(), &all),
        ("/sse", format!("{}/sse", p.url), &plain),
        ("/mcp", format!("{}/mcp", p.url), &plain),
        (
            "/servers/default/sse",
            format!("{}/servers/default/sse", p.url),
            &plain,
        ),
        (
            "/servers/default/mcp",
            format!("{}/servers/default/mcp", p.url),
            &plain,
        ),
        (
            "/servers/admin/sse",
            format!("{}/servers/admin/sse", p.url),
            &admin,
        ),
        (
            "/servers/admin/mcp",
            format!("{}/servers/admin/mcp", p.url),
            &admin,
        ),
    ];
    for (path, resource, scopes) in cases {
        let (status, body) = get(&format!("{}{WK}{path}", p.url)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body, doc(&resource, scopes), "{path}");
    }
    for path in [
        "/bogus",
        "/message",
        "/servers/nope/mcp",
        "/servers/admin",
        "/servers/admin/message",
        "/sse/extra",
    ] {
        let (status, _) = get(&format!("{}{WK}{path}", p.url)).await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_401_challenge_points_at_the_endpoints_document() {
    let (p, _jwks) = proxy(None).await;
    for (endpoint, scope) in [
        ("/sse", "mcp:tools"),
        ("/servers/admin/sse", "mcp:tools mcp:admin"),
    ] {
        let r = http()
            .get(format!("{}{endpoint}", p.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 401);
        let www = r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let metadata = format!("{}{WK}{endpoint}", p.url);
        assert_eq!(
            www,
            format!("Bearer scope=\"{scope}\", resource_metadata=\"{metadata}\"")
        );
        let (status, body) = get(&metadata).await;
        assert_eq!(status, 200);
        assert_eq!(body["resource"], format!("{}{endpoint}", p.url));
    }
    // A POST to /message answers with the document of its session's /sse endpoint.
    let r = http()
        .post(format!("{}/message?sessionId=x", p.url))
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap_or_default()
            .ends_with(&format!("resource_metadata=\"{}{WK}/sse\"", p.url))
    );
}

/// Behind a path prefix the well-known path carries the prefix after the well-known part
/// (RFC 9728 §3.1) and `resource` is the public URL, not the address the proxy listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_use_the_public_url_and_its_prefix() {
    let public = "https://mcp.example.com/team";
    let (p, _jwks) = proxy(Some(public)).await;
    let (status, body) = get(&format!("{}{WK}/team/servers/admin/mcp", p.url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        doc(
            "https://mcp.example.com/team/servers/admin/mcp",
            &["mcp:admin", "mcp:danger", "mcp:tools"]
        )
    );
    let (_, body) = get(&format!("{}{WK}/team", p.url)).await;
    assert_eq!(body["resource"], public);
    let (_, body) = get(&format!("{}{WK}/team/sse", p.url)).await;
    assert_eq!(body["resource"], "https://mcp.example.com/team/sse");
    let r = http()
        .get(format!("{}/sse", p.url))
        .send()
        .await
        .expect("GET");
    let www = r.headers()["www-authenticate"].to_str().unwrap_or_default();
    assert!(
        www.contains("resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/team/sse\""),
        "{www}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_scopes_or_url_issuers_the_lists_are_empty() {
    let p = Proxy::start().await;
    let (status, body) = get(&format!("{}{WK}", p.url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "resource": p.url,
            "authorization_servers": [],
            "scopes_supported": [],
            "bearer_methods_supported": ["header"],
            "resource_name": "mcp-auth-proxy",
        })
    );
}

/// With two identity providers a client starts its OAuth flow at the first authorization
/// server listed: that must be the operator's first configured issuer, whichever name sorts
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_servers_follow_the_config_order() {
    let jwks = JwksServer::start(vec![TestKey::ec("ec-1").jwk]).await;
    let primary = "https://login.idp.test/tenant";
    let secondary = "https://auth.idp.test/realms/mcp";
    for order in [[primary, secondary], [secondary, primary]] {
        let issuers: String = order
            .iter()
            .map(|issuer| {
                format!(
                    "[[auth.issuers]]\nissuer = \"{issuer}\"\nalgorithms = [\"ES256\"]\njwks_url = \"{}\"\n",
                    jwks.url
                )
            })
            .collect();
        let cfg = format!(
            "{issuers}\n[servers.default]\ncommand = \"{}\"\n",
            example_server()
        );
        let p = Proxy::with_config(&cfg, &[]).await;
        for path in ["", "/mcp", "/servers/default/sse"] {
            let (status, body) = get(&format!("{}{WK}{path}", p.url)).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(body["authorization_servers"], json!(order), "{path}");
        }
    }
}

/// `discoverOAuthProtectedResourceMetadata` of the official TypeScript SDK: the path-derived
/// URL for `/mcp`, and the URL taken from a real 401's `WWW-Authenticate` (`--probe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_discovers_the_documents() {
    let (p, _jwks) = proxy(None).await;
    let node = crate::interop::interop().node;
    let report = run_client(
        &node,
        "ts_metadata.mjs",
        &["--url", &format!("{}/servers/admin/mcp", p.url)],
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["metadata"],
        doc(
            &format!("{}/servers/admin/mcp", p.url),
            &["mcp:admin", "mcp:danger", "mcp:tools"]
        ),
        "{report}"
    );
    // The SDK POSTs an unauthenticated initialize, parses our challenge and follows it.
    let report = run_client(
        &node,
        "ts_metadata.mjs",
        &["--url", &format!("{}/message", p.url), "--probe"],
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["probe"]["status"], 401, "{report}");
    assert_eq!(
        report["probe"]["resourceMetadataUrl"],
        format!("{}{WK}/sse", p.url),
        "{report}"
    );
    assert_eq!(report["probe"]["scope"], "mcp:tools", "{report}");
    assert_eq!(
        report["metadata"]["resource"],
        format!("{}/sse", p.url),
        "{report}"
    );
    // The same against the Streamable HTTP endpoint, as the SDK's auth() does it.
    let report = run_client(
        &node,
        "ts_metadata.mjs",
        &["--url", &format!("{}/servers/admin/mcp", p.url), "--probe"],
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["probe"]["status"], 401, "{report}");
    assert_eq!(
        report["probe"]["resourceMetadataUrl"],
        format!("{}{WK}/servers/admin/mcp", p.url),
        "{report}"
    );
    assert_eq!(report["probe"]["scope"], "mcp:tools mcp:admin", "{report}");
    assert_eq!(
        report["metadata"]["resource"],
        format!("{}/servers/admin/mcp", p.url),
        "{report}"
    );
}
