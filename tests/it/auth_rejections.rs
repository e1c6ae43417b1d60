//! Every way a token can be wrong gets 401 (or 403 for a missing scope) with
//! `WWW-Authenticate`, and spawns nothing; every supported algorithm is accepted when the
//! issuer allows it (DESIGN §4, §6).

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::{KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::keys::{JwksServer, TestKey};
use crate::common::wait::eventually;
use crate::common::{HS_ISSUER, Proxy, SECRET, claims, example_server, http, wait_ready};

const JWKS_ISSUER: &str = "https://idp.test/realms/mcp";
const OTHER_ISSUER: &str = "https://other-idp.test";
const HS_WIDE_ISSUER: &str = "test-hs-wide";

/// Every asymmetric algorithm the proxy supports.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

struct Setup {
    proxy: Proxy,
    jwks: JwksServer,
    other_jwks: JwksServer,
    rsa: TestKey,
    ec: TestKey,
    mismatched: TestKey,
    encryption: TestKey,
    p384: TestKey,
    bare_rsa: TestKey,
    /// One key per algorithm in [`ASYMMETRIC`], kid `all-<alg>`, JWK `alg` set.
    all: Vec<TestKey>,
    /// A key only the other issuer publishes.
    other: TestKey,
}

async fn setup(min_refetch_secs: u64) -> Setup {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::ec("ec-1");
    let mismatched = TestKey::rsa("rsa-says-384").with_jwk_alg(KeyAlgorithm::RS384);
    let encryption = TestKey::rsa("rsa-enc")
        .without_jwk_alg()
        .with_jwk_use(PublicKeyUse::Encryption);
    let p384 = TestKey::for_alg("p384-no-alg", Algorithm::ES384).without_jwk_alg();
    let bare_rsa = TestKey::rsa("rsa-no-alg").without_jwk_alg();
    let all: Vec<TestKey> = ASYMMETRIC
        .iter()
        .map(|alg| TestKey::for_alg(&format!("all-{alg:?}"), *alg))
        .collect();
    let mut published = vec![
        rsa.jwk.clone(),
        ec.jwk.clone(),
        mismatched.jwk.clone(),
        encryption.jwk.clone(),
        p384.jwk.clone(),
        bare_rsa.jwk.clone(),
    ];
    published.extend(all.iter().map(|k| k.jwk.clone()));
    let jwks = JwksServer::start(published).await;
    let other = TestKey::rsa("other-1");
    let other_jwks = JwksServer::start(vec![other.jwk.clone()]).await;
    let cfg = format!(
        r#"
[[auth.issuers]]
issuer = "{HS_ISSUER}"
algorithms = ["HS256"]
secret_env = "TEST_SECRET"

[[auth.issuers]]
issuer = "{HS_WIDE_ISSUER}"
algorithms = ["HS384", "HS512"]
secret_env = "TEST_SECRET"

[[auth.issuers]]
issuer = "{JWKS_ISSUER}"
algorithms = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
jwks_url = "{}"
jwks_min_refetch_secs = {min_refetch_secs}

[[auth.issuers]]
issuer = "{OTHER_ISSUER}"
algorithms = ["RS256"]
jwks_url = "{}"
jwks_min_refetch_secs = {min_refetch_secs}

# Heads up to 64 KiB, so that the "oversized" row reaches the token check (16 KiB) rather
# than the connection layer's head limit (16 KiB by default; its own test is in attacks.rs).
[limits]
max_header_bytes = 65536

[servers.default]
command = "{}"
required_scopes = []

[servers.admin]
command = "{}"
required_scopes = ["mcp:admin"]
"#,
        jwks.url,
        other_jwks.url,
        example_server(),
        example_server()
    );
    let proxy = Proxy::with_config(&cfg, &[]).await;
    wait_ready(&proxy.url).await;
    Setup {
        proxy,
        jwks,
        other_jwks,
        rsa,
        ec,
        mismatched,
        encryption,
        p384,
        bare_rsa,
        all,
        other,
    }
}

/// GET with an optional token; returns the status and WWW-Authenticate.
pub(crate) async fn probe(url: &str, token: Option<&str>) -> (u16, String) {
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

fn issued_by(iss: &str, aud: &str, overrides: Value) -> serde_json::Map<String, Value> {
    let mut c = claims(aud, "alice", overrides);
    if !c.contains_key("iss") || c["iss"] == HS_ISSUER {
        c.insert("iss".into(), iss.into());
    }
    c
}

fn jwks_claims(aud: &str, overrides: Value) -> serde_json::Map<String, Value> {
    issued_by(JWKS_ISSUER, aud, overrides)
}

fn hmac(alg: Algorithm, claims: &serde_json::Map<String, Value>) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_tokens_of_every_configured_kind_are_accepted() {
    let s = setup(10).await;
    let url = format!("{}/sse", s.proxy.url);
    let aud = s.proxy.url.clone();
    let mut cases: Vec<(String, String)> = vec![
        ("HS256".into(), s.proxy.token("alice")),
        (
            "HS384".into(),
            hmac(
                Algorithm::HS384,
                &issued_by(HS_WIDE_ISSUER, &aud, json!({})),
            ),
        ),
        (
            "HS512".into(),
            hmac(
                Algorithm::HS512,
                &issued_by(HS_WIDE_ISSUER, &aud, json!({})),
            ),
        ),
        // A JWK without `alg` (as many IdPs publish RSA keys) serves RS* and PS* alike.
        (
            "PS512 with a JWK without alg".into(),
            TestKey {
                alg: Algorithm::PS512,
                ..s.bare_rsa.clone()
            }
            .sign(&jwks_claims(&aud, json!({}))),
        ),
        (
            "RS256 with a JWK without alg".into(),
            s.bare_rsa.sign(&jwks_claims(&aud, json!({}))),
        ),
        (
            "ES384 with a JWK without alg".into(),
            s.p384.sign(&jwks_claims(&aud, json!({}))),
        ),
        (
            "another issuer's own key".into(),
            s.other.sign(&issued_by(OTHER_ISSUER, &aud, json!({}))),
        ),
        // The endpoint URL (an RFC 8707 resource indicator) is an accepted audience too.
        (
            "aud=/sse".into(),
            s.proxy
                .token_with("alice", json!({"aud": format!("{aud}/sse")})),
        ),
        (
            "aud array".into(),
            s.proxy
                .token_with("alice", json!({"aud": ["http://other", aud.clone()]})),
        ),
    ];
    for key in &s.all {
        cases.push((
            format!("{:?}", key.alg),
            key.sign(&jwks_claims(&aud, json!({}))),
        ));
    }
    for (name, token) in cases {
        let (status, www) = probe(&url, Some(&token)).await;
        assert_eq!(status, 200, "{name}: {www}");
    }
}

/// One row of the rejection table.
struct Case {
    name: &'static str,
    path: String,
    token: Option<String>,
    status: u16,
    /// The `error=` parameter, or "" for none.
    error: &'static str,
    /// The `scope=` parameter, or "" for none.
    scope: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_table() {
    let s = setup(3600).await;
    let aud = s.proxy.url.clone();
    let now = jsonwebtoken::get_current_timestamp();
    let good = || jwks_claims(&aud, json!({}));
    let other_rsa = TestKey::rsa("rsa-impostor").with_kid("rsa-1"); // same kid, different key
    let hs_with_public_key = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &h,
            &good(),
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
        k.sign(&good())
    };
    // Signed by the other issuer's key, kid and all, but claiming to come from this issuer.
    let other_issuers_kid = s.other.sign(&good());
    // An ES256 header on a P-384 key (signed with ES384): the curve pins the algorithm.
    let es256_on_p384 = s.p384.sign_claiming("ES256", &s.p384.kid, &good());
    // A PS256 token whose kid names the key whose JWK says RS256.
    let ps_on_rs_jwk = TestKey {
        alg: Algorithm::PS256,
        ..s.rsa.clone()
    }
    .sign(&good());
    let token = |t: String| Some(t);
    let sse = "/sse".to_owned();
    let cases = vec![
        Case {
            name: "no token",
            path: sse.clone(),
            token: None,
            status: 401,
            error: "",
            scope: "",
        },
        Case {
            name: "not a JWT (an opaque token)",
            path: sse.clone(),
            token: token("5wRoSMSw0Votxv83OVypKfgsKjelZ_76-7MxUYoQkZr".into()),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "malformed base64",
            path: sse.clone(),
            token: token("eyJ!!!.eyJ!!!.sig".into()),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "oversized",
            path: sse.clone(),
            token: token("a".repeat(20_000)),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "bad signature",
            path: sse.clone(),
            token: token(other_rsa.sign(&good())),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "expired",
            path: sse.clone(),
            token: token(s.proxy.token_with("alice", json!({"exp": now - 3600}))),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "expired (RS256)",
            path: sse.clone(),
            token: token(s.rsa.sign(&jwks_claims(&aud, json!({"exp": now - 3600})))),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "nbf in the future",
            path: sse.clone(),
            token: token(s.proxy.token_with("alice", json!({"nbf": now + 3600}))),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "wrong issuer",
            path: sse.clone(),
            token: token(s.proxy.token_with("alice", json!({"iss": "someone-else"}))),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "wrong audience",
            path: sse.clone(),
            token: token(
                s.proxy
                    .token_with("alice", json!({"aud": "http://elsewhere"})),
            ),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "wrong audience (ES256, another path of another host)",
            path: sse.clone(),
            token: token(s.ec.sign(&jwks_claims(
                &aud,
                json!({"aud": "https://api.example.com/sse"}),
            ))),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "missing sub",
            path: sse.clone(),
            token: token(s.proxy.token_with("alice", json!({"sub": null}))),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "missing aud",
            path: sse.clone(),
            token: token(s.rsa.sign(&jwks_claims(&aud, json!({"aud": null})))),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "alg none",
            path: sse.clone(),
            token: token(alg_none),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "HS256 signed with the RSA public key",
            path: sse.clone(),
            token: token(hs_with_public_key),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "HS256 for an issuer that allows only HS384/HS512",
            path: sse.clone(),
            token: token(hmac(
                Algorithm::HS256,
                &issued_by(HS_WIDE_ISSUER, &aud, json!({})),
            )),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "ES256 for an issuer that allows only RS256",
            path: sse.clone(),
            token: token(s.ec.sign(&issued_by(OTHER_ISSUER, &aud, json!({})))),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "unknown kid",
            path: sse.clone(),
            token: token(unknown_kid),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "kid of another issuer's key",
            path: sse.clone(),
            token: token(other_issuers_kid),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "JWK alg mismatch (JWK says RS384, token RS256)",
            path: sse.clone(),
            token: token(s.mismatched.sign(&good())),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "JWK alg mismatch (JWK says RS256, token PS256)",
            path: sse.clone(),
            token: token(ps_on_rs_jwk),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "JWK use=enc",
            path: sse.clone(),
            token: token(s.encryption.sign(&good())),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "ES256 header on a P-384 key",
            path: sse.clone(),
            token: token(es256_on_p384),
            status: 401,
            error: "invalid_token",
            scope: "",
        },
        Case {
            name: "token in the query string",
            path: format!("/sse?access_token={}", s.proxy.token("alice")),
            token: None,
            status: 401,
            error: "invalid_request",
            scope: "",
        },
        Case {
            name: "missing scope",
            path: "/servers/admin/sse".into(),
            token: token(s.rsa.sign(&jwks_claims(&aud, json!({"scope": "mcp:read"})))),
            status: 403,
            error: "insufficient_scope",
            scope: "mcp:admin",
        },
        Case {
            name: "no token for a server with scopes",
            path: "/servers/admin/sse".into(),
            token: None,
            status: 401,
            error: "",
            scope: "mcp:admin",
        },
    ];
    for case in cases {
        let name = case.name;
        let (status, www) = probe(
            &format!("{}{}", s.proxy.url, case.path),
            case.token.as_deref(),
        )
        .await;
        assert_eq!(status, case.status, "{name}: {www}");
        let endpoint = case.path.split('?').next().unwrap_or_default();
        assert!(
            www.starts_with("Bearer ")
                && www.ends_with(&format!(
                    "resource_metadata=\"{}/.well-known/oauth-protected-resource{endpoint}\"",
                    s.proxy.url
                )),
            "{name}: {www}"
        );
        if case.error.is_empty() {
            assert!(!www.contains("error="), "{name}: {www}");
        } else {
            assert!(
                www.starts_with(&format!("Bearer error=\"{}\"", case.error)),
                "{name}: {www}"
            );
        }
        if case.scope.is_empty() {
            assert!(!www.contains("scope="), "{name}: {www}");
        } else {
            assert!(
                www.contains(&format!("scope=\"{}\"", case.scope)),
                "{name}: {www}"
            );
        }
        if let Some(t) = &case.token {
            assert!(!www.contains(t.as_str()), "{name}: the token is echoed");
        }
    }
    assert_eq!(s.proxy.spawned(), 0, "a refused request spawned a child");
    // The other issuer's key set was never consulted for this issuer's tokens.
    assert_eq!(s.other_jwks.fetch_count(), 1);
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
    for granted in [
        json!({"scope": "mcp:read mcp:admin"}),
        json!({"scp": ["mcp:read", "mcp:admin"]}),
        json!({"scp": "mcp:admin"}),
    ] {
        let ok = s.proxy.token_with("alice", granted.clone());
        assert_eq!(probe(&url, Some(&ok)).await.0, 200, "{granted}");
    }
}

/// With the default audiences a token issued for one server's endpoint (an RFC 8707 resource
/// indicator) works at that server, under each of its mount points, and nowhere else; a
/// token for the whole proxy works everywhere (spec 2025-11-25 §Token Audience Binding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_server_is_refused_at_another() {
    let s = setup(10).await;
    let url = &s.proxy.url;
    let token_for = |aud: Value| {
        s.proxy
            .token_with("alice", json!({"aud": aud, "scope": "mcp:admin"}))
    };
    let admin = format!("{url}/servers/admin/sse");
    let root = format!("{url}/sse");
    let default = format!("{url}/servers/default/sse");
    let cases = [
        // (aud, [(endpoint, status)])
        (
            json!(format!("{url}/servers/admin/mcp")),
            [(&admin, 200), (&root, 401), (&default, 401)],
        ),
        (
            json!(format!("{url}/servers/admin/sse")),
            [(&admin, 200), (&root, 401), (&default, 401)],
        ),
        // The root server is `default`: its root endpoints and its /servers/default ones.
        (
            json!(format!("{url}/sse")),
            [(&admin, 401), (&root, 200), (&default, 200)],
        ),
        (
            json!(format!("{url}/servers/default/mcp")),
            [(&admin, 401), (&root, 200), (&default, 200)],
        ),
        (json!(url), [(&admin, 200), (&root, 200), (&default, 200)]),
        (
            json!(format!("{url}/")),
            [(&admin, 200), (&root, 200), (&default, 200)],
        ),
        // One fitting entry of an array is enough.
        (
            json!([
                format!("{url}/servers/default/sse"),
                format!("{url}/servers/admin/sse")
            ]),
            [(&admin, 200), (&root, 200), (&default, 200)],
        ),
    ];
    let mut accepted = 0;
    for (aud, expected) in cases {
        let token = token_for(aud.clone());
        for (endpoint, status) in expected {
            let (got, www) = probe(endpoint, Some(&token)).await;
            accepted += u64::from(got == 200);
            assert_eq!(got, status, "aud {aud} at {endpoint}: {www}");
            if status == 401 {
                assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
            }
        }
    }
    let metrics = s.proxy.metrics().await;
    let refused = crate::common::metric(
        &metrics,
        "mcp_proxy_auth_failures_total{reason=\"audience\"}",
    );
    assert_eq!(refused, Some(6.0), "audience refusals counted");
    assert_eq!(
        s.proxy.spawned(),
        accepted,
        "only accepted requests spawn a child"
    );
}

/// Unknown kids trigger at most one refetch per jwks_min_refetch_secs; a key added to the
/// JWKS is picked up by that refetch without a restart; concurrent misses share one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetch_is_rate_limited_and_finds_new_keys() {
    let s = setup(3600).await;
    let url = format!("{}/sse", s.proxy.url);
    let aud = s.proxy.url.clone();
    let before = s.jwks.fetch_count();
    let rotated = TestKey::rsa("rsa-2");
    s.jwks
        .set_keys(vec![s.rsa.jwk.clone(), rotated.jwk.clone()]);
    // Concurrent first misses refetch once and all find the new key.
    let token = rotated.sign(&jwks_claims(&aud, json!({})));
    let probes = (0..8).map(|_| probe(&url, Some(&token)));
    for (status, www) in futures::future::join_all(probes).await {
        assert_eq!(status, 200, "{www}");
    }
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
    let stats = s
        .proxy
        .state
        .jwks_stats()
        .into_iter()
        .find(|(iss, _)| iss == JWKS_ISSUER)
        .map(|(_, st)| st)
        .expect("stats");
    assert_eq!(stats.unknown_kid_refetches, 1, "{stats:?}");
    assert_eq!(stats.unknown_kid_throttled, 10, "{stats:?}");
    assert_eq!(stats.fetches_failed, 0, "{stats:?}");
    assert_eq!(stats.keys, 2, "{stats:?}");
}

/// A JWKS answer with `Cache-Control: max-age=1` is refetched about every second even though
/// jwks_refresh_secs is an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_shortens_the_refresh() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk.clone()]).await;
    jwks.set_cache_control(Some("public, max-age=1"));
    let cfg = format!(
        r#"
[[auth.issuers]]
issuer = "{JWKS_ISSUER}"
algorithms = ["RS256"]
jwks_url = "{}"
jwks_refresh_secs = 3600

[servers.default]
command = "{}"
"#,
        jwks.url,
        example_server()
    );
    let proxy = Proxy::with_config(&cfg, &[]).await;
    wait_ready(&proxy.url).await;
    eventually(
        Duration::from_secs(10),
        "max-age=1 did not shorten the refresh interval",
        async || jwks.fetch_count() >= 3,
    )
    .await;
}
