//! `GET /api/rooms`: the rooms this user may see (staff-only ones for staff only).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::auth::CurrentUser;
use crate::error::Error;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/rooms", get(list))
}

#[derive(serde::Serialize)]
struct RoomView {
    id: i64,
    title: String,
    staff_only: bool,
}

async fn list(State(state): State<AppState>, who: CurrentUser) -> Result<Json<Vec<RoomView>>, Error> {
    let rooms = state.db.list_rooms(who.user.is_staff).await?;
    Ok(Json(rooms.into_iter().map(|r| RoomView { id: r.id, title: r.title, staff_only: r.staff_only }).collect()))
}
