//! The authorization decision for one request to one server, in one place: bearer token →
//! [`Principal`] (cached validation) → audience bound to that server → the scopes it requires
//! (DESIGN §4; spec 2025-11-25 Authorization §Access Token Usage and §Token Audience Binding).

use std::collections::HashMap;

use axum::http::HeaderMap;
use serde_json::Value;

use super::{AuthError, Authenticator, Principal, bearer_token, query_has_token};
use crate::config::Config;

/// What the config says about who may reach which server, computed once at start-up so that
/// a granted request allocates nothing for it.
pub(super) struct AccessRules {
    /// The `aud` values a token may carry at all (checked with its signature).
    pub(super) audiences: Vec<String>,
    /// Set when the audiences are the defaults: each token is then also bound to a server.
    binding: Option<AudienceBinding>,
    /// Per server: the scopes every request to it needs.
    servers: HashMap<String, RequiredScopes>,
    /// For a server the config does not name: `auth.required_scopes` alone.
    global: RequiredScopes,
}

/// What the per-server audience check needs.
struct AudienceBinding {
    public_url: String,
    /// The server also mounted at the root routes (`/sse`, `/mcp`).
    root: Option<String>,
}

struct RequiredScopes {
    list: Vec<String>,
    /// `list` joined by spaces, as a challenge's `scope` parameter carries it.
    joined: String,
}

impl RequiredScopes {
    fn new(list: Vec<String>) -> Self {
        let joined = list.join(" ");
        Self { list, joined }
    }
}

impl AccessRules {
    /// The rules of `config` for a proxy reachable at `public_url` (no trailing slash).
    pub(super) fn new(config: &Config, public_url: &str) -> Self {
        let defaults = config.auth.audiences.is_empty();
        let audiences = if defaults {
            default_audiences(config, public_url)
        } else {
            config.auth.audiences.clone()
        };
        let binding = defaults.then(|| AudienceBinding {
            public_url: public_url.to_owned(),
            root: config.root_server().map(str::to_owned),
        });
        let global = &config.auth.required_scopes;
        let servers = config
            .servers
            .iter()
            .map(|(name, server)| {
                // The global scopes, then the server's own, without duplicates: a 403 names
                // all of them, so one step-up covers the endpoint.
                let mut list = global.clone();
                for scope in &server.required_scopes {
                    if !list.contains(scope) {
                        list.push(scope.clone());
                    }
                }
                (name.clone(), RequiredScopes::new(list))
            })
            .collect();
        Self {
            audiences,
            binding,
            servers,
            global: RequiredScopes::new(global.clone()),
        }
    }

    fn required(&self, server: &str) -> &RequiredScopes {
        self.servers.get(server).unwrap_or(&self.global)
    }

    /// Token audience binding per server (spec 2025-11-25 Authorization §Token Audience
    /// Binding: a token issued for another MCP server is refused). With the default audiences
    /// a token's `aud` names the whole proxy (`public_url`), accepted everywhere, or one
    /// server's endpoint (an RFC 8707 resource indicator), accepted at that server only —
    /// under any of its mount points. Explicit `auth.audiences` are the operator's choice and
    /// already checked when the token was validated.
    fn audience_fits(&self, server: &str, principal: &Principal) -> bool {
        let Some(binding) = &self.binding else {
            return true;
        };
        let is_root = binding.root.as_deref() == Some(server);
        let fits = |aud: &str| {
            let Some(rest) = aud.strip_prefix(binding.public_url.as_str()) else {
                return false;
            };
            if rest.is_empty() || rest == "/" {
                return true;
            }
            let endpoint = |e: &str| e == "/mcp" || e == "/sse";
            (is_root && endpoint(rest))
                || rest
                    .strip_prefix("/servers/")
                    .and_then(|r| r.strip_prefix(server))
                    .is_some_and(endpoint)
        };
        match principal.claims.get("aud") {
            Some(Value::String(aud)) => fits(aud),
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str().is_some_and(&fits)),
            _ => false,
        }
    }
}

/// The audiences accepted when `auth.audiences` is empty: the proxy's own resource URLs
/// (spec 2025-11-25 Authorization §Token Audience Binding), never another service's.
fn default_audiences(config: &Config, public_url: &str) -> Vec<String> {
    let mut out = vec![public_url.to_owned(), format!("{public_url}/")];
    let mut bases = Vec::new();
    if config.root_server().is_some() {
        bases.push(String::new());
    }
    bases.extend(config.servers.keys().map(|n| format!("/servers/{n}")));
    for base in bases {
        for endpoint in ["/mcp", "/sse"] {
            out.push(format!("{public_url}{base}{endpoint}"));
        }
    }
    out
}

impl Authenticator {
    /// Decides whether a request for `server` (its query string `query`) may proceed: the
    /// token only from the `Authorization` header, valid, for this server, with the global
    /// and the server's required scopes. The error says why not; answering it (and logging
    /// and counting it) is the caller's.
    pub async fn authorize(
        &self,
        server: &str,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if query_has_token(query) {
            return Err(AuthError::TokenInQuery);
        }
        let token = bearer_token(headers)?;
        let principal = self.validate_cached(token).await?;
        if !self.access.audience_fits(server, &principal) {
            return Err(AuthError::BadAudience);
        }
        principal
            .has_scopes(&self.access.required(server).list)
            .map_err(|scope| AuthError::InsufficientScope { scope })?;
        Ok(principal)
    }

