//! `/api/admin/users`: admins create accounts, set their rights, reset passwords, deactivate and delete.
//! Every change reaches the user's open sockets at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::accounts::{self, Rights};
use crate::auth::CurrentUser;
use crate::db::{User, UserPatch};
use crate::error::Error;
use crate::hub::CloseReason;
use crate::protocol::Event;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/users", get(list).post(create))
        .route("/api/admin/users/{id}", get(show).patch(update).delete(remove))
}

#[derive(Deserialize)]
struct NewAccount {
    username: String,
    password: String,
    #[serde(default)]
    is_staff: bool,
    #[serde(default)]
    is_admin: bool,
}

#[derive(Deserialize)]
struct AccountChange {
    is_staff: Option<bool>,
    is_admin: Option<bool>,
    is_active: Option<bool>,
    /// A new password (a reset): ends all the user's sessions.
    password: Option<String>,
}

async fn list(State(state): State<AppState>, who: CurrentUser) -> Result<Json<Vec<User>>, Error> {
    who.require_admin()?;
    Ok(Json(state.db.list_users().await?))
}

async fn show(State(state): State<AppState>, who: CurrentUser, Path(id): Path<i64>) -> Result<Json<User>, Error> {
    who.require_admin()?;
    Ok(Json(state.db.user(id).await?.ok_or(Error::NotFound)?))
}

async fn create(
    State(state): State<AppState>,
    who: CurrentUser,
    Json(new): Json<NewAccount>,
) -> Result<(StatusCode, Json<User>), Error> {
    who.require_admin()?;
    let rights = Rights { is_staff: new.is_staff, is_admin: new.is_admin };
    let user = accounts::create(&state.db, &state.passwords, &new.username, &new.password, rights).await?;
    tracing::info!(user = %user.username, admin = %who.user.username, "account created");
    Ok((StatusCode::CREATED, Json(user)))
}

async fn update(
    State(state): State<AppState>,
    who: CurrentUser,
    Path(id): Path<i64>,
    Json(change): Json<AccountChange>,
) -> Result<Json<User>, Error> {
    who.require_admin()?;
    let password_hash = match &change.password {
        Some(password) => Some(state.passwords.hash(password).await?),
        None => None,
    };
    let reset = password_hash.is_some();
    let patch =
        UserPatch { is_staff: change.is_staff, is_admin: change.is_admin, is_active: change.is_active, password_hash };
    let user = state.db.update_user(id, &patch).await?;
    if reset || !user.is_active {
        state.db.delete_user_sessions(id, None).await?;
        state.hub.close_user(id, CloseReason::AccountChanged);
    } else {
        state.hub.user_changed(&user);
        // Staff rights decide which rooms the user sees.
        state.hub.tell_user(user.id, &Event::rooms_changed());
    }
    tracing::info!(user = %user.username, admin = %who.user.username, "account changed");
    Ok(Json(user))
}

/// Deletes an account; what they wrote stays, under their name. Deactivating is the gentler choice.
async fn remove(State(state): State<AppState>, who: CurrentUser, Path(id): Path<i64>) -> Result<StatusCode, Error> {
    who.require_admin()?;
    state.db.delete_user(id).await?;
    state.hub.close_user(id, CloseReason::AccountChanged);
    tracing::info!(user = id, admin = %who.user.username, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}
