//! Against a real OpenID provider on loopback (npm `oidc-provider`, run by
//! tests/interop/oidc_provider.mjs): OIDC discovery, RS256 and ES256 JWT access tokens from
//! client_credentials with a resource indicator, the official TypeScript client connecting with
//! one, key rotation without restarting the proxy, the provider going away, and readiness
//! waiting for the first key fetch.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_auth_proxy::JwksStats;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::auth_rejections::probe;
use crate::common::keys::TestKey;
use crate::common::sse::SseClient;
use crate::common::wait::eventually;
use crate::common::{Proxy, claims, example_server, http, wait_ready};
use crate::interop::{call_args, first_text, interop, run_client, ts_client};

const CLIENT_SECRET: &str = "interop-client-secret";

/// A running oidc_provider.mjs.
struct OidcProvider {
    issuer: String,
    /// The published key ids, signing keys first (from the last `KEYS` line).
    kids: Vec<String>,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl OidcProvider {
    async fn start(args: &[&str]) -> OidcProvider {
        let i = interop();
        assert!(
            i.dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run scripts/install-test-deps.sh"
        );
        let mut child = tokio::process::Command::new(&i.node)
            .arg(i.dir.join("oidc_provider.mjs"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs oidc_provider.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        let mut p = OidcProvider {
            issuer: String::new(),
            kids: Vec::new(),
            child,
            stdin,
            stdout,
            stderr,
        };
        let listening = p.expect_line("LISTENING ").await;
        p.issuer = listening.trim().to_owned();
        p.read_keys().await;
        p
    }

    /// The next stdout line starting with `prefix` (its rest); panics after 30 s or at EOF.
    async fn expect_line(&mut self, prefix: &str) -> String {
        let next = async {
            loop {
                match self.stdout.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(rest) = line.strip_prefix(prefix) {
                            return Some(rest.to_owned());
                        }
                        assert!(!line.starts_with("ERR"), "oidc_provider: {line}");
                    }
                    _ => return None,
                }
            }
        };
        let got = tokio::time::timeout(Duration::from_secs(30), next).await;
        match got {
            Ok(Some(rest)) => rest,
            _ => panic!(
                "oidc_provider.mjs printed no `{prefix}` line; stderr:\n{}",
                self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
            ),
        }
    }

    async fn read_keys(&mut self) {
        let keys: Value =
            serde_json::from_str(&self.expect_line("KEYS ").await).expect("KEYS json");
        self.kids = keys["kids"]
            .as_array()
            .expect("kids")
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
    }

    /// Sends a stdin command and waits for its acknowledgement (and new key list).
    async fn command(&mut self, cmd: &str) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write command");
        self.stdin.flush().await.expect("flush");
        self.expect_line(&format!("OK {cmd}")).await;
        if matches!(cmd, "ROTATE" | "DROP") {
            self.read_keys().await;
        }
    }

