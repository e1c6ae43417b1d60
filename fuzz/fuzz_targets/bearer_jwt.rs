//! A request's `Authorization` headers (one per input line) → the bearer token → what is read of
//! it before the signature check (header, unverified `iss`) → full validation against an HS256
//! issuer; and the same token re-signed with that issuer's secret, so fuzzed claims reach the
//! checks behind the signature. Never panics; an accepted token names the issuer and a subject.

#![no_main]

use std::sync::OnceLock;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcp_auth_proxy::config::Config;
use mcp_auth_proxy::fuzz::{self, Authenticator};

const ISSUER: &str = "fuzz-dev";
const SECRET: &str = "fuzz-secret-0123456789abcdef-0123456789";
const AUDIENCE: &str = "https://mcp.example.com";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        mcp_auth_proxy::install_crypto_provider();
        let env = vec![("FUZZ_SECRET".to_owned(), SECRET.to_owned())];
        let toml = format!(
            "[auth]\naudiences = [\"{AUDIENCE}\"]\n\
             [[auth.issuers]]\nissuer = \"{ISSUER}\"\nalgorithms = [\"HS256\"]\n\
             secret_env = \"FUZZ_SECRET\"\n\
             [servers.default]\ncommand = \"true\"\n"
        );
        let config = Config::parse(&toml, &env).expect("config");
        config.validate(&env).expect("valid config");
        Authenticator::new(&config, AUDIENCE, &env).expect("authenticator")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(AUTHORIZATION, value);
        }
    }
    let Ok(token) = fuzz::bearer_token(&headers) else {
        return;
    };
    assert!(!token.is_empty() && token.trim() == token);
    let _ = fuzz::unverified_parts(token);
    check(token);
    if let Some((signed, _)) = token.rsplit_once('.') {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&key, signed.as_bytes()));
        check(&format!("{signed}.{signature}"));
    }
});

fn check(token: &str) {
    if let Ok(principal) = fuzz::validate(authenticator(), token) {
        assert_eq!(&*principal.iss, ISSUER);
        assert!(!principal.sub.is_empty());
        let parts = fuzz::unverified_parts(token).expect("an accepted token's header reads");
        assert_eq!((parts.alg.as_str(), parts.iss.as_str()), ("HS256", ISSUER));
    }
}
