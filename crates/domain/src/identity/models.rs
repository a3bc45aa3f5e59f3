//! Value types of the identity context. Each one is valid by construction:
//! a `LoginId` that exists has passed `LoginId::parse`.

use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

/// Database id of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(i64);

impl UserId {
    pub const fn new(raw: i64) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user's login name: 3..=64 characters of `[A-Za-z0-9_.-]`, compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginId(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be 3 to 64 characters of letters, digits, '_', '.' or '-'")]
pub struct InvalidLoginId;

impl LoginId {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// [`InvalidLoginId`] when the length or an character is out of range.
    pub fn parse(raw: &str) -> Result<Self, InvalidLoginId> {
        let ok_len = (Self::MIN_LEN..=Self::MAX_LEN).contains(&raw.len());
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok_len && ok_chars {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidLoginId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LoginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plaintext password on its way to the hasher: 8..=128 characters.
/// Its `Debug` never shows the secret, so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be 8 to 128 characters")]
pub struct InvalidPassword;

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    /// # Errors
    /// [`InvalidPassword`] when it has fewer than 8 or more than 128 characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidPassword> {
        let chars = raw.chars().count();
        if (Self::MIN_CHARS..=Self::MAX_CHARS).contains(&chars) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPassword)
        }
    }

    /// The secret itself, for the hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A password hash in PHC string format (`$argon2id$v=19$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by a [`PasswordHasher`](super::PasswordHasher)
    /// or read back from storage.
    pub fn from_phc(phc: String) -> Self {
        Self(phc)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(***)")
    }
}

/// A display name: 1..=100 characters, trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be 1 to 100 characters without control characters")]
pub struct InvalidUserName;

impl UserName {
    pub const MAX_CHARS: usize = 100;

    /// # Errors
    /// [`InvalidUserName`] when empty after trimming, too long, or holding control characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidUserName> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS || trimmed.chars().any(char::is_control) {
            return Err(InvalidUserName);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The default name of a user who gave none: their login id.
    pub fn from_login_id(login_id: &LoginId) -> Self {
        Self(login_id.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a user may do. Admins manage the catalogue, campaigns and products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Admin,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown role {0:?}")]
pub struct UnknownRole(pub String);

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Admin => "ADMIN",
        }
    }

    /// # Errors
    /// [`UnknownRole`] for anything but `USER` and `ADMIN`.
    pub fn parse(raw: &str) -> Result<Self, UnknownRole> {
        match raw {
            "USER" => Ok(Self::User),
            "ADMIN" => Ok(Self::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// A stored user, without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub login_id: LoginId,
    pub name: UserName,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A user with the hash to check a password against. Gateway-provisioned users
/// have no password and can only come in through the gateway.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: Option<PasswordHash>,
}

/// A user about to be stored.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub login_id: LoginId,
    pub name: UserName,
    pub password_hash: Option<PasswordHash>,
    pub role: Role,
}

/// The authenticated caller of a request, as proven by a token or the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub login_id: LoginId,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl From<&User> for Caller {
    fn from(user: &User) -> Self {
        Self {
            user_id: user.id,
            login_id: user.login_id.clone(),
            role: user.role,
        }
    }
}

/// A signed access token and the instant it stops being accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_id_accepts_the_documented_alphabet_and_lengths() {
        assert!(LoginId::parse("abc").is_ok());
        assert!(LoginId::parse("A.b_c-9").is_ok());
        assert!(LoginId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(LoginId::parse("ab"), Err(InvalidLoginId));
        assert_eq!(LoginId::parse(&"x".repeat(65)), Err(InvalidLoginId));
        assert_eq!(LoginId::parse("has space"), Err(InvalidLoginId));
        assert_eq!(LoginId::parse("ünï"), Err(InvalidLoginId));
        assert_eq!(LoginId::parse("a/b"), Err(InvalidLoginId));
    }

    #[test]
    fn password_length_counts_characters_not_bytes() {
        assert!(Password::parse("12345678").is_ok());
        assert_eq!(Password::parse("1234567"), Err(InvalidPassword));
        // 128 three-byte characters are 384 bytes but still 128 characters.
        assert!(Password::parse(&"가".repeat(128)).is_ok());
        assert_eq!(Password::parse(&"a".repeat(129)), Err(InvalidPassword));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let pw = Password::parse("hunter2hunter2").expect("valid");
        assert!(!format!("{pw:?}").contains("hunter2"));
        let hash = PasswordHash::from_phc("$argon2id$secret".into());
        assert!(!format!("{hash:?}").contains("secret"));
        let token = AccessToken {
            token: "eyJsecret".into(),
            expires_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        assert!(!format!("{token:?}").contains("eyJ"));
    }

    #[test]
    fn user_name_is_trimmed_and_bounded() {
        assert_eq!(
            UserName::parse("  Kim  ").map(|n| n.as_str().to_owned()),
            Ok("Kim".into())
        );
        assert_eq!(UserName::parse("   "), Err(InvalidUserName));
        assert_eq!(UserName::parse("a\u{0}b"), Err(InvalidUserName));
        assert_eq!(UserName::parse(&"n".repeat(101)), Err(InvalidUserName));
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::User, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("root").is_err());
    }
}
