//! Config reload on SIGHUP, on the real binary: a new issuer is accepted while a session opened
//! before keeps streaming on the same child; a tool rule added denies the next call; a removed
//! server refuses new sessions and its open session ends within the grace; a broken file
//! changes nothing and is counted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::keys::{JwksServer, TestKey};
use crate::common::process::ProxyProcess;
use crate::common::sse::SseClient;
use crate::common::wait::eventually;
use crate::common::{base_config, claims, example_server, example_server_section, http, metric};

/// A config file in its own directory, rewritten by the test.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, text).expect("write config");
        ConfigFile { _dir: dir, path }
    }

    fn rewrite(&self, text: &str) {
        // Written whole, then renamed over the old file: a reload never reads half a file.
        let next = self.path.with_extension("next");
        std::fs::write(&next, text).expect("write config");
        std::fs::rename(&next, &self.path).expect("replace config");
    }
}

async fn start(config: &Path) -> ProxyProcess {
    ProxyProcess::start(config, &[("TEST_SECRET", crate::common::SECRET)]).await
}

fn sighup(proxy: &ProxyProcess) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
}

/// Sends SIGHUP and waits for the reload's outcome line (`config reloaded` or `config reload
/// refused`), the `n`th of its kind.
async fn reload(proxy: &ProxyProcess, outcome: &str, n: usize) -> Value {
    sighup(proxy);
    eventually(
        Duration::from_secs(20),
        &format!("no `{outcome}` line after SIGHUP"),
        async || proxy.events(outcome).len() >= n,
    )
    .await;
    proxy.events(outcome)[n - 1].clone()
}

