//! `/api/rooms`: the rooms this user may see (staff-only ones for staff only), and their history.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::CurrentUser;
use crate::db::{Page, Room};
use crate::error::Error;
use crate::protocol::Event;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/rooms", get(list)).route("/api/rooms/{id}/messages", get(messages))
}

/// A room as users see it; `last_message_id` lets a client tell what it has not seen yet.
#[derive(serde::Serialize)]
struct RoomView {
    id: i64,
    title: String,
    staff_only: bool,
    ephemeral: bool,
    last_message_id: i64,
}

async fn list(State(state): State<AppState>, who: CurrentUser) -> Result<Json<Vec<RoomView>>, Error> {
    let rooms = state.db.list_rooms(who.user.is_staff).await?;
    let view = |r: Room| RoomView {
        id: r.id,
        title: r.title,
        staff_only: r.staff_only,
        ephemeral: r.ephemeral,
        last_message_id: r.last_message_id,
    };
    Ok(Json(rooms.into_iter().map(view).collect()))
}

#[derive(Deserialize)]
struct PageQuery {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/rooms/{id}/messages?before=&after=&limit=`: the same pages as the `history` command, for
/// rooms this user may enter (404 for no such room, 403 for a staff-only room and a non-staff user).
async fn messages(
    State(state): State<AppState>,
    who: CurrentUser,
    Path(id): Path<i64>,
    Query(query): Query<PageQuery>,
) -> Result<Json<serde_json::Value>, Error> {
    if query.after.is_some_and(|n| n < 0) || query.before.is_some_and(|n| n < 1) || query.limit.is_some_and(|n| n < 1) {
        return Err(Error::Invalid("`after` must be 0 or more; `before` and `limit` 1 or more"));
    }
    state.db.enterable_room(id, who.user.id).await?;
    let limit = query.limit.unwrap_or(50).min(state.config.history_page_max);
    let page = state.db.history(id, Page { before: query.before, after: query.after, limit }).await?;
    let messages: Vec<Event> = page.messages.iter().map(Event::from).collect();
    Ok(Json(serde_json::json!({ "messages": messages, "more": page.more })))
}
