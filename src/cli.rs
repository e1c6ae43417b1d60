//! The `check` and `token` subcommands: what a config would serve, and development tokens
//! signed with a configured HS issuer's secret (DESIGN §7).

use std::process::ExitCode;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_auth_proxy::config::{Config, is_hmac, parse_algorithm};
use serde_json::{Map, Value};

/// What this host can contain (Landlock, cgroups, user namespaces).
pub(crate) fn print_host() {
    let host = mcp_auth_proxy::host_support();
    println!("host: Landlock {}", host.landlock);
    println!("host: cgroups {}", host.cgroups);
    println!(
        "host: user namespaces {}",
        if host.user_namespaces {
            "available"
        } else {
            "unavailable"
        }
    );
}

/// `check`: the config is valid (it was loaded); print what it would serve, what the host can
/// contain and how each sandboxed server's children will be contained.
pub(crate) fn check(config: &Config, sandboxes: &[(String, String)]) -> ExitCode {
    println!("config OK");
    println!("listen: {}", config.listen.addr);
    let public = config
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| config.default_public_url(&config.listen.addr));
    println!("public_url: {public}");
    if let (Some(cert), Some(key)) = (&config.listen.tls_cert, &config.listen.tls_key) {
        let mtls = match &config.listen.tls_client_ca {
            Some(ca) => format!("; client certificates required, signed by {}", ca.display()),
            None => String::new(),
        };
        println!(
            "tls: {} with {} (TLS 1.2, 1.3{}){mtls}",
            cert.display(),
            key.display(),
            if config.listen.http2 {
                "; h2, http/1.1"
            } else {
                "; http/1.1"
            }
        );
    }
    for issuer in &config.auth.issuers {
        let source = if let Some(var) = &issuer.secret_env {
            format!("secret from ${var}")
        } else if issuer.discovery {
            "OIDC discovery".to_owned()
        } else {
            format!("JWKS {}", issuer.jwks_url.as_deref().unwrap_or("?"))
        };
        println!(
            "issuer: {} [{}] ({source})",
            issuer.issuer,
            issuer.algorithms.join(", ")
        );
    }
    if config.telemetry.enabled() {
        println!(
            "telemetry: OTLP/HTTP traces to {} as {} (sample ratio {}, parent-based)",
            config.telemetry.traces_url(),
            config.telemetry.service_name,
            config.telemetry.sample_ratio
        );
    }
    let root = config.root_server();
    for (name, server) in &config.servers {
        let mut routes = format!("/servers/{name}/{{sse,message,mcp}}");
        if root == Some(name.as_str()) {
            routes = format!("/sse, /message, /mcp, {routes}");
        }
        println!(
            "server {name}: {} {} (child_scope = {:?}) at {routes}",
            server.command,
            server.args.join(" "),
            server.child_scope
        );
    }
    print_host();
    for (name, applied) in sandboxes {
        println!("server {name}: sandbox can be applied: {applied}");
    }
    ExitCode::SUCCESS
}

/// `token`: print a token from the HS issuer `issuer` (default: the first), or exit 64 when
/// the config has none.
pub(crate) fn token(
    config: &Config,
    sub: &str,
    scope: Option<String>,
    ttl: u64,
    issuer: Option<String>,
    aud: Option<String>,
) -> ExitCode {
    mcp_auth_proxy::install_crypto_provider();
    let hs =
        config.auth.issuers.iter().find(|i| {
            i.secret_env.is_some() && issuer.as_ref().is_none_or(|want| *want == i.issuer)
        });
    let Some(hs) = hs else {
        eprintln!(
            "mcp-auth-proxy: no HS issuer{} in the config",
            issuer.map(|i| format!(" `{i}`")).unwrap_or_default()
        );
        return ExitCode::from(crate::EXIT_CONFIG);
    };
    let Some(alg) = hs
        .algorithms
        .iter()
        .filter_map(|a| parse_algorithm(a))
        .find(|a| is_hmac(*a))
    else {
        eprintln!("mcp-auth-proxy: issuer `{}` has no HS algorithm", hs.issuer);
        return ExitCode::from(crate::EXIT_CONFIG);
    };
    let secret = hs
        .secret_env
        .as_ref()
        .and_then(|var| std::env::var(var).ok())
        .unwrap_or_default();
    let aud = aud.unwrap_or_else(|| {
        config
            .auth
            .audiences
            .first()
            .cloned()
            .or_else(|| {
                config
                    .http
                    .public_url
                    .clone()
                    .map(|u| u.trim_end_matches('/').to_owned())
            })
            .unwrap_or_else(|| config.default_public_url(&config.listen.addr))
    });
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = Map::new();
    claims.insert("iss".into(), hs.issuer.clone().into());
    claims.insert("sub".into(), sub.into());
    claims.insert("aud".into(), aud.into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + ttl).into());
    if let Some(scope) = scope {
        claims.insert("scope".into(), scope.into());
    }
    match mint_hmac_token(secret.as_bytes(), alg, &claims) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-auth-proxy: signing failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Signs an HMAC token. Only the binary signs: the proxy itself never issues tokens.
fn mint_hmac_token(
    secret: &[u8],
    alg: Algorithm,
    claims: &Map<String, Value>,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret))
}
