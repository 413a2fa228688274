//! Logging in and out, and the first-run setup that creates the first admin from the browser.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::UserView;
use crate::auth::password::MAX_PASSWORD_BYTES;
use crate::auth::session::{cookie, SessionToken};
use crate::auth::CurrentUser;
use crate::db::{now_ms, NewUser, User};
use crate::error::Error;
use crate::{client_addr, username, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/setup", post(setup).get(setup_needed))
}

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

/// `POST /api/login`: the session token in the body (for native clients) and in an HttpOnly cookie.
/// Wrong credentials get one generic 401 whether or not the user exists, after the same work.
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(creds): Json<Credentials>,
) -> Result<Response, Error> {
    let addr = Some(client_addr::client_ip(peer, &headers, &state.config.trusted_proxies));
    // No account has a longer name or password, so these cannot match; refusing them here keeps
    // megabyte-long names out of the throttle's table.
    if creds.username.len() > 4 * username::MAX_LEN || creds.password.len() > MAX_PASSWORD_BYTES {
        state.throttle.attempt("", addr)?;
        return Err(Error::InvalidCredentials);
    }
    let key = username::fold(&creds.username);
    state.throttle.attempt(&key, addr)?;
    match judge(&state, &key, &creds.password).await {
        Ok(Some(user)) => {
            state.throttle.succeeded(&key, addr);
            start_session(&state, &user, StatusCode::OK).await
        }
        // The attempt was counted as failed when it started.
        Ok(None) => Err(Error::InvalidCredentials),
        Err(server_failed) => {
            state.throttle.not_judged(&key, addr);
            Err(server_failed)
        }
    }
}

/// The active user whose name folds to `key` if `password` is theirs; the same argon2 work either way.
async fn judge(state: &AppState, key: &str, password: &str) -> Result<Option<User>, Error> {
    let found = state.db.user_with_hash(key).await?;
    let hash = found.as_ref().map(|(_, hash)| hash.as_str());
    let password_ok = state.passwords.verify(password, hash).await?;
    Ok(found.map(|(user, _)| user).filter(|user| password_ok && user.is_active))
}

/// Creates a session for `user` and answers with its token and cookie.
async fn start_session(state: &AppState, user: &User, status: StatusCode) -> Result<Response, Error> {
    let token = SessionToken::generate();
    let ttl = state.config.session_ttl;
    state.db.create_session(&SessionToken::hash(&token.0), user.id, now_ms() + ttl.as_millis() as i64).await?;
    let mut set_cookie = cookie(&token.0, ttl.as_secs());
    if state.config.secure_cookies {
        set_cookie.push_str("; Secure");
    }
    let body = Json(serde_json::json!({ "token": token.0, "user": UserView::from(user) }));
    Ok((status, [(SET_COOKIE, set_cookie)], body).into_response())
}

/// `POST /api/logout`: ends this session and closes its sockets (the user's other sessions stay).
async fn logout(State(state): State<AppState>, who: CurrentUser) -> Result<Response, Error> {
    state.db.delete_session(&who.session).await?;
    state.hub.close_session(&who.session);
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, cookie("", 0))]).into_response())
}

/// `GET /api/setup`: whether the first-run setup is still open.
async fn setup_needed(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Error> {
    Ok(Json(serde_json::json!({ "needed": state.db.count_users().await? == 0 })))
}

/// `POST /api/setup`: while no account exists, creates the first admin (staff too) and logs them in;
/// closed for good once any account exists.
async fn setup(State(state): State<AppState>, Json(creds): Json<Credentials>) -> Result<Response, Error> {
    if state.db.count_users().await? > 0 {
        return Err(Error::SetupClosed);
    }
    let name = username::validate(&creds.username)?;
    let hash = state.passwords.hash(&creds.password).await?;
    let new = NewUser {
        username: name,
        username_key: &username::fold(name),
        password_hash: &hash,
        is_staff: true,
        is_admin: true,
    };
    let user = state.db.create_first_user(new).await?.ok_or(Error::SetupClosed)?;
    tracing::info!(username = %user.username, "first-run setup created the first admin");
    start_session(&state, &user, StatusCode::CREATED).await
}
