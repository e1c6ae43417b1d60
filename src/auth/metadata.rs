//! RFC 9728 OAuth 2.0 Protected Resource Metadata: how an MCP client learns which
//! authorization server to ask for a token for this proxy (spec 2025-11-25 Authorization
//! §Authorization Server Location).

use serde::Serialize;

use crate::config::Config;

/// The well-known path (RFC 9728 §3).
pub(crate) const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

#[derive(Debug, Serialize)]
pub(crate) struct ResourceMetadata {
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub bearer_methods_supported: Vec<&'static str>,
    pub resource_name: &'static str,
}

/// Splits `https://host:port/prefix` into (`https://host:port`, `/prefix`).
fn split_origin(public_url: &str) -> (&str, &str) {
    let after_scheme = public_url.find("://").map_or(0, |i| i + 3);
    match public_url[after_scheme..].find('/') {
        Some(i) => public_url.split_at(after_scheme + i),
        None => (public_url, ""),
    }
}

/// The metadata URL for a resource: the well-known path inserted between host and path
/// (RFC 9728 §3.1), e.g. `https://h/prefix/mcp` → `https://h/.well-known/oauth-protected-resource/prefix/mcp`.
pub(crate) fn metadata_url(public_url: &str, endpoint_path: &str) -> String {
    let (origin, prefix) = split_origin(public_url);
    format!("{origin}{WELL_KNOWN}{prefix}{endpoint_path}")
}

/// The endpoint (a path relative to `public_url`: `""`, `/mcp`, `/servers/NAME/sse`, …) whose
/// metadata lives at `WELL_KNOWN/{rest}`. The well-known path carries the public URL's path
/// prefix (RFC 9728 §3.1); a request without it is accepted too, for proxies that strip it.
pub(crate) fn endpoint_for(public_url: &str, rest: &str) -> String {
    let (_, prefix) = split_origin(public_url);
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return String::new();
    }
    let path = format!("/{rest}");
    if prefix.is_empty() {
        return path;
    }
    if path == prefix {
        return String::new();
    }
    match path.strip_prefix(prefix) {
        Some(tail) if tail.starts_with('/') => tail.to_owned(),
        _ => path,
    }
}

/// The resource identifier that the metadata at `WELL_KNOWN/{rest}` describes: exactly the
/// public URL of that endpoint.
#[cfg(test)]
fn resource_for(public_url: &str, rest: &str) -> String {
    format!("{public_url}{}", endpoint_for(public_url, rest))
}

/// The metadata document for `endpoint` (see [`endpoint_for`]), or `None` when it is not one
/// of ours: the root document, and `/sse` and `/mcp` of every mounted server. Its scopes are
/// those the endpoint understands: `auth.required_scopes`, the server's `required_scopes` and
/// its tool rules' scopes (for the root document, every server's). `resource` is the endpoint
/// under `public_url`; `authorization_servers` is listed as given.
pub(crate) fn document(
    config: &Config,
    public_url: &str,
    authorization_servers: &[String],
    endpoint: &str,
) -> Option<ResourceMetadata> {
    let mut servers: Vec<&str> = Vec::new();
    if endpoint.is_empty() {
        servers.extend(config.servers.keys().map(String::as_str));
    } else {
        let (base, leaf) = endpoint.rsplit_once('/')?;
        if !matches!(leaf, "sse" | "mcp") {
            return None;
        }
        let server = match base.strip_prefix("/servers/") {
            Some(name) => config.servers.contains_key(name).then_some(name),
            None if base.is_empty() => config.root_server(),
            None => None,
        }?;
        servers.push(server);
    }
    let mut scopes: Vec<String> = config.auth.required_scopes.clone();
    for name in servers {
        if let Some(server) = config.servers.get(name) {
            scopes.extend(server.required_scopes.iter().cloned());
            for rule in &server.tool_rules {
                scopes.extend(rule.require_scopes.iter().cloned());
            }
        }
    }
    scopes.sort();
    scopes.dedup();
    Some(ResourceMetadata {
        resource: format!("{public_url}{endpoint}"),
        authorization_servers: authorization_servers.to_vec(),
        scopes_supported: scopes,
        bearer_methods_supported: vec!["header"],
        resource_name: "mcp-auth-proxy",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_need_no_running_proxy() {
        let toml = format!(
            r#"[auth]
required_scopes = ["mcp:tools"]
{}
[servers.admin]
command = "true"
required_scopes = ["mcp:admin"]
[[servers.admin.tool_rules]]
tools = ["delete_*"]
require_scopes = ["mcp:danger"]
"#,
            crate::config::tests::MINIMAL
        );
        let config = Config::parse(&toml, &[]).expect("config");
        let idps = vec![
            "https://b.example".to_owned(),
            "https://a.example".to_owned(),
        ];
        let doc = |endpoint: &str| document(&config, "https://h/team", &idps, endpoint);
        let root = doc("").expect("root document");
        assert_eq!(root.resource, "https://h/team");
        assert_eq!(root.authorization_servers, idps, "listed as given");
        assert_eq!(
            root.scopes_supported,
            ["mcp:admin", "mcp:danger", "mcp:tools"]
        );
        let sse = doc("/sse").expect("root server's /sse");
        assert_eq!(sse.resource, "https://h/team/sse");
        assert_eq!(sse.scopes_supported, ["mcp:tools"]);
        let admin = doc("/servers/admin/mcp").expect("admin's /mcp");
        assert_eq!(
            admin.scopes_supported,
            ["mcp:admin", "mcp:danger", "mcp:tools"]
        );
        for other in [
            "/message",
            "/servers/nope/mcp",
            "/servers/admin",
            "/sse/extra",
        ] {
            assert!(doc(other).is_none(), "{other}");
        }
    }

    #[test]
    fn path_insertion() {
        assert_eq!(
            metadata_url("https://h", "/mcp"),
            "https://h/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://h:8443/team", "/servers/gh/mcp"),
            "https://h:8443/.well-known/oauth-protected-resource/team/servers/gh/mcp"
        );
        assert_eq!(resource_for("https://h", "mcp"), "https://h/mcp");
        assert_eq!(
            resource_for("https://h/team", "team/mcp"),
            "https://h/team/mcp"
        );
        assert_eq!(resource_for("https://h/team", ""), "https://h/team");
        assert_eq!(resource_for("https://h/team", "team"), "https://h/team");
        assert_eq!(resource_for("https://h/team", "mcp"), "https://h/team/mcp");
        assert_eq!(
            resource_for("https://h/team", "teamster/mcp"),
            "https://h/team/teamster/mcp"
        );
        assert_eq!(
            endpoint_for("https://h/team", "team/servers/a/sse"),
            "/servers/a/sse"
        );
    }
}
