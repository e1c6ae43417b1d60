//! Validation: `Config::validate` and the parse errors of the `config` crate, each naming its key.

use url::Url;

use super::{
    ChildScope, Config, ConfigError, MIN_HMAC_SECRET_BYTES, RateLimits, is_hmac, parse_algorithm,
};

impl Config {
    /// Rejects values and combinations that cannot work, naming the key.
    pub fn validate(&self, env: &[(String, String)]) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if let Some(url) = &self.http.public_url {
            parse_public_url(url)?;
        }
        if self.http.max_body_bytes == 0 {
            return Err(ConfigError::new("http.max_body_bytes", "must be > 0"));
        }
        if self.http.sse_keepalive_secs == 0 {
            return Err(ConfigError::new("http.sse_keepalive_secs", "must be > 0"));
        }
        for (i, host) in self.http.allowed_hosts.iter().enumerate() {
            let ok = !host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
                });
            if !ok {
                return Err(ConfigError::new(
                    format!("http.allowed_hosts[{i}]"),
                    format!("`{host}` is not a host name like mcp.example.com or localhost:8080"),
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                format!(
                    "`{}` is not a filter like `info` or `info,access=warn`",
                    self.log.level
                ),
            ));
        }
        for (i, origin) in self.http.allowed_origins.iter().enumerate() {
            if origin != "*" && Url::parse(origin).is_err() {
                return Err(ConfigError::new(
                    format!("http.allowed_origins[{i}]"),
                    format!("`{origin}` is not an origin like https://app.example.com"),
                ));
            }
        }
        self.validate_auth(env)?;
        self.validate_sessions()?;
        self.validate_listen()?;
        self.validate_edge_limits()?;
        self.telemetry.validate()?;
        validate_limits("limits", &self.limits.rates())?;
        for (name, server) in &self.servers {
            if let Some(limits) = &server.limits {
                validate_limits(&format!("servers.{name}.limits"), limits)?;
            }
        }
        self.validate_servers()
    }

    fn validate_auth(&self, env: &[(String, String)]) -> Result<(), ConfigError> {
        if self.auth.issuers.is_empty() {
            return Err(ConfigError::new(
                "auth.issuers",
                "at least one issuer is required (the proxy never serves unauthenticated requests)",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, issuer) in self.auth.issuers.iter().enumerate() {
            let key = |k: &str| format!("auth.issuers[{i}].{k}");
            if issuer.issuer.trim().is_empty() {
                return Err(ConfigError::new(key("issuer"), "must not be empty"));
            }
            if !seen.insert(issuer.issuer.as_str()) {
                return Err(ConfigError::new(
                    key("issuer"),
                    format!("`{}` is listed twice", issuer.issuer),
                ));
            }
            if issuer.algorithms.is_empty() {
                return Err(ConfigError::new(
                    key("algorithms"),
                    "list the accepted algorithms explicitly, e.g. [\"RS256\"]",
                ));
            }
            let mut hmac = 0;
            for alg in &issuer.algorithms {
                match parse_algorithm(alg) {
                    Some(a) if is_hmac(a) => hmac += 1,
                    Some(_) => {}
                    None => {
                        return Err(ConfigError::new(
                            key("algorithms"),
                            format!(
                                "unsupported algorithm `{alg}` (supported: HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
                            ),
                        ));
                    }
                }
            }
            let jwks = issuer.discovery || issuer.jwks_url.is_some();
            if hmac > 0 && hmac != issuer.algorithms.len() {
                return Err(ConfigError::new(
                    key("algorithms"),
                    "an issuer is either HMAC (HS*) with secret_env or asymmetric with a JWKS; declare two issuers to mix",
                ));
            }
            if hmac > 0 {
                if jwks {
                    return Err(ConfigError::new(
                        key("jwks_url"),
                        "HS* algorithms take their key from secret_env, never from a JWKS",
                    ));
                }
                let Some(var) = &issuer.secret_env else {
                    return Err(ConfigError::new(
                        key("secret_env"),
                        "HS* algorithms need secret_env (the name of an environment variable holding the secret)",
                    ));
                };
                let value = env.iter().find(|(k, _)| k == var).map(|(_, v)| v);
                match value {
                    None => {
                        return Err(ConfigError::new(
                            key("secret_env"),
                            format!("environment variable `{var}` is not set"),
                        ));
                    }
                    Some(v) if v.len() < MIN_HMAC_SECRET_BYTES => {
                        return Err(ConfigError::new(
                            key("secret_env"),
                            format!(
                                "the secret in `{var}` is shorter than {MIN_HMAC_SECRET_BYTES} bytes"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            } else {
                if issuer.secret_env.is_some() {
                    return Err(ConfigError::new(
                        key("secret_env"),
                        "only HS* algorithms use a secret",
                    ));
                }
                match (&issuer.jwks_url, issuer.discovery) {
                    (Some(_), true) => {
                        return Err(ConfigError::new(
                            key("jwks_url"),
                            "set either jwks_url or discovery = true, not both",
                        ));
                    }
                    (None, false) => {
                        return Err(ConfigError::new(
                            key("jwks_url"),
                            "asymmetric algorithms need jwks_url or discovery = true",
                        ));
                    }
                    (Some(url), false) => {
                        parse_http_url(url).map_err(|m| ConfigError::new(key("jwks_url"), m))?;
                    }
                    (None, true) => {
                        parse_http_url(&issuer.issuer)
                            .map_err(|m| ConfigError::new(key("issuer"), m))?;
                    }
                }
                if issuer.jwks_refresh_secs == 0 {
                    return Err(ConfigError::new(key("jwks_refresh_secs"), "must be > 0"));
                }
            }
        }
        Ok(())
    }

    fn validate_sessions(&self) -> Result<(), ConfigError> {
        if self.sessions.max_sessions == 0 {
            return Err(ConfigError::new("sessions.max_sessions", "must be > 0"));
        }
        if self.sessions.max_sessions_per_principal == 0 {
            return Err(ConfigError::new(
                "sessions.max_sessions_per_principal",
                "must be > 0",
            ));
        }
        for (key, bytes) in [
            ("sessions.max_queued_bytes", self.sessions.max_queued_bytes),
            (
                "sessions.max_pending_bytes",
                self.sessions.max_pending_bytes,
            ),
            (
                "sessions.replay_buffer_bytes",
                self.sessions.replay_buffer_bytes,
            ),
        ] {
            if bytes == 0 {
                return Err(ConfigError::new(key, "must be > 0"));
            }
        }
        if self.sessions.idle_timeout_secs == 0 {
            return Err(ConfigError::new(
                "sessions.idle_timeout_secs",
                "must be > 0",
            ));
        }
        Ok(())
    }

    fn validate_servers(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::new(
                "servers",
                "at least one server is required, e.g. [servers.default]",
            ));
        }
        for (name, server) in &self.servers {
            let key = |k: &str| format!("servers.{name}.{k}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::new(
                    format!("servers.{name}"),
                    "server names may contain only ASCII letters, digits, '-' and '_'",
                ));
            }
            if server.command.trim().is_empty() {
                return Err(ConfigError::new(key("command"), "must not be empty"));
            }
            for k in server.env.keys().chain(server.env_from_claims.keys()) {
                if !is_env_name(k) {
                    return Err(ConfigError::new(
                        key("env"),
                        format!("`{k}` is not a valid environment variable name"),
                    ));
                }
            }
            if !server.env_from_claims.is_empty() && server.child_scope == ChildScope::Shared {
                return Err(ConfigError::new(
                    key("env_from_claims"),
                    "a shared child serves everyone: it cannot carry one caller's claims",
                ));
            }
            if server.warm_pool > 0 && !server.env_from_claims.is_empty() {
                return Err(ConfigError::new(
                    key("warm_pool"),
                    "a warm child is spawned before its caller is known: it cannot carry env_from_claims",
                ));
            }
            if server.warm_pool > 0 && server.child_scope != ChildScope::Session {
                return Err(ConfigError::new(
                    key("warm_pool"),
                    "the warm pool serves child_scope = \"session\" only",
                ));
            }
            if server.warm_pool > 64 {
                return Err(ConfigError::new(key("warm_pool"), "must be <= 64"));
            }
            if server.max_line_bytes < 1024 {
                return Err(ConfigError::new(key("max_line_bytes"), "must be >= 1024"));
            }
            if server.request_timeout_secs == 0 {
                return Err(ConfigError::new(key("request_timeout_secs"), "must be > 0"));
            }
            if let Some(sandbox) = &server.sandbox {
                super::sandbox::validate_sandbox(name, server, sandbox)?;
            }
            for (i, rule) in server.tool_rules.iter().enumerate() {
                if rule.tools.is_empty() {
                    return Err(ConfigError::new(
                        format!("servers.{name}.tool_rules[{i}].tools"),
                        "must list at least one tool name or pattern",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// TLS needs both files; the files themselves are read by `check` and at start.
    fn validate_listen(&self) -> Result<(), ConfigError> {
        let l = &self.listen;
        match (&l.tls_cert, &l.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "listen.tls_key",
                    "must be set with listen.tls_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "listen.tls_cert",
                    "must be set with listen.tls_key",
                ));
            }
            _ => {}
        }
        if l.tls_client_ca.is_some() && !l.tls() {
            return Err(ConfigError::new(
                "listen.tls_client_ca",
                "needs listen.tls_cert and listen.tls_key (client certificates are a TLS feature)",
            ));
        }
        Ok(())
    }

    fn validate_edge_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.header_read_timeout_secs",
                l.header_read_timeout_secs,
            ),
            ("limits.body_read_timeout_secs", l.body_read_timeout_secs),
            (
                "limits.idle_connection_timeout_secs",
                l.idle_connection_timeout_secs,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be > 0"));
            }
        }
        // hyper's read buffer cannot be smaller than 8 KiB; a head must fit in it.
        if !(8192..=1024 * 1024).contains(&l.max_header_bytes) {
            return Err(ConfigError::new(
                "limits.max_header_bytes",
                "must be between 8192 (the smallest read buffer) and 1048576",
            ));
        }
        Ok(())
    }
}

/// Rates are finite and not negative (0: off).
fn validate_limits(section: &str, limits: &RateLimits) -> Result<(), ConfigError> {
    for (key, rate) in [
        ("principal_rate_per_sec", limits.principal_rate_per_sec),
        ("ip_rate_per_sec", limits.ip_rate_per_sec),
    ] {
        if !rate.is_finite() || rate < 0.0 {
            return Err(ConfigError::new(
                format!("{section}.{key}"),
                "must be a number of requests per second, 0 or more (0: off)",
            ));
        }
    }
    Ok(())
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn parse_http_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` must be an http(s) URL"));
    }
    Ok(parsed)
}

/// Parses `http.public_url`: http(s), no query or fragment, trailing slash removed.
pub fn parse_public_url(url: &str) -> Result<String, ConfigError> {
    let parsed = parse_http_url(url).map_err(|m| ConfigError::new("http.public_url", m))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::new(
            "http.public_url",
            "must not have a query or fragment",
        ));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// Best effort to name the key in a serde error from the `config` crate.
pub(super) fn error_key(e: &config::ConfigError) -> String {
    let text = e.to_string();
    // The crate reports e.g. "unknown field `foo`, expected … for key `auth.issuers[0]`".
    if let Some(pos) = text.rfind("for key `") {
        let rest = &text[pos + "for key `".len()..];
        if let Some(end) = rest.find('`') {
            let parent = &rest[..end];
            if let Some(field) = backticked_after(&text, "unknown field `") {
                return format!("{parent}.{field}");
            }
            return parent.to_owned();
        }
    }
    if let Some(field) = backticked_after(&text, "unknown field `") {
        return field;
    }
    if let Some(field) = backticked_after(&text, "missing field `") {
        return field;
    }
    "(file)".to_owned()
}

fn backticked_after(text: &str, marker: &str) -> Option<String> {
    let pos = text.find(marker)?;
    let rest = &text[pos + marker.len()..];
    rest.find('`').map(|end| rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, env, load};

    #[test]
    fn broken_configs_name_their_key() {
        let cases: &[(&str, &str)] = &[
            ("[listen]\naddr = \"nonsense\"\n", "listen.addr"),
            ("[listen]\nbogus = 1\n", "bogus"),
            ("[http]\npublic_url = \"ftp://x\"\n", "http.public_url"),
            ("[sessions]\nmax_sessions = 0\n", "sessions.max_sessions"),
            ("[servers.default]\nchild_scope = \"nope\"\n", "child_scope"),
            ("[servers.default]\nera = \"2025\"\n", "era"),
        ];
        for (extra, key) in cases {
            // Put the extra section after the minimal one; duplicate tables are a TOML error,
            // so the server cases replace the minimal server.
            let text = if extra.contains("[servers.default]") {
                format!(
                    "[[auth.issuers]]\nissuer = \"dev\"\nalgorithms = [\"HS256\"]\nsecret_env = \"MCP_PROXY_JWT_SECRET\"\n{extra}command = \"true\"\n"
                )
            } else {
                format!("{extra}\n{MINIMAL}")
            };
            let err = load(&text, &env()).expect_err(extra);
            assert!(
                err.key.contains(key),
                "{extra:?}: expected key {key}, got {err}"
            );
        }
    }

    #[test]
    fn issuer_rules() {
        let cases: &[(&str, &str)] = &[
            (
                "issuer = \"a\"\nalgorithms = [\"HS256\"]\nsecret_env = \"UNSET_VAR\"",
                "secret_env",
            ),
            (
                "issuer = \"a\"\nalgorithms = [\"HS256\"]\nsecret_env = \"SHORT\"",
                "secret_env",
            ),
            ("issuer = \"a\"\nalgorithms = [\"RS256\"]", "jwks_url"),
            (
                "issuer = \"a\"\nalgorithms = [\"RS256\", \"HS256\"]\njwks_url = \"http://x/jwks\"",
                "algorithms",
            ),
            (
                "issuer = \"a\"\nalgorithms = [\"none\"]\njwks_url = \"http://x/jwks\"",
                "algorithms",
            ),
            (
                "issuer = \"a\"\nalgorithms = [\"HS256\"]\nsecret_env = \"MCP_PROXY_JWT_SECRET\"\njwks_url = \"http://x\"",
                "jwks_url",
            ),
            (
                "issuer = \"a\"\nalgorithms = []\njwks_url = \"http://x\"",
                "algorithms",
            ),
        ];
        let mut e = env();
        e.push(("SHORT".into(), "tooshort".into()));
        for (issuer, key) in cases {
            let text =
                format!("[[auth.issuers]]\n{issuer}\n[servers.default]\ncommand = \"true\"\n");
            let err = load(&text, &e).expect_err(issuer);
            assert!(err.key.ends_with(key), "{issuer:?}: got {err}");
        }
        let none = "[servers.default]\ncommand = \"true\"\n";
        assert_eq!(load(none, &e).expect_err("no issuer").key, "auth.issuers");
    }
}
