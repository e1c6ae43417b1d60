//! The address a client used, behind a trusted reverse proxy: `X-Forwarded-Proto` and
//! `X-Forwarded-Host` replace the scheme and host of `public_url`, whose path prefix is kept
//! (DESIGN §5). Only consulted when `http.trust_forwarded_headers` is on.

use std::borrow::Cow;

use http::HeaderMap;

/// Longest forwarded host accepted (a DNS name is at most 253 bytes, plus a port).
const MAX_HOST_LEN: usize = 261;

/// `public_url` (`scheme://authority[/prefix]`, no trailing slash) with the forwarded scheme
/// and host applied. An absent or malformed header leaves that part unchanged.
pub(crate) fn public_url<'a>(public_url: &'a str, headers: &HeaderMap) -> Cow<'a, str> {
    let proto = first_value(headers, "x-forwarded-proto").and_then(scheme);
    let host = first_value(headers, "x-forwarded-host").filter(|h| is_authority(h));
    if proto.is_none() && host.is_none() {
        return Cow::Borrowed(public_url);
    }
    let (base_scheme, rest) = public_url.split_once("://").unwrap_or(("http", public_url));
    let (base_host, prefix) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    Cow::Owned(format!(
        "{}://{}{prefix}",
        proto.unwrap_or(base_scheme),
        host.unwrap_or(base_host)
    ))
}

/// The host a request was addressed to: the trusted `X-Forwarded-Host`, else `Host`.
pub(crate) fn request_host(headers: &HeaderMap, trust_forwarded: bool) -> Option<&str> {
    if trust_forwarded && let Some(h) = first_value(headers, "x-forwarded-host") {
        return Some(h);
    }
    headers
        .get(http::header::HOST)?
        .to_str()
        .ok()
        .map(str::trim)
}

/// The first element of a possibly comma-separated header (each proxy appends its own).
fn first_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

fn scheme(proto: &str) -> Option<&'static str> {
    if proto.eq_ignore_ascii_case("https") {
        Some("https")
    } else if proto.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// `host[:port]` or `[v6]:port` — nothing that could change the URL's structure.
fn is_authority(h: &str) -> bool {
    h.len() <= MAX_HOST_LEN
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn forwarded_scheme_and_host_keep_the_prefix() {
        let base = "http://10.0.0.5:8080/team";
        assert_eq!(public_url(base, &headers(&[])), base);
        assert_eq!(
            public_url(
                base,
                &headers(&[
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "mcp.example.com, inner.lb")
                ])
            ),
            "https://mcp.example.com/team"
        );
        assert_eq!(
            public_url("http://h:1", &headers(&[("x-forwarded-proto", "HTTPS")])),
            "https://h:1"
        );
        // Malformed values are ignored, never spliced into the URL.
        assert_eq!(
            public_url(
                base,
                &headers(&[
                    ("x-forwarded-proto", "javascript"),
                    ("x-forwarded-host", "evil.com/path?x=")
                ])
            ),
            base
        );
    }

    #[test]
    fn request_host_prefers_the_trusted_forwarded_host() {
        let h = headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "mcp.example.com"),
        ]);
        assert_eq!(request_host(&h, true), Some("mcp.example.com"));
        assert_eq!(request_host(&h, false), Some("10.0.0.5:8080"));
    }
}
