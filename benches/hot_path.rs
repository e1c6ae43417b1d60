//! criterion micro-benches of the per-message hot path (issue 7): token validation (HS256,
//! RS256, ES256; uncached, and the whole authorization decision a request takes, through the
//! validated-token cache), JSON-RPC classification of
//! child output and client bodies, id rewriting, and SSE event encoding.
//!
//! `cargo bench --bench hot_path`; under `cargo test --all-targets` each bench runs once.
//! The RS256/ES256 keys are generated at start and served as a JWKS on 127.0.0.1:0.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, Sse};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_auth_proxy::bench::{self, Authenticator};
use mcp_auth_proxy::config::Config;

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
const AUD: &str = "http://127.0.0.1:8080";

struct Signer {
    alg: Algorithm,
    iss: &'static str,
    kid: Option<&'static str>,
    key: EncodingKey,
}

impl Signer {
    fn token(&self) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({
            "iss": self.iss, "sub": "alice", "aud": AUD, "iat": now, "nbf": now,
            "exp": now + 3600, "scope": "mcp:read mcp:write",
        });
        let mut header = Header::new(self.alg);
        header.kid = self.kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

fn keypair(alg: Algorithm, kid: &'static str, iss: &'static str) -> (Signer, Jwk) {
    let sig = match alg {
        Algorithm::RS256 => &rcgen::PKCS_RSA_SHA256,
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let pair = rcgen::KeyPair::generate_for(sig).expect("keygen");
    let pem = pair.serialize_pem();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(pem.as_bytes()),
    }
    .expect("encoding key");
    let mut jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
    jwk.common.key_id = Some(kid.to_owned());
    (
        Signer {
            alg,
            iss,
            kid: Some(kid),
            key,
        },
        jwk,
    )
}

/// An authenticator with an HS256 issuer and RS256/ES256 issuers on a loopback JWKS.
fn setup(rt: &tokio::runtime::Runtime) -> (Arc<Authenticator>, Vec<Signer>) {
    mcp_auth_proxy::install_crypto_provider();
    let (rs, rs_jwk) = keypair(Algorithm::RS256, "rs-1", "bench-rs");
    let (es, es_jwk) = keypair(Algorithm::ES256, "es-1", "bench-es");
    let jwks = JwkSet {
        keys: vec![rs_jwk, es_jwk],
    };
    let url = rt.block_on(async move {
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    });
    let toml = format!(
        r#"
[auth]
audiences = ["{AUD}"]
[[auth.issuers]]
issuer = "bench-hs"
algorithms = ["HS256"]
secret_env = "BENCH_SECRET"
[[auth.issuers]]
issuer = "bench-rs"
algorithms = ["RS256"]
jwks_url = "{url}"
[[auth.issuers]]
issuer = "bench-es"
algorithms = ["ES256"]
jwks_url = "{url}"
[servers.default]
command = "true"
"#
    );
    let env = vec![("BENCH_SECRET".to_owned(), SECRET.to_owned())];
    let config = Config::parse(&toml, &env).expect("config");
    let auth = Authenticator::new(&config, AUD, &env).expect("authenticator");
    for cache in auth.jwks_caches() {
        rt.block_on(cache.refresh()).expect("JWKS load");
    }
    let hs = Signer {
        alg: Algorithm::HS256,
        iss: "bench-hs",
        kid: None,
        key: EncodingKey::from_secret(SECRET.as_bytes()),
    };
    (Arc::new(auth), vec![hs, rs, es])
}

fn tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (auth, signers) = setup(&rt);
    let mut group = c.benchmark_group("token");
    for signer in &signers {
        let token = signer.token();
        let name = format!("{:?}", signer.alg);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        // Make sure it is valid, and in the cache for the cached variant.
        rt.block_on(auth.authorize("default", &headers, None))
            .expect("valid token");
        group.bench_with_input(BenchmarkId::new("uncached", &name), &token, |b, t| {
            b.iter(|| futures::executor::block_on(auth.validate(black_box(t))).is_ok())
        });
        // What every request does: header, cached validation, audience, scopes.
        group.bench_with_input(BenchmarkId::new("cached", &name), &headers, |b, h| {
            b.iter(|| {
                futures::executor::block_on(auth.authorize("default", black_box(h), None)).is_ok()
            })
        });
    }
    group.finish();
}

/// A child's answer to `tools/call echo`, and a large tool result.
fn answers() -> Vec<(&'static str, String)> {
    let small = r#"{"jsonrpc":"2.0","id":17,"result":{"content":[{"type":"text","text":"m12345"}],"isError":false}}"#.to_owned();
    let text = "x".repeat(64 * 1024);
    let large = format!(
        r#"{{"jsonrpc":"2.0","id":"req-9","result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
    );
    let notification = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":3,"total":10}}"#.to_owned();
    vec![
        ("response-small", small),
        ("response-64k", large),
        ("notification", notification),
    ]
}

fn jsonrpc_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("jsonrpc");
    for (name, line) in answers() {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_with_input(BenchmarkId::new("probe", name), &line, |b, l| {
            b.iter(|| bench::probe_kind(black_box(l)))
        });
    }
    // Id rewriting as the modern-era multiplexer does it (src/mux/): find the raw id with
    // `probe`, splice the proxy's id in (on the way in) or the client's back (on the way out).
    for (name, line) in answers() {
        if name == "notification" {
            continue;
        }
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_with_input(BenchmarkId::new("rewrite_id", name), &line, |b, l| {
            b.iter(|| bench::rewrite_id(black_box(l), "\"client-7\""))
        });
    }
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "call",
            br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m12345"}}}"#.to_vec(),
        ),
        (
            "call-pretty",
            b"{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 42,\n  \"method\": \"tools/call\",\n  \"params\": {\"name\": \"echo\", \"arguments\": {\"message\": \"m\"}}\n}".to_vec(),
        ),
        (
            "batch-8",
            format!(
                "[{}]",
                (0..8)
                    .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#))
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .into_bytes(),
        ),
    ];
    for (name, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("client_message", name), body, |b, body| {
            b.iter(|| bench::client_message(black_box(body)))
        });
    }
    group.finish();
}

fn sse_bench(c: &mut Criterion) {
    const EVENTS: usize = 100;
    let line = answers().remove(0).1;
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Elements(EVENTS as u64));
    // The proxy's per-line work on the way out: one `message` event per child line, encoded
    // by axum's SSE body.
    group.bench_function("encode_message_events", |b| {
        b.iter(|| {
            let events: Vec<Result<Event, Infallible>> = (0..EVENTS)
                .map(|_| Ok(Event::default().event("message").data(line.as_str())))
                .collect();
            let body = Sse::new(futures::stream::iter(events))
                .into_response()
                .into_body();
            let bytes = futures::executor::block_on(body.collect())
                .expect("body")
                .to_bytes();
            black_box(bytes.len())
        })
    });
    group.finish();
}

criterion_group!(benches, tokens, jsonrpc_bench, sse_bench);
criterion_main!(benches);
