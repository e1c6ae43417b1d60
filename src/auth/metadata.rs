//! RFC 9728 OAuth 2.0 Protected Resource Metadata: how an MCP client learns which
//! authorization server to ask for a token for this proxy (spec 2025-11-25 Authorization
//! §Authorization Server Location).

use serde::Serialize;

/// The well-known path (RFC 9728 §3).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

#[derive(Debug, Serialize)]
pub struct ResourceMetadata {
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
pub fn metadata_url(public_url: &str, endpoint_path: &str) -> String {
    let (origin, prefix) = split_origin(public_url);
    format!("{origin}{WELL_KNOWN}{prefix}{endpoint_path}")
}

/// The resource identifier that the metadata at `WELL_KNOWN/{rest}` describes.
pub fn resource_for(public_url: &str, rest: &str) -> String {
    let (origin, prefix) = split_origin(public_url);
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return public_url.to_owned();
    }
    let path = format!("/{rest}");
    if !prefix.is_empty() && path.starts_with(prefix) {
        format!("{origin}{path}")
    } else {
        format!("{public_url}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
