//! The `rooms` table: chat rooms, their staff-only flag and their message counter.

use rusqlite::{named_params, OptionalExtension};
use sqlx::Row;

use super::{flag, now_ms, Db};
use crate::error::Error;

/// A chat room.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Room {
    pub id: i64,
    pub title: String,
    pub staff_only: bool,
    /// Nothing said here is stored (the original multichat's behaviour): no history, no replay.
    pub ephemeral: bool,
    pub created_at: i64,
    /// The id of the newest message (0 for none): message ids are dense, 1, 2, 3 … per room.
    pub last_message_id: i64,
}

/// A partial update of a room; `None` leaves a field as it is.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RoomPatch {
    pub title: Option<String>,
    pub staff_only: Option<bool>,
    pub ephemeral: Option<bool>,
}

const ROOM_COLUMNS: &str = "id, title, staff_only, ephemeral, created_at, last_message_id";

fn room_from_row(row: &sqlx::any::AnyRow) -> Result<Room, sqlx::Error> {
    Ok(Room {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        staff_only: flag(row, "staff_only")?,
        ephemeral: flag(row, "ephemeral")?,
        created_at: row.try_get("created_at")?,
        last_message_id: row.try_get("last_message_id")?,
    })
}

/// [`room_from_row`] for a row read without sqlx (see [`super::sqlite_direct`]).
fn room_from_sqlite(row: &rusqlite::Row) -> rusqlite::Result<Room> {
    Ok(Room {
        id: row.get("id")?,
        title: row.get("title")?,
        staff_only: row.get("staff_only")?,
        ephemeral: row.get("ephemeral")?,
        created_at: row.get("created_at")?,
        last_message_id: row.get("last_message_id")?,
    })
}

/// Room `$1`, and whether user `$2` is active staff.
const ENTERABLE_ROOM: &str = "SELECT r.id, r.title, r.staff_only, r.ephemeral, r.created_at, r.last_message_id, \
    COALESCE((SELECT u.is_staff FROM users u WHERE u.id = $2 AND u.is_active), FALSE) AS user_is_staff \
    FROM rooms r WHERE r.id = $1";

impl Db {
    pub async fn create_room(&self, title: &str, staff_only: bool, ephemeral: bool) -> Result<Room, Error> {
        let sql = format!(
            "INSERT INTO rooms (title, staff_only, ephemeral, created_at) VALUES ($1, $2, $3, $4) RETURNING {ROOM_COLUMNS}"
        );
        let row =
            sqlx::query(&sql).bind(title).bind(staff_only).bind(ephemeral).bind(now_ms()).fetch_one(&self.pool).await?;
        Ok(room_from_row(&row)?)
    }

    /// The rooms in id order; staff-only ones only when `include_staff_only`.
    pub async fn list_rooms(&self, include_staff_only: bool) -> Result<Vec<Room>, Error> {
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE $1 OR NOT staff_only ORDER BY id");
        let rows = sqlx::query(&sql).bind(include_staff_only).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(room_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn room(&self, id: i64) -> Result<Option<Room>, Error> {
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(room_from_row).transpose()?)
    }

    /// Room `room_id` if active user `user_id` may enter it *now* (it exists, and they are staff if it is
    /// staff-only), with whether they are staff; one round trip, against current rights rather than the
    /// ones the user had when their socket opened. Every join asks: on SQLite, read on the calling thread (see
    /// [`super::sqlite_direct`]).
    pub async fn enterable_room(&self, room_id: i64, user_id: i64) -> Result<(Room, bool), Error> {
        let found = match &self.sqlite_direct {
            Some(direct) => direct.read(|conn| {
                conn.prepare_cached(ENTERABLE_ROOM)?
                    .query_row(named_params! { "$1": room_id, "$2": user_id }, |row| {
                        Ok((room_from_sqlite(row)?, row.get("user_is_staff")?))
                    })
                    .optional()
            })?,
            None => match sqlx::query(ENTERABLE_ROOM).bind(room_id).bind(user_id).fetch_optional(&self.pool).await? {
                Some(row) => Some((room_from_row(&row)?, flag(&row, "user_is_staff")?)),
                None => None,
            },
        };
        let (room, is_staff) = found.ok_or(Error::RoomInvalid)?;
        if room.staff_only && !is_staff {
            return Err(Error::RoomAccessDenied);
        }
        Ok((room, is_staff))
    }

    /// Applies `patch`; making a room ephemeral also deletes what it had stored, in the same transaction.
    pub async fn update_room(&self, id: i64, patch: &RoomPatch) -> Result<Room, Error> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE rooms SET title = COALESCE($2, title), staff_only = COALESCE($3, staff_only), \
             ephemeral = COALESCE($4, ephemeral) WHERE id = $1 RETURNING {ROOM_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(patch.title.as_deref())
            .bind(patch.staff_only)
            .bind(patch.ephemeral)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound)?;
        let room = room_from_row(&row)?;
        if patch.ephemeral == Some(true) {
            sqlx::query("DELETE FROM messages WHERE room_id = $1").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(room)
    }

    /// Deletes a room and, with it, its messages.
    pub async fn delete_room(&self, id: i64) -> Result<(), Error> {
        let done = sqlx::query("DELETE FROM rooms WHERE id = $1").bind(id).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }
}
