//! Probes for load balancers and orchestrators: `GET /healthz` says the process is alive (200, always, with no
//! dependency checked, so a database outage does not get every node restarted); `GET /readyz` says it should
//! get traffic: 200 while the database answers, 503 when it does not or once the node is shutting down (so a
//! load balancer drains it while its sockets close).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(alive)).route("/readyz", get(ready))
}

async fn alive() -> &'static str {
    "ok"
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if !state.cluster.is_whole() {
        return (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable");
    }
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(cause) => {
            tracing::warn!(cause = %cause, "readiness: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
