//! The TLS table (issue 13): HTTPS on the listener with HTTP/1.1 and h2 (curl, the TypeScript
//! and Python SDKs, reqwest), every transport over HTTP/2, client certificates accepted and
//! refused, the certificate reloaded while an SSE session opened before keeps streaming, a
//! broken new pair kept out, `check` naming the key of a bad file, and HAProxy re-encrypting
//! to the proxy. Certificates are made per test (rcgen).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::lb::{LoadBalancer, lb_socket};
use crate::common::mcp::{self, EventStream, Session};
use crate::common::process::ProxyProcess;
use crate::common::sse::SseClient;
use crate::common::tls::{Leaf, Pki, https_builder, https_client, install, peer_certificate};
use crate::common::wait::eventually;
use crate::common::{Proxy, base_config, claims, example_server_section, hs_token, metric};
use crate::interop::{call_args, first_text, run_client_with_env};

const WAIT: Duration = Duration::from_secs(20);

/// `[listen]` with TLS from these files, plus the example server.
fn tls_config(cert: &Path, key: &Path, extra_listen: &str) -> String {
    base_config(&format!(
        "[listen]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra_listen}\n{}",
        cert.display(),
        key.display(),
        example_server_section()
    ))
}

/// `https://127.0.0.1:PORT` of a proxy process (its default public URL with TLS on).
fn https_url(proxy: &ProxyProcess) -> String {
    format!("https://{}", proxy.addr)
}

fn token_for(base: &str, sub: &str) -> String {
    hs_token(&claims(base, sub, json!({})))
}

