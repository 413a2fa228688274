//! The crate's one error type, and how each case answers over HTTP.
//!
//! Internal causes (database, hashing) are logged here and shown to clients only as a generic message.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log in first")]
    Unauthorized,
    #[error("you are not allowed to do that")]
    Forbidden,
    /// One message for an unknown user and a wrong password alike: no user enumeration.
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("too many failed attempts; try again in {0} s")]
    Throttled(u64),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("that username is taken")]
    UsernameTaken,
    #[error("not found")]
    NotFound,
    #[error("no such room")]
    RoomInvalid,
    #[error("this room is for staff only")]
    RoomAccessDenied,
    #[error("setup is already done")]
    SetupClosed,
    #[error("that would leave no active admin")]
    LastAdmin,
    #[error("the database is unavailable")]
    Database(#[from] sqlx::Error),
    /// The embedded database, where messages are stored without sqlx (see `db::sqlite_direct`).
    #[error("the database is unavailable")]
    Sqlite(#[from] rusqlite::Error),
    #[error("password hashing failed")]
    Hashing,
    #[error("the server is busy; try again")]
    Busy,
    /// A setting the server cannot run with (said at start, never to clients).
    #[error("{0}")]
    Config(String),
    /// A failure already logged where it happened; nothing was stored.
    #[error("the database is unavailable; nothing was stored")]
    Unavailable,
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized | Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Error::Forbidden | Error::RoomAccessDenied => StatusCode::FORBIDDEN,
            Error::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::UsernameTaken | Error::SetupClosed | Error::LastAdmin => StatusCode::CONFLICT,
            Error::NotFound | Error::RoomInvalid => StatusCode::NOT_FOUND,
            Error::Database(_) | Error::Sqlite(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Hashing | Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Busy | Error::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Logs internal causes once, where they turn into a reply.
    pub fn log_if_internal(&self) {
        match self {
            Error::Database(cause) => tracing::error!(cause = %cause, "database error"),
            Error::Sqlite(cause) => tracing::error!(cause = %cause, "database error"),
            Error::Hashing => tracing::error!("password hashing failed"),
            _ => {}
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        match self {
            Error::Throttled(secs) => (self.status(), [(header::RETRY_AFTER, secs.to_string())], body).into_response(),
            _ => (self.status(), body).into_response(),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Error::Database(sqlx::Error::Migrate(Box::new(err)))
    }
}
