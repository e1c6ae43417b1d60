//! Which published key may verify which token: a JWK is used only for the algorithm its type,
//! curve, `alg`, `use` and `key_ops` allow (RFC 7517 §4, RFC 7518 §3, RFC 8037 §3.1), so that no
//! key is ever used with an algorithm its owner did not intend.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::AuthError;

/// Builds the verification key from a JWK, refusing a JWK whose declared `alg`, `use`,
/// `key_ops`, key type or curve does not fit the token's algorithm.
pub(crate) fn decoding_key_for(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, AuthError> {
    if let Some(key_alg) = jwk.common.key_algorithm
        && !key_algorithm_matches(key_alg, alg)
    {
        return Err(AuthError::KeyMismatch("JWK alg differs from the token's"));
    }
    if let Some(key_use) = &jwk.common.public_key_use
        && *key_use != PublicKeyUse::Signature
    {
        return Err(AuthError::KeyMismatch("JWK is not a signing key"));
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err(AuthError::KeyMismatch("JWK key_ops lacks verify"));
    }
    // An EC or OKP key's curve pins the algorithm (RFC 7518 §3.4, RFC 8037 §3.1).
    let curve_fits = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            matches!(
                (&okp.curve, alg),
                (EllipticCurve::Ed25519, Algorithm::EdDSA)
            )
        }
        // Symmetric JWKs are dropped when the set is fetched; refuse them here as well.
        AlgorithmParameters::OctetKey(_) => false,
        // RSA; anything else fails in `from_jwk` below.
        _ => true,
    };
    if !curve_fits {
        return Err(AuthError::KeyMismatch(
            "key type or curve differs from the token's",
        ));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| AuthError::KeyMismatch("unusable JWK"))?;
    if key.family() != alg.family() {
        return Err(AuthError::KeyMismatch(
            "key family differs from the token's",
        ));
    }
    Ok(key)
}

fn key_algorithm_matches(key: KeyAlgorithm, alg: Algorithm) -> bool {
    matches!(
        (key, alg),
        (KeyAlgorithm::RS256, Algorithm::RS256)
            | (KeyAlgorithm::RS384, Algorithm::RS384)
            | (KeyAlgorithm::RS512, Algorithm::RS512)
            | (KeyAlgorithm::PS256, Algorithm::PS256)
            | (KeyAlgorithm::PS384, Algorithm::PS384)
            | (KeyAlgorithm::PS512, Algorithm::PS512)
            | (KeyAlgorithm::ES256, Algorithm::ES256)
            | (KeyAlgorithm::ES384, Algorithm::ES384)
            | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn install_crypto() {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    }

    #[test]
    fn jwk_must_fit_the_token_algorithm() {
        install_crypto();
        let jwk = |v: Value| serde_json::from_value::<Jwk>(v).expect("jwk");
        let p256 = json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"});
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"});
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"});
        let rsa = json!({"kty": "RSA", "n": "AAAA", "e": "AQAB"});
        let with = |mut base: Value, extra: Value| {
            if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            base
        };
        let refused = [
            ("P-256 key for ES384", p256.clone(), Algorithm::ES384),
            ("P-384 key for ES256", p384.clone(), Algorithm::ES256),
            ("Ed25519 key for ES256", ed.clone(), Algorithm::ES256),
            ("EC key for EdDSA", p256.clone(), Algorithm::EdDSA),
            ("RSA key for ES256", rsa.clone(), Algorithm::ES256),
            ("EC key for RS256", p256.clone(), Algorithm::RS256),
            (
                "JWK alg RS256 for PS256",
                with(rsa.clone(), json!({"alg": "RS256"})),
                Algorithm::PS256,
            ),
            (
                "encryption key",
                with(rsa.clone(), json!({"use": "enc"})),
                Algorithm::RS256,
            ),
            (
                "key_ops without verify",
                with(rsa.clone(), json!({"key_ops": ["encrypt"]})),
                Algorithm::RS256,
            ),
            (
                "symmetric JWK",
                json!({"kty": "oct", "k": "c2VjcmV0"}),
                Algorithm::RS256,
            ),
        ];
        for (name, key, alg) in refused {
            assert!(
                matches!(
                    decoding_key_for(&jwk(key), alg),
                    Err(AuthError::KeyMismatch(_))
                ),
                "{name}"
            );
        }
        let accepted = [
            ("RSA key for PS384", rsa.clone(), Algorithm::PS384),
            (
                "RSA key, alg and use declared",
                with(
                    rsa,
                    json!({"alg": "RS512", "use": "sig", "key_ops": ["verify"]}),
                ),
                Algorithm::RS512,
            ),
            ("P-384 key for ES384", p384, Algorithm::ES384),
            ("Ed25519 key for EdDSA", ed, Algorithm::EdDSA),
            ("P-256 key for ES256", p256, Algorithm::ES256),
        ];
        for (name, key, alg) in accepted {
            assert!(decoding_key_for(&jwk(key), alg).is_ok(), "{name}");
        }
    }
}