    /// A client_credentials access token from client `mcp-<alg>` for `resource`.
    async fn token(&self, alg: &str, resource: &str, scope: Option<&str>) -> String {
        let discovery: Value = http()
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .send()
            .await
            .expect("discovery")
            .json()
            .await
            .expect("discovery JSON");
        let endpoint = discovery["token_endpoint"]
            .as_str()
            .expect("token_endpoint");
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        form.append_pair("resource", resource);
        if let Some(scope) = scope {
            form.append_pair("scope", scope);
        }
        let response = http()
            .post(endpoint)
            .basic_auth(format!("mcp-{}", alg.to_lowercase()), Some(CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .await
            .expect("token request");
        let status = response.status();
        let body: Value = response.json().await.expect("token JSON");
        assert_eq!(status, 200, "token endpoint: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Stops the provider for good (SIGKILL, reaped).
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The `kid` and `alg` of a token's header.
fn header_of(token: &str) -> (String, String) {
    let h = jsonwebtoken::decode_header(token).expect("JWT header");
    (h.kid.unwrap_or_default(), format!("{:?}", h.alg))
}

fn proxy_config(issuer: &str, refresh_secs: u64, min_refetch_secs: u64) -> String {
    format!(
        r#"
[auth]
required_scopes = ["mcp:tools"]

[[auth.issuers]]
issuer = "{issuer}"
discovery = true
algorithms = ["RS256", "ES256"]
jwks_refresh_secs = {refresh_secs}
jwks_min_refetch_secs = {min_refetch_secs}

[servers.default]
command = "{server}"

[servers.admin]
command = "{server}"
required_scopes = ["mcp:admin"]
"#,
        server = example_server(),
    )
}

fn stats(proxy: &Proxy) -> JwksStats {
    proxy
        .state
        .jwks_stats()
        .first()
        .map(|(_, s)| *s)
        .expect("one JWKS issuer")
}

/// Tokens from the real provider, found by discovery, used by the official TS client; key
/// rotation picked up on the first unknown kid; the provider gone and known keys still working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_provider_tokens_rotation_and_outage() {
    let mut idp = OidcProvider::start(&["--algs", "RS256,ES256"]).await;
    // A refresh far away: whatever is learnt below comes from discovery and unknown-kid refetches.
    let proxy = Proxy::with_config(&proxy_config(&idp.issuer, 3600, 0), &[]).await;
    wait_ready(&proxy.url).await;
    let sse = format!("{}/sse", proxy.url);

    // RS256, resource = the /sse endpoint: the official TypeScript client connects with it.
    let rs = idp.token("RS256", &sse, Some("mcp:tools")).await;
    assert_eq!(header_of(&rs), (idp.kids[0].clone(), "RS256".into()));
    let report = ts_client(&call_args(
        &sse,
        "sse",
        &rs,
        "add",
        r#"{"a":40,"b":2}"#,
        &[],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(first_text(&report), "42", "{report}");

    // ES256, resource = the proxy's base URL: a full session with the raw client.
    let es = idp.token("ES256", &proxy.url, Some("mcp:tools")).await;
    assert_eq!(header_of(&es), (idp.kids[1].clone(), "ES256".into()));
    let mut c = SseClient::connect(&sse, &es).await;
    c.initialize().await;
    assert_eq!(
        c.tool_text(json!(1), "echo", json!({"message": "es256"}))
            .await,
        "es256"
    );
    drop(c);
    // The same token over Streamable HTTP (/mcp) with the official client.
    let mcp = format!("{}/mcp", proxy.url);
    let report = ts_client(&call_args(
        &mcp,
        "streamable",
        &es,
        "echo",
        r#"{"message":"streamable es256"}"#,
        &[],
    ))
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(first_text(&report), "streamable es256", "{report}");

    // Scopes and audience as the provider issued them.
    let admin = format!("{}/servers/admin/sse", proxy.url);
    // `rs` was issued for the root server's /sse: another server refuses it (audience).
    let (status, www) = probe(&admin, Some(&rs)).await;
    assert_eq!(status, 401, "a token for another server: {www}");
    assert!(www.contains("invalid_token"), "{www}");
    let rs_tools = idp.token("RS256", &proxy.url, Some("mcp:tools")).await;
    assert_eq!(probe(&admin, Some(&rs_tools)).await.0, 403);
    let rs_admin = idp
        .token("RS256", &proxy.url, Some("mcp:tools mcp:admin"))
        .await;
    assert_eq!(probe(&admin, Some(&rs_admin)).await.0, 200);
    let (status, www) = probe(&sse, Some(&idp.token("RS256", &proxy.url, None).await)).await;
    assert_eq!(status, 403, "no scope granted: {www}");
    assert!(
        www.contains("insufficient_scope") && www.contains("scope=\"mcp:tools\""),
        "{www}"
    );
    let elsewhere = idp
        .token("RS256", "https://api.example.com/mcp", Some("mcp:tools"))
        .await;
    let (status, www) = probe(&sse, Some(&elsewhere)).await;
    assert_eq!(status, 401, "a token for another resource: {www}");
    assert!(www.contains("invalid_token"), "{www}");

    // The SDK's auth discovery goes from our metadata to the provider's.
    let node = interop().node;
    let report = run_client(
        &node,
        "ts_metadata.mjs",
        &["--url", &format!("{}/mcp", proxy.url), "--auth-server"],
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["metadata"]["authorization_servers"],
        json!([idp.issuer]),
        "{report}"
    );
    assert_eq!(
        report["authorizationServer"]["issuer"], idp.issuer,
        "{report}"
    );
    assert!(
        report["authorizationServer"]["grant_types_supported"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("client_credentials"))),
        "{report}"
    );

    // Rotation: new keys sign from now on; the proxy learns them on the first unknown kid.
    let before = stats(&proxy);
    let old_kids = idp.kids.clone();
    idp.command("ROTATE").await;
    let rotated = idp.token("RS256", &proxy.url, Some("mcp:tools")).await;
    let (kid, _) = header_of(&rotated);
    assert!(!old_kids.contains(&kid), "{kid} is not a new key");
    assert_eq!(probe(&sse, Some(&rotated)).await.0, 200);
    let es_rotated = idp.token("ES256", &proxy.url, Some("mcp:tools")).await;
    assert_eq!(probe(&sse, Some(&es_rotated)).await.0, 200);
    let after = stats(&proxy);
    assert_eq!(after.fetches_ok, before.fetches_ok + 1, "{after:?}");
    assert_eq!(after.keys, 4, "{after:?}");
    // Tokens signed before the rotation still verify: the old keys are still published.
    assert_eq!(probe(&sse, Some(&rs)).await.0, 200);

    // The provider goes away: tokens with known keys keep working, an unknown kid is refused
    // (its refetch fails, is counted, and the last good key set stays).
    let issuer = idp.issuer.clone();
    idp.stop().await;
    for token in [&rs, &rotated, &es_rotated] {
        assert_eq!(probe(&sse, Some(token)).await.0, 200);
    }
    let forged = TestKey::rsa("not-from-the-idp").sign(&{
        let mut c = claims(&proxy.url, "mallory", json!({"scope": "mcp:tools"}));
        c.insert("iss".into(), issuer.into());
        c
    });
    let (status, www) = probe(&sse, Some(&forged)).await;
    assert_eq!(status, 401, "{www}");
    let down = stats(&proxy);
    assert!(down.fetches_failed > after.fetches_failed, "{down:?}");
    assert_eq!(down.keys, 4, "{down:?}");
    let mut c = SseClient::connect(&sse, &rotated).await;
    c.initialize().await;
    assert_eq!(
        c.tool_text(json!(2), "echo", json!({"message": "idp down"}))
            .await,
        "idp down"
    );
}

/// Readiness waits for the first key fetch; the background refresh (every second here) then
/// follows the provider's key set, including a retired key, and survives its outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_background_refresh_follow_the_provider() {
    let mut idp = OidcProvider::start(&["--algs", "RS256", "--down"]).await;
    let proxy = Proxy::with_config(&proxy_config(&idp.issuer, 1, 3600), &[]).await;
    // The same issuer with a trailing slash: discovery is found, but its `issuer` differs.
    let misnamed =
        Proxy::with_config(&proxy_config(&format!("{}/", idp.issuer), 1, 3600), &[]).await;
    let readyz = format!("{}/readyz", proxy.url);
    eventually(
        Duration::from_secs(10),
        "no failed discovery attempt was counted",
        async || stats(&proxy).fetches_failed >= 2,
    )
    .await;
    let r = http().get(&readyz).send().await.expect("readyz");
    assert_eq!(r.status(), 503, "ready before any key was fetched");
    assert!(!proxy.state.keys_loaded());

    idp.command("UP").await;
    let misnamed_failures = stats(&misnamed).fetches_failed;
    wait_ready(&proxy.url).await;
    // Discovery that names another issuer is refused, however often it is retried.
    eventually(
        Duration::from_secs(10),
        "the misnamed issuer's discovery was not retried",
        async || stats(&misnamed).fetches_failed > misnamed_failures + 1,
    )
    .await;
    assert!(!misnamed.state.keys_loaded());
    let r = http()
        .get(format!("{}/readyz", misnamed.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);
    drop(misnamed);
    let sse = format!("{}/sse", proxy.url);
    let first = idp.token("RS256", &proxy.url, Some("mcp:tools")).await;
    assert_eq!(probe(&sse, Some(&first)).await.0, 200);

    // Rotate and retire the old key at the provider: the new key comes in (on its first
    // unknown kid or the next refresh) and the retired one goes out with a refresh
    // (jwks_refresh_secs bounds how long a withdrawn key is still accepted).
    idp.command("ROTATE").await;
    idp.command("DROP").await;
    let second = idp.token("RS256", &proxy.url, Some("mcp:tools")).await;
    eventually(
        Duration::from_secs(10),
        "the refresh never brought the new key in",
        async || probe(&sse, Some(&second)).await.0 == 200,
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the retired key is still accepted",
        async || probe(&sse, Some(&first)).await.0 == 401,
    )
    .await;
    // At most one unknown-kid refetch in the hour-long jwks_min_refetch_secs window.
    assert!(stats(&proxy).unknown_kid_refetches <= 1);

    // The provider is stopped: refreshes fail and are counted, the last good set keeps serving
    // and the proxy stays ready.
    let failed = stats(&proxy).fetches_failed;
    idp.stop().await;
    eventually(
        Duration::from_secs(10),
        "no failed refresh was counted",
        async || stats(&proxy).fetches_failed > failed,
    )
    .await;
    assert_eq!(probe(&sse, Some(&second)).await.0, 200);
    let r = http().get(&readyz).send().await.expect("readyz");
    assert_eq!(r.status(), 200, "an IdP outage made the proxy unready");
    let st = stats(&proxy);
    assert_eq!(st.keys, 1, "{st:?}");
    assert!(st.last_success_unix.is_some(), "{st:?}");
}
