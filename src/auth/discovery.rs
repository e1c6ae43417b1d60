//! OIDC discovery: an issuer's `/.well-known/openid-configuration` names the `jwks_uri` its
//! key cache ([`super::jwks`]) fetches.

use super::fetch::fetch_bytes;
use super::jwks::JwksError;

/// GETs a JSON document with a timeout and a size limit.
pub(crate) async fn fetch_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, JwksError> {
    let (body, _) = fetch_bytes(client, url).await?;
    serde_json::from_slice(&body).map_err(|e| JwksError::Parse {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

/// OIDC discovery: `{issuer}/.well-known/openid-configuration`, whose `issuer` must equal ours
/// exactly (OpenID Connect Discovery 1.0 §4.3), gives the `jwks_uri`.
pub(crate) async fn discover_jwks_uri(
    client: &reqwest::Client,
    issuer: &str,
) -> Result<String, JwksError> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc: Discovery = fetch_json(client, &url).await?;
    if doc.issuer != issuer {
        return Err(JwksError::Discovery {
            url,
            reason: format!(
                "the document names issuer `{}`, expected exactly `{issuer}`",
                doc.issuer
            ),
        });
    }
    match jwks_uri_problem(issuer, &doc.jwks_uri) {
        None => Ok(doc.jwks_uri),
        Some(reason) => Err(JwksError::Discovery {
            url,
            reason: reason.into(),
        }),
    }
}

/// Why a discovered `jwks_uri` is unusable: not http(s), or plain http for an https issuer
/// (keys fetched in the clear would let anyone on the path sign tokens).
fn jwks_uri_problem(issuer: &str, jwks_uri: &str) -> Option<&'static str> {
    let Ok(uri) = url::Url::parse(jwks_uri) else {
        return Some("jwks_uri is not a URL");
    };
    let issuer_https = url::Url::parse(issuer).is_ok_and(|u| u.scheme() == "https");
    match uri.scheme() {
        "https" => None,
        "http" if !issuer_https => None,
        "http" => Some("jwks_uri is plain http for an https issuer"),
        _ => Some("jwks_uri is not an http(s) URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovered_jwks_uri_must_not_downgrade() {
        let ok = |iss: &str, uri: &str| jwks_uri_problem(iss, uri).is_none();
        assert!(ok("https://idp.example", "https://idp.example/jwks"));
        assert!(ok("https://idp.example", "https://keys.example/jwks"));
        assert!(ok("http://127.0.0.1:4444", "http://127.0.0.1:4444/jwks"));
        assert!(!ok("https://idp.example", "http://idp.example/jwks"));
        assert!(!ok("https://idp.example", "file:///etc/jwks.json"));
        assert!(!ok("http://127.0.0.1:4444", "/jwks"));
    }
}
