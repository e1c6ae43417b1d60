//! Every way a token can be wrong gets 401 (or 403 for a missing scope) with
//! `WWW-Authenticate`, and spawns nothing (DESIGN §4, §6).

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::KeyAlgorithm;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::keys::{JwksServer, TestKey};
use crate::common::{HS_ISSUER, Proxy, claims, example_server, http};

const JWKS_ISSUER: &str = "https://idp.test/realms/mcp";

struct Setup {
    proxy: Proxy,
    jwks: JwksServer,
    rsa: TestKey,
    ec: TestKey,
    mismatched: TestKey,
}

async fn setup(min_refetch_secs: u64) -> Setup {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::ec("ec-1");
    let mismatched = TestKey::rsa("rsa-says-384").with_jwk_alg(KeyAlgorithm::RS384);
    let jwks = JwksServer::start(vec![
        rsa.jwk.clone(),
        ec.jwk.clone(),
        mismatched.jwk.clone(),
    ])
    .await;
    let cfg = format!(
        r#"
[[auth.issuers]]
issuer = "{HS_ISSUER}"
algorithms = ["HS256"]
secret_env = "TEST_SECRET"

[[auth.issuers]]
issuer = "{JWKS_ISSUER}"
algorithms = ["RS256", "ES256"]
jwks_url = "{}"
jwks_min_refetch_secs = {min_refetch_secs}

[servers.default]
command = "{}"
required_scopes = []

[servers.admin]
command = "{}"
required_scopes = ["mcp:admin"]
"#,
        jwks.url,
        example_server(),
        example_server()
    );
    let proxy = Proxy::with_config(&cfg, &[]).await;
    wait_ready(&proxy.url).await;
    Setup {
        proxy,
        jwks,
        rsa,
        ec,
        mismatched,
    }
}

