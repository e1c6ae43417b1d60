//! Environment overrides: `MCP_PROXY__SECTION__KEY` variables layered over the TOML file.

use std::collections::HashMap;

use super::{ConfigError, ENV_PREFIX};

/// Keys whose environment override is a list (comma-separated).
const LIST_KEYS: &[&str] = &[
    "http.allowed_origins",
    "http.allowed_hosts",
    "auth.audiences",
    "auth.required_scopes",
];

/// The TOML text with our prefixed environment variables layered over it, not yet deserialized.
pub(super) fn with_overrides(
    text: &str,
    env: &[(String, String)],
) -> Result<config::Config, ConfigError> {
    // Only our prefixed variables are overrides; `MCP_PROXY_JWT_SECRET` (single underscore)
    // and `MCP_PROXY_CONFIG` are not.
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .cloned()
        .collect();
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .try_parsing(true)
        .source(Some(overrides));
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(environment)
        .build()
        .map_err(|e| ConfigError::new("(file)", e.to_string()))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, env, load};

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let mut e = env();
        e.push(("MCP_PROXY__LISTEN__ADDR".into(), "127.0.0.1:9999".into()));
        e.push((
            "MCP_PROXY__SERVERS__DEFAULT__COMMAND".into(),
            "/bin/cat".into(),
        ));
        e.push((
            "MCP_PROXY__AUTH__REQUIRED_SCOPES".into(),
            "mcp:read,mcp:write".into(),
        ));
        e.push(("MCP_PROXY__SESSIONS__MAX_SESSIONS".into(), "7".into()));
        let c = load(MINIMAL, &e).expect("valid");
        assert_eq!(c.listen.addr, "127.0.0.1:9999");
        assert_eq!(c.servers["default"].command, "/bin/cat");
        assert_eq!(c.auth.required_scopes, vec!["mcp:read", "mcp:write"]);
        assert_eq!(c.sessions.max_sessions, 7);
    }
}
