//! The `sessions` table: one row per login, keyed by the SHA-256 of its token.

use rusqlite::{named_params, OptionalExtension};
use sqlx::Row;

use super::users::{user_from_row, user_from_sqlite, User};
use super::{now_ms, Db};
use crate::error::Error;

/// The active user behind unexpired session `$1` at `$2`, with the session's expiry.
const SESSION_USER: &str = "SELECT u.id, u.username, u.is_staff, u.is_admin, u.is_active, u.created_at, s.expires_at \
                            FROM sessions s JOIN users u ON u.id = s.user_id \
                            WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.is_active";

impl Db {
    pub async fn create_session(&self, token_hash: &str, user_id: i64, expires_at: i64) -> Result<(), Error> {
        let now = now_ms();
        // Expired sessions are swept here, at the rate of logins, rather than by a timer.
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The active user behind an unexpired session, if any, with the session's expiry (Unix ms).
    /// Every socket and every API call asks: on SQLite, read on the calling thread (see [`super::sqlite_direct`]).
    pub async fn session_user(&self, token_hash: &str) -> Result<Option<(User, i64)>, Error> {
        if let Some(direct) = &self.sqlite_direct {
            return direct.read(|conn| {
                conn.prepare_cached(SESSION_USER)?
                    .query_row(named_params! { "$1": token_hash, "$2": now_ms() }, |row| {
                        Ok((user_from_sqlite(row)?, row.get("expires_at")?))
                    })
                    .optional()
            });
        }
        let row = sqlx::query(SESSION_USER).bind(token_hash).bind(now_ms()).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((user_from_row(&row)?, row.try_get("expires_at")?)))
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(&self.pool).await?;
        Ok(())
    }

    /// Ends every session of `user_id` but `keep` (the one changing its own password, say).
    pub async fn delete_user_sessions(&self, user_id: i64, keep: Option<&str>) -> Result<(), Error> {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