async fn wait_ready(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = http().get(format!("{url}/readyz")).send().await;
        if r.map(|r| r.status() == 200).unwrap_or(false) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "proxy never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET /sse with an optional token; returns the status and WWW-Authenticate.
async fn probe(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let www = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (r.status().as_u16(), www)
}

fn jwks_claims(aud: &str, overrides: Value) -> serde_json::Map<String, Value> {
    let mut c = claims(aud, "alice", overrides);
    if !c.contains_key("iss") || c["iss"] == HS_ISSUER {
        c.insert("iss".into(), JWKS_ISSUER.into());
    }
    c
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_tokens_of_every_configured_kind_are_accepted() {
    let s = setup(10).await;
    let url = format!("{}/sse", s.proxy.url);
    let aud = s.proxy.url.clone();
    for (name, token) in [
        ("HS256", s.proxy.token("alice")),
        ("RS256", s.rsa.sign(&jwks_claims(&aud, json!({})))),
        ("ES256", s.ec.sign(&jwks_claims(&aud, json!({})))),
        // The endpoint URL (an RFC 8707 resource indicator) is an accepted audience too.
        (
            "aud=/sse",
            s.proxy
                .token_with("alice", json!({"aud": format!("{aud}/sse")})),
        ),
        (
            "aud array",
            s.proxy
                .token_with("alice", json!({"aud": ["http://other", aud.clone()]})),
        ),
    ] {
        let (status, _) = probe(&url, Some(&token)).await;
        assert_eq!(status, 200, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_table() {
    let s = setup(3600).await;
    let url = format!("{}/sse", s.proxy.url);
    let aud = s.proxy.url.clone();
    let now = jsonwebtoken::get_current_timestamp();
    let other_rsa = TestKey::rsa("rsa-1"); // same kid, different key
    let hs_with_public_key = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &h,
            &jwks_claims(&aud, json!({})),
            &EncodingKey::from_secret(s.rsa.public_pem.as_bytes()),
        )
        .expect("sign")
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&Value::Object(claims(&aud, "alice", json!({}))))
    );
    let unknown_kid = {
        let mut k = s.rsa.clone();
        k.kid = "no-such-kid".into();
        k.sign(&jwks_claims(&aud, json!({})))
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, ""),
        ("malformed", Some("not-a-jwt".into()), "invalid_token"),
        (
            "malformed base64",
            Some("eyJ!!!.eyJ!!!.sig".into()),
            "invalid_token",
        ),
        ("oversized", Some("a".repeat(20_000)), "invalid_token"),
        (
            "bad signature",
            Some(other_rsa.sign(&jwks_claims(&aud, json!({})))),
            "invalid_token",
        ),
        (
            "expired",
            Some(s.proxy.token_with("alice", json!({"exp": now - 3600}))),
            "invalid_token",
        ),
        (
            "not yet valid",
            Some(s.proxy.token_with("alice", json!({"nbf": now + 3600}))),
            "invalid_token",
        ),
        (
            "wrong issuer",
            Some(s.proxy.token_with("alice", json!({"iss": "someone-else"}))),
            "invalid_token",
        ),
        (
            "wrong audience",
            Some(
                s.proxy
                    .token_with("alice", json!({"aud": "http://elsewhere"})),
            ),
            "invalid_token",
        ),
        (
            "missing sub",
            Some(s.proxy.token_with("alice", json!({"sub": null}))),
            "invalid_token",
        ),
        ("alg none", Some(alg_none), "invalid_token"),
        (
            "HS256 signed with the RSA public key",
            Some(hs_with_public_key),
            "invalid_token",
        ),
        ("unknown kid", Some(unknown_kid), "invalid_token"),
        (
            "JWK alg mismatch",
            Some(s.mismatched.sign(&jwks_claims(&aud, json!({})))),
            "invalid_token",
        ),
    ];
    for (name, token, error) in cases {
        let (status, www) = probe(&url, token.as_deref()).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            www.starts_with("Bearer ")
                && www.contains(&format!(
                    "resource_metadata=\"{}/.well-known/oauth-protected-resource/sse\"",
                    s.proxy.url
                )),
            "{name}: {www}"
        );
        if error.is_empty() {
            assert!(!www.contains("error="), "{name}: {www}");
        } else {
            assert!(www.contains(&format!("error=\"{error}\"")), "{name}: {www}");
        }
        if let Some(t) = &token {
            assert!(!www.contains(t.as_str()), "{name}: the token is echoed");
        }
    }
    // A token in the query string is refused even when it is valid.
    let (status, www) = probe(
        &format!("{url}?access_token={}", s.proxy.token("alice")),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(www.contains("invalid_request"), "{www}");
    assert_eq!(s.proxy.spawned(), 0, "a refused request spawned a child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_is_403_insufficient_scope() {
    let s = setup(10).await;
    let url = format!("{}/servers/admin/sse", s.proxy.url);
    let (status, www) = probe(&url, Some(&s.proxy.token("alice"))).await;
    assert_eq!(status, 403);
    assert!(www.contains("error=\"insufficient_scope\""), "{www}");
    assert!(www.contains("scope=\"mcp:admin\""), "{www}");
    assert_eq!(s.proxy.spawned(), 0);
    let ok = s
        .proxy
        .token_with("alice", json!({"scope": "mcp:read mcp:admin"}));
    assert_eq!(probe(&url, Some(&ok)).await.0, 200);
}

/// Unknown kids trigger at most one refetch per jwks_min_refetch_secs; a key added to the
/// JWKS is picked up by that refetch without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetch_is_rate_limited_and_finds_new_keys() {
    let s = setup(3600).await;
    let url = format!("{}/sse", s.proxy.url);
    let aud = s.proxy.url.clone();
    let before = s.jwks.fetch_count();
    let rotated = TestKey::rsa("rsa-2");
    s.jwks
        .set_keys(vec![s.rsa.jwk.clone(), rotated.jwk.clone()]);
    // First miss refetches and finds the new key.
    let (status, _) = probe(&url, Some(&rotated.sign(&jwks_claims(&aud, json!({}))))).await;
    assert_eq!(status, 200);
    assert_eq!(s.jwks.fetch_count(), before + 1);
    // Many misses within the window: no further fetches.
    let bogus = {
        let mut k = s.rsa.clone();
        k.kid = "bogus".into();
        k.sign(&jwks_claims(&aud, json!({})))
    };
    let probes = (0..10).map(|_| probe(&url, Some(&bogus)));
    for (status, _) in futures::future::join_all(probes).await {
        assert_eq!(status, 401);
    }
    assert_eq!(s.jwks.fetch_count(), before + 1, "refetch not rate-limited");
}
