//! The chat WebSocket at `/chat/stream/`: the handshake (origin and session checks) and the connection.

mod connection;
mod origin;
mod wakes;
mod write;

pub use origin::{is_allowed_origin, DESKTOP_ORIGINS};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::header::{HOST, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::session::{authenticate, request_token, Credential};
use crate::error::Error;
use crate::AppState;

/// The subprotocol a client offers alongside its token; the server selects it.
pub const SUBPROTOCOL: &str = "multichat";
/// The prefix of the subprotocol entry that carries a session token (`token.<TOKEN>`), the one way a
/// browser can send a token with a WebSocket handshake without putting it in the URL.
pub const TOKEN_PREFIX: &str = "token.";

pub fn router() -> Router<AppState> {
    Router::new().route("/chat/stream/", get(stream))
}

/// Upgrades an authenticated, same-origin (or native, token-bearing) request to the chat socket.
/// Everything else is refused before the upgrade: 403 for a foreign origin, 401 without a session.
async fn stream(State(state): State<AppState>, ws: WebSocketUpgrade, headers: HeaderMap) -> Result<Response, Error> {
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = origin {
        if !is_allowed_origin(origin, host, &state.config.allowed_origins) {
            tracing::warn!(origin, "refused a WebSocket from a foreign origin");
            return Err(Error::Forbidden);
        }
    }
    let (token, credential) = subprotocol_token(&headers)
        .map(|t| (t, Credential::Token))
        .or_else(|| request_token(&headers))
        .ok_or(Error::Unauthorized)?;
    // Without an Origin the client is not a browser, so a cookie proves nothing about who sent it.
    if origin.is_none() && credential == Credential::Cookie {
        return Err(Error::Unauthorized);
    }
    // Registered before the upgrade is answered, and only if no logout, deactivation or password change
    // landed since the session was read: otherwise such a change could miss this socket and leave it open.
    for _ in 0..REGISTER_ATTEMPTS {
        let epoch = state.hub.epoch();
        let user = authenticate(&state, &token, credential).await?;
        let Ok(registration) = state.hub.register(&user.user, user.session.clone(), epoch) else { continue };
        let limit = state.config.transport_limit();
        return Ok(ws
            .protocols([SUBPROTOCOL])
            // Chat frames are small; tungstenite's default 128 KiB read buffer per socket would be most of an
            // idle connection's memory. Larger frames still arrive whole (the buffer grows for them).
            .read_buffer_size(READ_BUFFER)
            .max_message_size(limit)
            .max_frame_size(limit)
            .on_upgrade(move |socket| {
                let tasks = state.tasks.clone();
                tasks.track_future(connection::run(socket, state, user, registration))
            })
            .into_response());
    }
    Err(Error::Busy)
}

/// Each socket's read buffer (see `stream`). tungstenite zeroes it whenever the socket is polled, including
/// every time its task wakes to write: at 4 KiB that was 3.7 % of the server's time in the 1 × 1,000 fan-out
/// (1 KiB: 0.95 %), and 3 KiB of every idle socket (11.4 → 8.5 KiB per socket at 19,000). A command is a few
/// hundred bytes; a longer one takes more reads.
const READ_BUFFER: usize = 1024;

/// How often a handshake authenticates again while sessions keep changing under it.
const REGISTER_ATTEMPTS: usize = 5;

/// The token offered as a `token.<TOKEN>` subprotocol, if any.
fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(TOKEN_PREFIX).map(str::to_owned))
}
