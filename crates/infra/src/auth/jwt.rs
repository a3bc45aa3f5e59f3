//! The [`TokenService`] as HS256 JWTs (RFC 7519).
//!
//! Tokens carry the user id (`sub`), login id, role, `iat`, `exp`, and a fixed
//! issuer and audience that are checked on the way in. Only HS256 is accepted:
//! a token that names another algorithm, `none` included, is refused. Expiry is
//! checked against the [`Clock`](domain::clock::Clock) port's time, with no leeway.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::identity::{AccessToken, Caller, LoginId, Role, TokenError, TokenService, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

const ISSUER: &str = "points-commerce";
const AUDIENCE: &str = "points-commerce-api";

/// An HMAC key of at least 32 bytes (RFC 7518 §3.2 asks for the hash size).
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be at least {min} bytes, got {got}")]
pub struct JwtSecretError {
    pub min: usize,
    pub got: usize,
}

impl JwtSecret {
    pub const MIN_LEN: usize = 32;

    /// # Errors
    /// [`JwtSecretError`] when the secret is shorter than 32 bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, JwtSecretError> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(JwtSecretError {
                min: Self::MIN_LEN,
                got: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }

    /// A random 64-byte secret; tokens die with the process.
    pub fn random() -> Self {
        use rand::RngExt as _;
        let mut bytes = vec![0u8; 64];
        rand::rng().fill(&mut bytes[..]);
        Self(bytes)
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(***)")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    lid: String,
    role: String,
    iat: i64,
    exp: i64,
    iss: String,
    aud: String,
}

/// Issues and verifies HS256 tokens with one shared secret, so any instance
/// accepts a token that another one issued.
pub struct JwtTokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: chrono::Duration,
}

impl fmt::Debug for JwtTokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtTokenService")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtTokenService {
    /// # Panics
    /// When `ttl` does not fit a `chrono::Duration` (hundreds of millions of years).
    pub fn new(secret: &JwtSecret, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the injected clock in `verify`.
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        Self {
            encoding: EncodingKey::from_secret(&secret.0),
            decoding: DecodingKey::from_secret(&secret.0),
            validation,
            ttl: chrono::Duration::from_std(ttl).expect("token lifetime fits chrono::Duration"),
        }
    }
}

impl TokenService for JwtTokenService {
    fn issue(&self, caller: &Caller, now: DateTime<Utc>) -> AccessToken {
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: caller.user_id.to_string(),
            lid: caller.login_id.as_str().to_owned(),
            role: caller.role.as_str().to_owned(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        // HMAC signing of a plain struct of strings and integers cannot fail.
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail");
        AccessToken {
            token,
            // Whole seconds, exactly what the `exp` claim says.
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at),
        }
    }

    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Caller, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_)
                | ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_) => TokenError::Malformed,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        if now.timestamp() >= claims.exp {
            return Err(TokenError::Expired);
        }
        let user_id = claims
            .sub
            .parse::<i64>()
            .map_err(|_| TokenError::Malformed)?;
        Ok(Caller {
            user_id: UserId::new(user_id),
            login_id: LoginId::parse(&claims.lid).map_err(|_| TokenError::Malformed)?,
            role: Role::parse(&claims.role).map_err(|_| TokenError::Malformed)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn service() -> JwtTokenService {
        let secret = JwtSecret::new(vec![7u8; 32]).expect("long enough");
        JwtTokenService::new(&secret, Duration::from_secs(3600))
    }

    fn caller() -> Caller {
        Caller {
            user_id: UserId::new(42),
            login_id: LoginId::parse("alice").expect("valid"),
            role: Role::Admin,
        }
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert_eq!(
            JwtSecret::new(vec![0u8; 31]).err(),
            Some(JwtSecretError { min: 32, got: 31 })
        );
    }

    #[test]
    fn round_trips_the_caller_until_expiry() {
        let tokens = service();
        let issued = tokens.issue(&caller(), noon());
        assert_eq!(issued.expires_at, noon() + chrono::Duration::hours(1));

        let almost = noon() + chrono::Duration::minutes(59);
        assert_eq!(tokens.verify(&issued.token, almost), Ok(caller()));
        assert_eq!(
            tokens.verify(&issued.token, issued.expires_at),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn another_secret_or_a_changed_payload_is_invalid() {
        let issued = service().issue(&caller(), noon());
        let other = JwtTokenService::new(
            &JwtSecret::new(vec![8u8; 32]).expect("long enough"),
            Duration::from_secs(3600),
        );
        assert_eq!(
            other.verify(&issued.token, noon()),
            Err(TokenError::Invalid)
        );

        let mut parts: Vec<String> = issued.token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        let tampered = parts.join(".");
        assert!(service().verify(&tampered, noon()).is_err());
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(
            service().verify("not-a-jwt", noon()),
            Err(TokenError::Malformed)
        );
    }
}
