//! Bounded GETs of an identity provider's documents (discovery, JWKS): a timeout, a size
//! limit, and the freshness the response's `Cache-Control` declares.

use std::time::Duration;

use super::jwks::JwksError;

/// A JWKS or discovery document larger than this is refused (a JWKS holds a handful of keys).
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Every fetch is bounded.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// `max-age` from a `Cache-Control` header; `no-cache`/`no-store` count as zero.
fn cache_max_age(value: Option<&str>) -> Option<Duration> {
    let mut max_age = None;
    for directive in value?.split(',') {
        let directive = directive.trim();
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "no-cache" | "no-store" => return Some(Duration::ZERO),
            "max-age" => {
                if let Ok(secs) = arg.trim().trim_matches('"').parse::<u64>() {
                    max_age = Some(Duration::from_secs(secs));
                }
            }
            _ => {}
        }
    }
    max_age
}

/// GETs a document with a timeout and a size limit; returns its body and `Cache-Control` max-age.
pub(super) async fn fetch_bytes(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
    let fetch_err = |e: reqwest::Error| JwksError::Fetch {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(fetch_err)?;
    if !response.status().is_success() {
        return Err(JwksError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(JwksError::TooLarge {
            url: url.to_owned(),
        });
    }
    let max_age = cache_max_age(
        response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
    );
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_err)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge {
                url: url.to_owned(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        let s = Duration::from_secs;
        assert_eq!(cache_max_age(None), None);
        assert_eq!(cache_max_age(Some("public, max-age=300")), Some(s(300)));
        assert_eq!(
            cache_max_age(Some("Max-Age=\"60\", must-revalidate")),
            Some(s(60))
        );
        assert_eq!(cache_max_age(Some("no-cache")), Some(Duration::ZERO));
        assert_eq!(
            cache_max_age(Some("max-age=300, no-store")),
            Some(Duration::ZERO)
        );
        assert_eq!(cache_max_age(Some("max-age=soon")), None);
        assert_eq!(cache_max_age(Some("private")), None);
    }
}
