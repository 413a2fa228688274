//! `/api/admin/rooms`: admins create, rename, flag and delete rooms. 401 without a session, 403 for
//! anyone but an admin.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::accounts::room_title;
use crate::auth::CurrentUser;
use crate::db::{Room, RoomPatch};
use crate::error::Error;
use crate::protocol::Event;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/rooms", get(list).post(create))
        .route("/api/admin/rooms/{id}", get(show).patch(update).delete(remove))
}

#[derive(Deserialize)]
struct NewRoom {
    title: String,
    #[serde(default)]
    staff_only: bool,
    #[serde(default)]
    ephemeral: bool,
}

async fn list(State(state): State<AppState>, who: CurrentUser) -> Result<Json<Vec<Room>>, Error> {
    who.require_admin()?;
    Ok(Json(state.db.list_rooms(true).await?))
}

async fn show(State(state): State<AppState>, who: CurrentUser, Path(id): Path<i64>) -> Result<Json<Room>, Error> {
    who.require_admin()?;
    Ok(Json(state.db.room(id).await?.ok_or(Error::NotFound)?))
}

async fn create(
    State(state): State<AppState>,
    who: CurrentUser,
    Json(new): Json<NewRoom>,
) -> Result<(StatusCode, Json<Room>), Error> {
    who.require_admin()?;
    let room = state.db.create_room(room_title(&new.title)?, new.staff_only, new.ephemeral).await?;
    tracing::info!(room = room.id, admin = %who.user.username, "room created");
    state.hub.broadcast(&Event::rooms_changed());
    Ok((StatusCode::CREATED, Json(room)))
}

/// Making a room staff-only takes its non-staff members out at once; making it ephemeral deletes its history.
async fn update(
    State(state): State<AppState>,
    who: CurrentUser,
    Path(id): Path<i64>,
    Json(mut patch): Json<RoomPatch>,
) -> Result<Json<Room>, Error> {
    who.require_admin()?;
    if let Some(title) = &patch.title {
        patch.title = Some(room_title(title)?.to_owned());
    }
    let room = state.db.update_room(id, &patch).await?;
    state.hub.room_changed(&room);
    state.hub.broadcast(&Event::rooms_changed());
    Ok(Json(room))
}

async fn remove(State(state): State<AppState>, who: CurrentUser, Path(id): Path<i64>) -> Result<StatusCode, Error> {
    who.require_admin()?;
    state.db.delete_room(id).await?;
    state.hub.room_deleted(id);
    state.hub.broadcast(&Event::rooms_changed());
    tracing::info!(room = id, admin = %who.user.username, "room deleted");
    Ok(StatusCode::NO_CONTENT)
}