    /// The scopes every request to `server` needs, space-separated (empty when none): the
    /// `scope` parameter of its 401 challenge.
    pub fn required_scope(&self, server: &str) -> &str {
        &self.access.required(server).joined
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    use crate::config::tests::{MINIMAL, SECRET, env};

    const PUBLIC_URL: &str = "https://mcp.example.com/team";

    fn authenticator(extra: &str) -> Authenticator {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let toml = format!(
            r#"{MINIMAL}
[servers.admin]
command = "true"
required_scopes = ["mcp:admin", "mcp:tools"]
{extra}
"#
        );
        let env = env();
        let config = Config::parse(&toml, &env).expect("config");
        Authenticator::new(&config, PUBLIC_URL, &env).expect("authenticator")
    }

    fn token(claims: Value) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let mut all = json!({"iss": "dev", "sub": "alice", "aud": PUBLIC_URL, "exp": now + 600});
        if let (Some(all), Some(claims)) = (all.as_object_mut(), claims.as_object()) {
            all.extend(claims.clone());
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &all,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
        h.insert(header::AUTHORIZATION, value);
        h
    }

    async fn decide(
        a: &Authenticator,
        server: &str,
        claims: Value,
    ) -> Result<Principal, &'static str> {
        a.authorize(server, &bearer(&token(claims)), None)
            .await
            .map_err(|e| e.reason())
    }

    #[tokio::test]
    async fn global_required_scope_gives_insufficient_scope() {
        let a = authenticator("[auth]\nrequired_scopes = [\"mcp:admin\"]");
        let err = decide(&a, "default", json!({"scope": "a b"})).await;
        assert_eq!(err.err(), Some("insufficient_scope"));
        assert!(
            decide(&a, "default", json!({"scp": ["mcp:admin"]}))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_server_needs_the_global_and_its_own_scopes() {
        let a = authenticator("[auth]\nrequired_scopes = [\"mcp:tools\"]");
        assert_eq!(a.required_scope("default"), "mcp:tools");
        // Global first, then the server's, each once.
        assert_eq!(a.required_scope("admin"), "mcp:tools mcp:admin");
        assert_eq!(a.required_scope("unknown"), "mcp:tools");
        let err = a
            .authorize(
                "admin",
                &bearer(&token(json!({"scope": "mcp:tools"}))),
                None,
            )
            .await
            .expect_err("no mcp:admin");
        assert!(
            matches!(&err, AuthError::InsufficientScope { scope } if scope == "mcp:tools mcp:admin"),
            "{err:?}"
        );
        let both = json!({"scope": "mcp:admin mcp:tools"});
        assert!(decide(&a, "admin", both).await.is_ok());
        assert!(
            decide(&a, "default", json!({"scope": "mcp:tools"}))
                .await
                .is_ok()
        );
        let none = authenticator("");
        assert_eq!(none.required_scope("default"), "");
    }

    #[tokio::test]
    async fn the_token_comes_from_the_header_only() {
        let a = authenticator("");
        let good = bearer(&token(json!({})));
        let err = a
            .authorize("default", &good, Some("sessionId=1&access_token=x"))
            .await
            .expect_err("query token");
        assert_eq!(err.reason(), "token_in_query");
        let err = a
            .authorize("default", &HeaderMap::new(), None)
            .await
            .expect_err("no token");
        assert_eq!(err.reason(), "missing");
        assert!(
            a.authorize("default", &good, Some("sessionId=1"))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn default_audiences_bind_a_token_to_its_server() {
        let a = authenticator("");
        let u = PUBLIC_URL;
        let cases = [
            (json!(u), "default", true),
            (json!(format!("{u}/")), "admin", true),
            // The root routes are the `default` server's.
            (json!(format!("{u}/mcp")), "default", true),
            (json!(format!("{u}/sse")), "admin", false),
            (json!(format!("{u}/servers/admin/mcp")), "admin", true),
            (json!(format!("{u}/servers/admin/sse")), "default", false),
            (json!(format!("{u}/servers/default/sse")), "default", true),
            (
                json!(["http://other", format!("{u}/servers/admin/mcp")]),
                "admin",
                true,
            ),
            (
                json!(["http://other", format!("{u}/servers/admin/mcp")]),
                "default",
                false,
            ),
        ];
        for (aud, server, ok) in cases {
            let claims = json!({ "aud": aud, "scope": "mcp:admin mcp:tools" });
            let got = decide(&a, server, claims).await;
            let want = if ok { Ok(()) } else { Err("audience") };
            assert_eq!(got.map(|_| ()), want, "aud {aud} at {server}");
        }
        // Not one of the proxy's own URLs: refused when the token is validated.
        let got = decide(&a, "default", json!({"aud": "http://elsewhere"})).await;
        assert_eq!(got.err(), Some("audience"));
    }

    #[tokio::test]
    async fn explicit_audiences_are_not_bound_to_a_server() {
        let a = authenticator("[auth]\naudiences = [\"api://mcp\"]");
        assert!(
            decide(
                &a,
                "admin",
                json!({"aud": "api://mcp", "scope": "mcp:admin mcp:tools"})
            )
            .await
            .is_ok()
        );
        let got = decide(&a, "default", json!({ "aud": PUBLIC_URL })).await;
        assert_eq!(got.err(), Some("audience"));
    }
}
