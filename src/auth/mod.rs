//! Authentication: the bearer token of every request becomes a [`Principal`] or an [`AuthError`]
//! (DESIGN §4; spec 2025-11-25 "Authorization" §Access Token Usage and §Token Audience Binding).

pub(crate) mod authorize;
pub(crate) mod cache;
pub(crate) mod discovery;
pub(crate) mod fetch;
pub(crate) mod issuers;
pub(crate) mod jwk;
pub(crate) mod jwks;
pub(crate) mod jwt;
pub(crate) mod metadata;

use std::fmt;

use axum::http::{HeaderMap, header};

use crate::error::Challenge;

pub use jwt::Authenticator;

/// Who made a request: the token's `(iss, sub)`, its scopes and its claims.
#[derive(Clone)]
pub struct Principal {
    /// Shared, as the scopes: a principal is cloned out of the token cache on every request
    /// and its identity into keys, spans and audit lines — each a reference count, not a copy.
    pub iss: std::sync::Arc<str>,
    pub sub: std::sync::Arc<str>,
    pub scopes: std::sync::Arc<[String]>,
    /// `exp` as seconds since the epoch.
    pub exp: u64,
    /// Shared: a principal is cloned out of the token cache on every request, the claims
    /// are read only when a child is spawned (`env_from_claims`).
    pub claims: std::sync::Arc<serde_json::Map<String, serde_json::Value>>,
}

impl Principal {
    /// The identity that owns sessions and children.
    pub fn key(&self) -> PrincipalKey {
        PrincipalKey {
            iss: self.iss.clone(),
            sub: self.sub.clone(),
        }
    }

    pub fn has_scopes(&self, required: &[String]) -> Result<(), String> {
        let missing: Vec<&str> = required
            .iter()
            .filter(|s| !self.scopes.iter().any(|have| have == *s))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(required.join(" "))
        }
    }
}

// Claims can hold personal data: keep them out of Debug output.
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The owner of a session: issuer and subject together (a `sub` is only unique per issuer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalKey {
    pub iss: std::sync::Arc<str>,
    pub sub: std::sync::Arc<str>,
}

/// Why a request was not authenticated. The client sees only the category; detail goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token passed in the query string")]
    TokenInQuery,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token issuer is not configured")]
    UnknownIssuer,
    #[error("algorithm {0} is not allowed for this issuer")]
    AlgorithmNotAllowed(String),
    #[error("no key with this kid")]
    UnknownKey,
    #[error("key does not match the token's algorithm: {0}")]
    KeyMismatch(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("bad signature")]
    BadSignature,
    #[error("token is for another audience")]
    BadAudience,
    #[error("token issuer mismatch")]
    BadIssuer,
    #[error("required claim missing: {0}")]
    MissingClaim(String),
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("insufficient scope")]
    InsufficientScope { scope: String },
}

impl AuthError {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::TokenInQuery => "token_in_query",
            AuthError::Malformed(_) => "malformed",
            AuthError::UnknownIssuer => "unknown_issuer",
            AuthError::AlgorithmNotAllowed(_) => "algorithm",
            AuthError::UnknownKey => "unknown_kid",
            AuthError::KeyMismatch(_) => "key_mismatch",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "signature",
            AuthError::BadAudience => "audience",
            AuthError::BadIssuer => "issuer",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::Invalid(_) => "invalid",
            AuthError::InsufficientScope { .. } => "insufficient_scope",
        }
    }

    /// The challenge that answers this refusal: 401 with `WWW-Authenticate` (also for a token
    /// in the query string: the client must authenticate again, with the header), or 403 for
    /// a missing scope. `resource_metadata` is the RFC 9728 URL for the requested endpoint; a
    /// 401 also names `required_scope`, the scopes the endpoint requires (spec 2025-11-25
    /// Authorization §Protected Resource Metadata Discovery Requirements: "SHOULD include a
    /// scope parameter"), when there are any.
    pub(crate) fn challenge(self, resource_metadata: String, required_scope: &str) -> Challenge {
        let reason = self.reason();
        let (error, header_description, description) = match &self {
            AuthError::Missing => (None, None, "a bearer token is required"),
            AuthError::TokenInQuery => (
                Some("invalid_request"),
                None,
                "tokens are accepted only in the Authorization header",
            ),
            AuthError::InsufficientScope { .. } => (
                Some("insufficient_scope"),
                None,
                "the token lacks a required scope",
            ),
            AuthError::Expired => (
                Some("invalid_token"),
                Some("token expired"),
                "token expired",
            ),
            _ => (
                Some("invalid_token"),
                None,
                "the token is not valid for this resource",
            ),
        };
        let (forbidden, scope) = match self {
            AuthError::InsufficientScope { scope } => (true, scope),
            _ => (false, required_scope.to_owned()),
        };
        Challenge {
            reason,
            forbidden,
            error,
            header_description,
            description,
            scope,
            resource_metadata,
        }
    }
}

/// Upper bound on a bearer token; real access tokens are a few KiB.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The bearer token of a request: exactly one `Authorization: Bearer …` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed("several Authorization headers"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("non-ASCII Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Malformed("not a Bearer authorization"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("not a Bearer authorization"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("token too large"));
    }
    Ok(token)
}

/// True when the query string carries a token (`access_token=`), which we refuse
/// (spec 2025-11-25 Authorization §Access Token Usage: "MUST NOT be included in the URI query string").
pub(crate) fn query_has_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer_token(&h), Err(AuthError::Missing)));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer_token(&h), Err(AuthError::Malformed(_))));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&h).ok(), Some("abc"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(matches!(bearer_token(&h), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn query_tokens_are_detected() {
        assert!(query_has_token(Some("sessionId=1&access_token=x")));
        assert!(!query_has_token(Some("sessionId=1")));
        assert!(!query_has_token(None));
    }

    /// The header as a client sees it, for each kind of refusal.
    fn www(e: AuthError, scope: &str) -> (u16, String) {
        let meta = "http://x/.well-known/oauth-protected-resource/sse".to_owned();
        crate::error::www(e.challenge(meta, scope))
    }

    #[test]
    fn unauthorized_challenges_name_the_required_scopes() {
        assert_eq!(
            www(AuthError::Missing, "mcp:tools"),
            (401, "Bearer scope=\"mcp:tools\", resource_metadata=\"http://x/.well-known/oauth-protected-resource/sse\"".into())
        );
        assert_eq!(
            www(AuthError::BadAudience, ""),
            (401, "Bearer error=\"invalid_token\", resource_metadata=\"http://x/.well-known/oauth-protected-resource/sse\"".into())
        );
        assert_eq!(
            www(AuthError::UnknownKey, "a b"),
            (401, "Bearer error=\"invalid_token\", scope=\"a b\", resource_metadata=\"http://x/.well-known/oauth-protected-resource/sse\"".into())
        );
    }

    #[test]
    fn challenge_never_carries_the_error_detail_or_token() {
        let (status, h) = www(
            AuthError::InsufficientScope {
                scope: "mcp:admin".into(),
            },
            "",
        );
        assert_eq!(status, 403);
        assert_eq!(
            h,
            "Bearer error=\"insufficient_scope\", scope=\"mcp:admin\", resource_metadata=\"http://x/.well-known/oauth-protected-resource/sse\""
        );
    }
}
