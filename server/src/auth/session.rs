//! Session tokens (random, stored only as a hash) and the extractor that turns a request into a user.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::User;
use crate::error::Error;
use crate::AppState;

/// The cookie a browser keeps its session in (HttpOnly, SameSite=Strict).
pub const COOKIE_NAME: &str = "multichat_session";

/// A fresh session token: 256 random bits, URL-safe base64, which is also a valid WebSocket subprotocol
/// token. Only [`SessionToken::hash`] is stored.
pub struct SessionToken(pub String);

impl SessionToken {
    pub fn generate() -> SessionToken {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SessionToken(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The hex SHA-256 under which the session is stored: a leaked table gives no usable token.
    pub fn hash(token: &str) -> String {
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How a request presented its token: a browser's cookie can be ridden by another site, a token cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Cookie,
    Token,
}

/// The logged-in user behind a request, with the session it came through.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    /// The stored hash of the session's token: identifies the session without holding the secret.
    pub session: Arc<str>,
    /// When the session ends (Unix ms): a socket opened through it is closed then.
    pub expires_at: i64,
    pub credential: Credential,
}

impl CurrentUser {
    /// Fails with [`Error::Forbidden`] unless the user is an admin.
    pub fn require_admin(&self) -> Result<(), Error> {
        if self.user.is_admin {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }
}

/// The token a request carries: an `Authorization: Bearer` header first, else the session cookie.
pub fn request_token(headers: &HeaderMap) -> Option<(String, Credential)> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| (t.trim().to_owned(), Credential::Token));
    bearer.or_else(|| cookie_token(headers).map(|t| (t, Credential::Cookie)))
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

/// Looks the token up: the user must be active and the session unexpired.
pub async fn authenticate(state: &AppState, token: &str, credential: Credential) -> Result<CurrentUser, Error> {
    let hash = SessionToken::hash(token);
    let (user, expires_at) = state.db.session_user(&hash).await?.ok_or(Error::Unauthorized)?;
    Ok(CurrentUser { user, session: hash.into(), expires_at, credential })
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (token, credential) = request_token(&parts.headers).ok_or(Error::Unauthorized)?;
        authenticate(state, &token, credential).await
    }
}

/// The `Set-Cookie` value that stores `token` for `max_age_secs` (or clears it, with an empty token and 0).
pub fn cookie(token: &str, max_age_secs: u64) -> String {
    format!("{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let a = SessionToken::generate();
        let b = SessionToken::generate();
        assert_ne!(a.0, b.0);
        assert_eq!(a.0.len(), 43, "256 bits in unpadded base64");
        let hash = SessionToken::hash(&a.0);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a.0));
    }
}
