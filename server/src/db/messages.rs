//! The `messages` table: every accepted message, with its dense per-room id.

use sqlx::Row;

use super::{now_ms, Db};
use crate::error::Error;

/// A message as stored: its id is the room's counter, advanced in the storing transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub room_id: i64,
    pub id: i64,
    pub created_at: i64,
}

impl Db {
    /// Stores `body` in room `room_id` as written by `user_id`, and returns its new id.
    ///
    /// The staff-only check runs in the same statement that advances the counter, against the author's
    /// flags as they are now, so a message from someone demoted a moment ago is refused even if their
    /// socket has not been told yet. Refusals are [`Error::RoomInvalid`] and [`Error::RoomAccessDenied`].
    pub async fn store_message(
        &self,
        room_id: i64,
        user_id: i64,
        username: &str,
        body: &str,
    ) -> Result<StoredMessage, Error> {
        let created_at = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE rooms SET last_message_id = last_message_id + 1 \
             WHERE id = $1 AND (NOT staff_only OR EXISTS \
                 (SELECT 1 FROM users WHERE id = $2 AND is_staff AND is_active)) \
             RETURNING last_message_id",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            return Err(match self.room(room_id).await? {
                Some(_) => Error::RoomAccessDenied,
                None => Error::RoomInvalid,
            });
        };
        let id: i64 = row.try_get("last_message_id")?;
        sqlx::query(
            "INSERT INTO messages (room_id, id, user_id, username, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(room_id)
        .bind(id)
        .bind(user_id)
        .bind(username)
        .bind(body)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StoredMessage { room_id, id, created_at })
    }
}

/// A message as history shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    pub room: i64,
    pub id: i64,
    pub username: String,
    pub message: String,
    pub ts: i64,
}

impl Db {
    /// Up to `limit` messages of `room` with ids below `before`, oldest first.
    pub async fn messages_before(&self, room: i64, before: i64, limit: i64) -> Result<Vec<Message>, Error> {
        let rows = sqlx::query(
            "SELECT room_id, id, username, body, created_at FROM \
               (SELECT * FROM messages WHERE room_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3) newest \
             ORDER BY id",
        )
        .bind(room)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Message {
                    room: row.try_get("room_id")?,
                    id: row.try_get("id")?,
                    username: row.try_get("username")?,
                    message: row.try_get("body")?,
                    ts: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }
}