async fn get_text(url: &str) -> (u16, String) {
    let r = http().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

async fn sse_status(url: &str, token: &str) -> u16 {
    http()
        .get(url)
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET /sse")
        .status()
        .as_u16()
}

/// The binary on `config`, with one legacy SSE session of `alice` open on the root server.
async fn with_session(config: &str) -> (ConfigFile, ProxyProcess, SseClient) {
    let file = ConfigFile::new(config);
    let proxy = start(&file.path).await;
    let token = crate::common::hs_token(&claims(&proxy.url, "alice", json!({})));
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    c.initialize().await;
    (file, proxy, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_issuer_is_accepted_after_sighup_while_an_open_session_streams() {
    let key = TestKey::rsa("reload-rsa");
    let jwks = JwksServer::start(vec![key.jwk.clone()]).await;
    let first = base_config(&example_server_section());
    let file = ConfigFile::new(&first);
    let proxy = start(&file.path).await;
    let sse = format!("{}/sse", proxy.url);
    let hs_token = crate::common::hs_token(&claims(&proxy.url, "alice", json!({})));
    let mut rsa_claims = claims(&proxy.url, "bob", json!({}));
    rsa_claims.insert("iss".into(), json!("https://idp.reload.test"));
    let rsa_token = key.sign(&rsa_claims);

    let mut old = SseClient::connect(&sse, &hs_token).await;
    old.initialize().await;
    let children = proxy.descendants();
    assert_eq!(children.len(), 1, "one child: {children:?}");
    assert_eq!(sse_status(&sse, &rsa_token).await, 401, "unknown issuer");
    let (status, body) = get_text(&format!("{}/readyz", proxy.url)).await;
    assert_eq!(status, 200);
    assert!(body.contains("config_generation 1"), "{body}");

    let second = format!(
        "{first}\n[[auth.issuers]]\nissuer = \"https://idp.reload.test\"\njwks_url = \"{}\"\nalgorithms = [\"RS256\"]\n\n[limits]\nmax_connections = 777\n\n[servers.added]\ncommand = \"{}\"\n",
        jwks.url,
        example_server()
    );
    file.rewrite(&second);
    let fetches_before = jwks.fetch_count();
    let line = reload(&proxy, "config reloaded", 1).await;
    assert_eq!(line["fields"]["generation"], 2, "{line}");
    assert!(
        jwks.fetch_count() > fetches_before,
        "the new key set was fetched before the new config served"
    );
    let restart =
        proxy.events("config reload: these keys changed but take effect only after a restart");
    assert!(
        restart.iter().any(|e| e["fields"]["keys"]
            .as_str()
            .is_some_and(|k| k.contains("limits.max_connections"))),
        "a key bound at start is named: {restart:?}"
    );

    // The new issuer's token: a new session, on the root server and on the added one.
    let mut new = SseClient::connect(&sse, &rsa_token).await;
    new.initialize().await;
    assert_eq!(
        new.tool_text(json!(1), "echo", json!({"message": "new"}))
            .await,
        "new"
    );
    let mut added =
        SseClient::connect(&format!("{}/servers/added/sse", proxy.url), &rsa_token).await;
    added.initialize().await;
    // The session opened before the reload still streams, on the same child, in the same proxy.
    assert_eq!(
        old.tool_text(json!(2), "echo", json!({"message": "old"}))
            .await,
        "old"
    );
    assert!(
        proxy.descendants().contains(&children[0]),
        "the old session's child is the same process"
    );
    let (status, body) = get_text(&format!("{}/readyz", proxy.url)).await;
    assert_eq!(status, 200);
    let sha = line["fields"]["config_sha256"].as_str().unwrap_or_default();
    assert_eq!(sha.len(), 12, "{line}");
    assert!(
        body.contains("config_generation 2") && body.contains(sha),
        "{body}"
    );
    let (_, metrics) = get_text(&format!("{}/metrics", proxy.url)).await;
    assert_eq!(metric(&metrics, "mcp_proxy_config_generation"), Some(2.0));
    assert_eq!(
        metric(&metrics, "mcp_proxy_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert!(
        !proxy.log_text().contains(&rsa_token) && !proxy.log_text().contains(crate::common::SECRET),
        "no token or secret in the log"
    );
    proxy.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_rule_added_by_reload_denies_the_next_call() {
    let first = base_config(&example_server_section());
    let (file, proxy, mut c) = with_session(&first).await;
    assert_eq!(
        c.tool_text(json!(1), "echo", json!({"message": "before"}))
            .await,
        "before"
    );
    file.rewrite(&format!(
        "{first}\n[[servers.default.tool_rules]]\ntools = [\"echo\"]\nrequire_scopes = [\"mcp:admin\"]\n"
    ));
    let line = reload(&proxy, "config reloaded", 1).await;
    assert_eq!(line["fields"]["changed"], "[\"default\"]", "{line}");
    let denied = c
        .call(
            json!(2),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "after"}}),
        )
        .await;
    assert_eq!(denied["error"]["code"], -32602, "{denied}");
    assert!(
        denied["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mcp:admin")),
        "{denied}"
    );
    proxy.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_refuses_new_sessions_and_its_session_ends_within_the_grace() {
    let grace = 2;
    let with_extra = base_config(&format!(
        "[http]\nshutdown_grace_secs = {grace}\n{}[servers.extra]\ncommand = \"{}\"\n",
        example_server_section(),
        example_server()
    ));
    let file = ConfigFile::new(&with_extra);
    let proxy = start(&file.path).await;
    let token = crate::common::hs_token(&claims(&proxy.url, "alice", json!({})));
    let extra = format!("{}/servers/extra/sse", proxy.url);
    let mut c = SseClient::connect(&extra, &token).await;
    c.initialize().await;
    let child = proxy.descendants();
    assert_eq!(child.len(), 1, "{child:?}");

    file.rewrite(&base_config(&format!(
        "[http]\nshutdown_grace_secs = {grace}\n{}",
        example_server_section()
    )));
    let line = reload(&proxy, "config reloaded", 1).await;
    let reloaded = std::time::Instant::now();
    assert_eq!(line["fields"]["removed"], "[\"extra\"]", "{line}");
    assert_eq!(sse_status(&extra, &token).await, 404, "no new session");
    // The open session is served until the grace ends.
    assert_eq!(
        c.tool_text(json!(1), "echo", json!({"message": "still"}))
            .await,
        "still"
    );
    let ended = tokio::time::timeout(Duration::from_secs(grace + 10), async {
        while c.next_event().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the removed server's session did not end");
    let took = reloaded.elapsed();
    assert!(
        took < Duration::from_secs(grace + 5),
        "ended {took:?} after the reload"
    );
    eventually(
        Duration::from_secs(10),
        "the removed server's child is still running",
        async || !proxy.descendants().contains(&child[0]),
    )
    .await;
    // The root server is untouched.
    let mut root = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    root.initialize().await;
    proxy.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing_and_is_counted() {
    let first = base_config(&example_server_section());
    let (file, proxy, mut c) = with_session(&first).await;
    let (_, ready_before) = get_text(&format!("{}/readyz", proxy.url)).await;

    // Invalid: a value out of range, and (separately) text that is not TOML.
    file.rewrite(&format!("{first}\n[sessions]\nmax_sessions = 0\n"));
    let line = reload(&proxy, "config reload refused", 1).await;
    let error = line["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("sessions.max_sessions"),
        "names the key: {line}"
    );
    file.rewrite("[[auth.issuers]\nnot toml");
    reload(&proxy, "config reload refused", 2).await;

    assert!(proxy.events("config reloaded").is_empty());
    let (status, ready_after) = get_text(&format!("{}/readyz", proxy.url)).await;
    assert_eq!(status, 200);
    assert_eq!(ready_after, ready_before, "the same generation and file");
    assert_eq!(
        c.tool_text(json!(1), "echo", json!({"message": "same"}))
            .await,
        "same"
    );
    let (_, metrics) = get_text(&format!("{}/metrics", proxy.url)).await;
    assert_eq!(
        metric(&metrics, "mcp_proxy_config_reloads_total{result=\"error\"}"),
        Some(2.0)
    );
    assert_eq!(metric(&metrics, "mcp_proxy_config_generation"), Some(1.0));
    proxy.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_server_gives_new_children_the_new_definition_and_open_sessions_keep_theirs() {
    let with_flavor = |flavor: &str| {
        base_config(&format!(
            "{}[servers.default.env]\nFLAVOR = \"{flavor}\"\n",
            example_server_section()
        ))
    };
    let (file, proxy, mut session) = with_session(&with_flavor("old")).await;
    let token = crate::common::hs_token(&claims(&proxy.url, "bob", json!({})));
    let mcp = format!("{}/mcp", proxy.url);
    let modern_flavor = async |id: u64| {
        let answer = crate::common::mcp::modern_tool(
            &mcp,
            &token,
            json!(id),
            "env",
            json!({"name": "FLAVOR"}),
        )
        .await;
        answer.last()["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(modern_flavor(1).await, "old");
    file.rewrite(&with_flavor("new"));
    let line = reload(&proxy, "config reloaded", 1).await;
    assert_eq!(line["fields"]["changed"], "[\"default\"]", "{line}");
    assert_eq!(modern_flavor(2).await, "new", "a new pooled child");
    assert_eq!(
        session
            .tool_text(json!(1), "env", json!({"name": "FLAVOR"}))
            .await,
        "old",
        "the open session keeps its child"
    );
    proxy.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_log_level_applies_at_once() {
    let with_level = |level: &str| {
        base_config(&format!(
            "[log]\nlevel = \"{level}\"\n{}",
            example_server_section()
        ))
    };
    let file = ConfigFile::new(&with_level("info"));
    let env = [("TEST_SECRET", crate::common::SECRET), ("RUST_LOG", "")];
    let proxy = ProxyProcess::start(&file.path, &env).await;
    let access_lines = || {
        proxy
            .events("request")
            .iter()
            .filter(|e| e["fields"]["path"] == "/healthz")
            .count()
    };
    let (status, _) = get_text(&format!("{}/healthz", proxy.url)).await;
    assert_eq!(status, 200);
    eventually(
        Duration::from_secs(10),
        "no access line at info",
        async || access_lines() == 1,
    )
    .await;
    file.rewrite(&with_level("info,access=off"));
    reload(&proxy, "config reloaded", 1).await;
    assert_eq!(proxy.events("log.level applied").len(), 1);
    let (status, _) = get_text(&format!("{}/healthz", proxy.url)).await;
    assert_eq!(status, 200);
    // A later event proves the log reader has seen everything before it.
    sighup(&proxy);
    eventually(
        Duration::from_secs(10),
        "no second reload line",
        async || proxy.events("config reloaded").len() == 2,
    )
    .await;
    assert_eq!(access_lines(), 1, "access lines are off after the reload");
    proxy.kill().await;
}