/// `curl` with `args`; its stdout, and whether it exited 0.
async fn curl(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("curl runs (scripts/install-test-deps.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn modern_echo_body() -> (Vec<(&'static str, String)>, Value) {
    mcp::modern_request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "over tls"}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http1_and_h2_for_curl_the_sdks_and_reqwest() {
    let pki = Pki::new("https");
    let leaf = pki.server("server", 1);
    let proxy = ProxyProcess::with_config(&tls_config(&leaf.cert, &leaf.key, ""), &[]).await;
    let base = https_url(&proxy);
    let token = token_for(&base, "alice");
    let ca = pki.ca_pem.to_string_lossy().into_owned();

    // curl, HTTP/1.1 and h2 (ALPN); a modern tools/call over h2.
    let (ok, version) = curl(&[
        "--cacert",
        &ca,
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &format!("{base}/healthz"),
    ])
    .await;
    assert!(ok, "curl over HTTPS/1.1");
    assert_eq!(version, "1.1 200");
    let (headers, body) = modern_echo_body();
    let mut args: Vec<String> = vec![
        "--cacert".into(),
        ca.clone(),
        "--http2".into(),
        "-w".into(),
        "\n%{http_version}".into(),
        "-H".into(),
        format!("authorization: Bearer {token}"),
        "-H".into(),
        "content-type: application/json".into(),
        "-H".into(),
        "accept: application/json, text/event-stream".into(),
        "--data".into(),
        body.to_string(),
    ];
    for (k, v) in &headers {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args.push(format!("{base}/mcp"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = curl(&args).await;
    assert!(ok, "curl --http2: {out}");
    assert!(out.ends_with("\n2"), "negotiated h2: {out}");
    assert!(out.contains("over tls"), "{out}");

    // reqwest: h2 by ALPN; the metadata names the https resource.
    let client = https_client(&pki.ca_pem);
    let r = client
        .get(format!("{base}/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .expect("metadata over TLS");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(peer_certificate(&r), leaf.der);
    let doc: Value = r.json().await.expect("JSON");
    assert_eq!(doc["resource"], format!("{base}/mcp"));

    // The official SDKs, trusting the test CA the way their users would.
    for transport in ["streamable", "sse"] {
        let url = if transport == "sse" {
            format!("{base}/sse")
        } else {
            format!("{base}/mcp")
        };
        let report = run_client_with_env(
            "node",
            "ts_client.mjs",
            &call_args(
                &url,
                transport,
                &token,
                "echo",
                r#"{"message":"ts tls"}"#,
                &[],
            ),
            &[("NODE_EXTRA_CA_CERTS", &ca)],
        )
        .await;
        assert_eq!(
            report["ok"], true,
            "TypeScript SDK over {transport}: {report}"
        );
        assert!(first_text(&report).contains("ts tls"), "{report}");
    }
    let report = run_client_with_env(
        "python",
        "py_client.py",
        &call_args(
            &format!("{base}/mcp"),
            "streamable",
            &token,
            "echo",
            r#"{"message":"py tls"}"#,
            &[],
        ),
        &[("SSL_CERT_FILE", &ca)],
    )
    .await;
    assert_eq!(report["ok"], true, "Python SDK over HTTPS: {report}");
    assert!(first_text(&report).contains("py tls"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_works_over_http2_on_one_connection() {
    let proxy = Proxy::start().await;
    let before = metric(&proxy.metrics().await, "mcp_proxy_connections_total").unwrap_or(0.0);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(WAIT)
        .build()
        .expect("h2c client");
    let token = proxy.token("alice");

    // Legacy SSE: the stream and its POSTs multiplexed on the one connection.
    let mut sse =
        SseClient::connect_on(h2.clone(), &format!("{}/sse", proxy.url), &token, &[]).await;
    sse.initialize().await;
    let answer = sse
        .call(
            json!(2),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "legacy h2"}}),
        )
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "legacy h2");

    // Session-era Streamable HTTP: many POST streams at once.
    let url = format!("{}/mcp", proxy.url);
    let session = Session::open_on(&h2, &url, &token, "2025-11-25").await;
    let calls = (0..20).map(|i| {
        let session = &session;
        async move {
            let a = session
                .call_tool(json!(i), "echo", json!({"message": format!("m{i}")}))
                .await;
            (i, a)
        }
    });
    for (i, a) in futures::future::join_all(calls).await {
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.last()["id"], i);
        assert_eq!(a.last()["result"]["content"][0]["text"], format!("m{i}"));
    }

    // 2026-07-28: a request and a subscriptions/listen stream.
    let a = mcp::modern_on(
        &h2,
        &url,
        &token,
        json!("m"),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "modern h2"}}),
    )
    .await;
    assert_eq!(
        a.last()["result"]["content"][0]["text"],
        "modern h2",
        "{a:?}"
    );
    let mut listen = EventStream::modern_on(
        &h2,
        &url,
        &token,
        json!("L"),
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    )
    .await;
    let ack = listen.next(WAIT).await.expect("acknowledgement");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    mcp::modern_on(
        &h2,
        &url,
        &token,
        json!("n"),
        "tools/call",
        json!({"name": "notify", "arguments": {"method": "notifications/tools/list_changed"}}),
    )
    .await;
    let note = listen.next(WAIT).await.expect("list change over h2");
    assert_eq!(note["method"], "notifications/tools/list_changed");

    // All of it on one connection; the other is this scrape's own.
    let after = metric(&proxy.metrics().await, "mcp_proxy_connections_total").unwrap_or(0.0);
    assert_eq!(
        after - before,
        2.0,
        "one HTTP/2 connection carried every request"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_signed_by_the_ca_are_accepted_others_refused() {
    let pki = Pki::new("mtls");
    let leaf = pki.server("server", 1);
    let client_ca = Pki::new("clients");
    let good = client_ca.client("alice", "alice");
    let stranger = Pki::new("strangers").client("mallory", "mallory");
    let config = tls_config(
        &leaf.cert,
        &leaf.key,
        &format!("tls_client_ca = \"{}\"", client_ca.ca_pem.display()),
    );
    let proxy = ProxyProcess::with_config(&config, &[]).await;
    let healthz = format!("{}/healthz", https_url(&proxy));
    let ca = pki.ca_pem.to_string_lossy().into_owned();
    let with_cert = |leaf: &Leaf| {
        vec![
            "--cacert".to_owned(),
            ca.clone(),
            "--cert".to_owned(),
            leaf.cert.to_string_lossy().into_owned(),
            "--key".to_owned(),
            leaf.key.to_string_lossy().into_owned(),
            "-w".to_owned(),
            "%{http_code}".to_owned(),
            healthz.clone(),
        ]
    };
    let args = with_cert(&good);
    let (ok, out) = curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(ok && out.ends_with("200"), "a client of the CA: {out}");
    let args = with_cert(&stranger);
    let (ok, out) = curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(
        !ok && !out.contains("200"),
        "a certificate of another CA: {out}"
    );
    let (ok, out) = curl(&["--cacert", &ca, "-w", "%{http_code}", &healthz]).await;
    assert!(!ok && !out.contains("200"), "no client certificate: {out}");

    let identity = std::fs::read(&good.cert)
        .into_iter()
        .chain(std::fs::read(&good.key))
        .flatten()
        .collect::<Vec<u8>>();
    let client = https_builder(&pki.ca_pem)
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .build()
        .expect("mTLS client");
    let metrics_url = format!("{}/metrics", https_url(&proxy));
    eventually(WAIT, "both refusals counted", async || {
        let Ok(r) = client.get(&metrics_url).send().await else {
            return false;
        };
        let text = r.text().await.unwrap_or_default();
        metric(
            &text,
            "mcp_proxy_edge_refused_total{reason=\"tls_handshake\"}",
        )
        .is_some_and(|n| n >= 2.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_served_without_a_restart_and_a_broken_one_is_kept_out() {
    let pki = Pki::new("reload");
    let first = pki.server("first", 1001);
    let live_cert = pki.path("live.pem");
    let live_key = pki.path("live-key.pem");
    install(&first.cert, &live_cert);
    install(&first.key, &live_key);
    let proxy = ProxyProcess::with_config(&tls_config(&live_cert, &live_key, ""), &[]).await;
    let base = https_url(&proxy);
    let token = token_for(&base, "alice");
    let presented = async || {
        // A new client: a new connection and handshake each time.
        let r = https_client(&pki.ca_pem)
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("HTTPS");
        assert_eq!(r.status(), 200);
        peer_certificate(&r)
    };
    assert_eq!(presented().await, first.der);
    let mut sse = SseClient::connect_on(
        https_client(&pki.ca_pem),
        &format!("{base}/sse"),
        &token,
        &[],
    )
    .await;
    sse.initialize().await;

    let second = pki.server("second", 1002);
    install(&second.cert, &live_cert);
    install(&second.key, &live_key);
    eventually(
        WAIT,
        "new connections get the new certificate",
        async || presented().await == second.der,
    )
    .await;
    // The session opened on the old certificate keeps streaming.
    let answer = sse
        .call(
            json!(7),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "still here"}}),
        )
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "still here");

    // A broken pair (the new certificate with the old key) is refused and counted; the
    // current one stays in use and the proxy stays ready.
    let third = pki.server("third", 1003);
    install(&third.cert, &live_cert);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let metrics = async || {
        https_client(&pki.ca_pem)
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    };
    eventually(WAIT, "the broken pair is counted", async || {
        metric(
            &metrics().await,
            "mcp_proxy_tls_reloads_total{result=\"error\"}",
        ) == Some(1.0)
    })
    .await;
    assert_eq!(presented().await, second.der, "the good pair stays in use");
    let text = metrics().await;
    assert_eq!(
        metric(&text, "mcp_proxy_tls_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert!(
        !proxy
            .events("SIGHUP: checking the TLS certificate")
            .is_empty(),
        "SIGHUP triggers a check"
    );
    assert!(
        proxy
            .events("TLS certificate not reloaded; the old one stays in use")
            .iter()
            .any(|e| e["fields"]["error"]
                .as_str()
                .is_some_and(|m| m.contains("listen.tls_key"))),
        "the log names the key"
    );
    // Completing the pair is picked up.
    install(&third.key, &live_key);
    eventually(WAIT, "the completed pair is served", async || {
        presented().await == third.der
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_tls_files_and_names_the_key_of_a_bad_one() {
    let pki = Pki::new("check");
    let good = pki.server("good", 1);
    let other = pki.server("other", 2);
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let missing = pki.path("missing.pem");
    let check = async |toml: String| {
        let path = pki.path("proxy.toml");
        std::fs::write(&path, toml).expect("write config");
        let out = tokio::process::Command::new(crate::common::proxy_binary())
            .args(["check", "--config"])
            .arg(&path)
            .env("TEST_SECRET", crate::common::SECRET)
            .output()
            .await
            .expect("check runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = check(tls_config(&good.cert, &good.key, "")).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("tls: "), "{stdout}");
    assert!(stdout.contains("public_url: https://"), "{stdout}");
    for (name, cert, key, extra, want) in [
        ("missing key", &good.cert, &missing, "", "listen.tls_key"),
        (
            "key of another certificate",
            &good.cert,
            &other.key,
            "",
            "listen.tls_key",
        ),
        (
            "not a certificate",
            &garbage,
            &good.key,
            "",
            "listen.tls_cert",
        ),
        (
            "unreadable client CA",
            &good.cert,
            &good.key,
            "tls_client_ca = \"/nonexistent/ca.pem\"",
            "listen.tls_client_ca",
        ),
    ] {
        let (code, _, stderr) = check(tls_config(cert, key, extra)).await;
        assert_eq!(code, Some(64), "{name}: {stderr}");
        assert!(stderr.contains(want), "{name}: {stderr}");
    }
    let (code, _, stderr) = check(base_config(&format!(
        "[listen]\ntls_cert = \"{}\"\n{}",
        good.cert.display(),
        example_server_section()
    )))
    .await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("listen.tls_key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_re_encrypts_to_the_proxy() {
    let pki = Pki::new("haproxy");
    let leaf = pki.server("server", 1);
    let (listener, fd, lb_url) = lb_socket();
    let config = base_config(&format!(
        "[listen]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[http]\npublic_url = \"{lb_url}\"\n{}",
        leaf.cert.display(),
        leaf.key.display(),
        example_server_section()
    ));
    let proxy = ProxyProcess::with_config(&config, &[]).await;
    let haproxy_cfg = pki.path("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        format!(
            r#"
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend mcp
    bind fd@{fd}
    default_backend proxies
backend proxies
    server p1 {addr} ssl verify required ca-file {ca} verifyhost localhost sni str(localhost) alpn h2,http/1.1
"#,
            addr = proxy.addr,
            ca = pki.ca_pem.display()
        ),
    )
    .expect("write haproxy.cfg");
    let haproxy = LoadBalancer::haproxy(&haproxy_cfg, listener);
    let token = token_for(&lb_url, "alice");
    let url = format!("{lb_url}/mcp");
    eventually(WAIT, "a modern call through HAProxy", async || {
        let a =
            mcp::modern_tool(&url, &token, json!(1), "echo", json!({"message": "via lb"})).await;
        a.last()["result"]["content"][0]["text"] == "via lb"
    })
    .await;
    let mut sse = SseClient::connect(&format!("{lb_url}/sse"), &token).await;
    sse.initialize().await;
    let answer = sse
        .call(
            json!(3),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "sse via lb"}}),
        )
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"],
        "sse via lb",
        "{}",
        haproxy.log_text()
    );
    haproxy.stop().await;
}
