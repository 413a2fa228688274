//! `/api/me`: who am I, and changing one's own password.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::UserView;
use crate::auth::CurrentUser;
use crate::db::UserPatch;
use crate::error::Error;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/me", get(me)).route("/api/me/password", post(change_password))
}

async fn me(who: CurrentUser) -> Json<serde_json::Value> {
    Json(serde_json::json!(UserView::from(&who.user)))
}

#[derive(Deserialize)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

/// `POST /api/me/password`: needs the old password; ends the user's other sessions (and their sockets),
/// keeping this one.
async fn change_password(
    State(state): State<AppState>,
    who: CurrentUser,
    Json(change): Json<PasswordChange>,
) -> Result<StatusCode, Error> {
    let current = state.db.password_hash(who.user.id).await?;
    if !state.passwords.verify(&change.old_password, current.as_deref()).await? {
        return Err(Error::InvalidCredentials);
    }
    let hash = state.passwords.hash(&change.new_password).await?;
    state.db.update_user(who.user.id, &UserPatch { password_hash: Some(hash), ..UserPatch::default() }).await?;
    state.db.delete_user_sessions(who.user.id, Some(&who.session)).await?;
    state.hub.close_other_sessions(who.user.id, &who.session);
    Ok(StatusCode::NO_CONTENT)
}
