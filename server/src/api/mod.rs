//! The JSON HTTP API under `/api`, one resource per module, plus the probes `/healthz` and `/readyz` and `/metrics`.

mod admin_rooms;
mod admin_users;
mod health;
mod me;
mod metrics;
mod rooms;
mod session;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(session::router())
        .merge(me::router())
        .merge(rooms::router())
        .merge(admin_rooms::router())
        .merge(admin_users::router())
        .merge(health::router())
        .merge(metrics::router())
}

/// The account fields clients see.
#[derive(serde::Serialize)]
struct UserView<'a> {
    id: i64,
    username: &'a str,
    is_staff: bool,
    is_admin: bool,
    is_active: bool,
}

impl<'a> From<&'a crate::db::User> for UserView<'a> {
    fn from(u: &'a crate::db::User) -> Self {
        UserView { id: u.id, username: &u.username, is_staff: u.is_staff, is_admin: u.is_admin, is_active: u.is_active }
    }
}
