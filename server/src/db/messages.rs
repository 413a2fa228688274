//! The `messages` table and its nonces: storing accepted messages in batches, reading history, and
//! retention.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Acquire, AnyConnection, Row};

use super::{is_unique_violation, now_ms, Backend, Db};
use crate::error::Error;

/// A message a user sent, waiting to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room: i64,
    pub user_id: i64,
    pub username: Arc<str>,
    pub body: String,
    /// The client's idempotency key: the same nonce from the same author is stored once.
    pub nonce: Option<String>,
}

/// Where a message ended up: its room, its dense per-room id and its server time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMessage {
    pub room: i64,
    pub id: i64,
    pub created_at: i64,
}

/// What became of one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now (or, in an ephemeral room, given its id without storing the text).
    New(StoredMessage),
    /// A retry of a nonce this author already used: the earlier message, not stored again.
    Duplicate(StoredMessage),
}

/// A message as history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub room: i64,
    pub id: i64,
    pub username: String,
    pub message: String,
    pub ts: i64,
}

/// Which part of a room's history to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Page {
    /// Only messages with a larger id.
    pub after: Option<i64>,
    /// Only messages with a smaller id; with it, the page is the newest ones (scrolling back), without it
    /// and with `after`, the oldest ones (catching up).
    pub before: Option<i64>,
    pub limit: i64,
}

/// A page of history, oldest first, and whether more lie beyond it in the direction read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub messages: Vec<Message>,
    pub more: bool,
}

impl Db {
    /// Stores a batch of messages in one transaction, in order, and says what became of each. A refused
    /// message ([`Error::RoomInvalid`], [`Error::RoomAccessDenied`]) does not affect the others; a database
    /// failure fails the whole batch, and then nothing of it was stored.
    ///
    /// Each message advances its room's counter in the statement that also checks the author's current
    /// staff rights, so ids are dense and a just-demoted author is refused.
    pub async fn store_batch(&self, batch: &[&NewMessage]) -> Result<Vec<Result<Stored, Error>>, Error> {
        let created_at = now_ms();
        let mut tx = self.begin_write().await?;
        let mut results = Vec::with_capacity(batch.len());
        for &message in batch {
            let result = match &message.nonce {
                None => store_one(&mut tx, self.backend, message, created_at).await,
                // A nonce used before (a retry, here or on another node) fails the insert on its key; a
                // savepoint keeps that from aborting the batch, and the retry is answered with the earlier id.
                Some(nonce) => {
                    let mut savepoint = tx.begin().await?;
                    match store_one(&mut savepoint, self.backend, message, created_at).await {
                        Ok(stored) => {
                            savepoint.commit().await?;
                            Ok(stored)
                        }
                        Err(e) => {
                            savepoint.rollback().await?;
                            // A retry is answered with the earlier message, also if the author may no longer
                            // write there or the room is gone: it was stored when they could.
                            let maybe_retry = match &e {
                                Error::Database(db) => is_unique_violation(db),
                                Error::RoomAccessDenied | Error::RoomInvalid => true,
                                _ => false,
                            };
                            let earlier =
                                if maybe_retry { nonce_lookup(&mut tx, message.user_id, nonce).await? } else { None };
                            earlier.map(Stored::Duplicate).ok_or(e)
                        }
                    }
                }
            };
            match result {
                Err(Error::Database(e)) => return Err(Error::Database(e)),
                other => results.push(other),
            }
        }
        tx.commit().await?;
        Ok(results)
    }

    /// A page of room `room`'s stored history (see [`Page`]), oldest first.
    pub async fn history(&self, room: i64, page: Page) -> Result<History, Error> {
        let after = page.after.unwrap_or(0);
        let limit = page.limit.max(1);
        let backwards = page.before.is_some() || page.after.is_none();
        let sql = if backwards {
            "SELECT room_id, id, username, body, created_at FROM messages \
             WHERE room_id = $1 AND id > $2 AND id < $3 ORDER BY id DESC LIMIT $4"
        } else {
            "SELECT room_id, id, username, body, created_at FROM messages \
             WHERE room_id = $1 AND id > $2 AND id < $3 ORDER BY id ASC LIMIT $4"
        };
        let rows = sqlx::query(sql)
            .bind(room)
            .bind(after)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let more = rows.len() as i64 > limit;
        let mut messages = rows.iter().take(limit as usize).map(message_from_row).collect::<Result<Vec<_>, _>>()?;
        if backwards {
            messages.reverse();
        }
        Ok(History { messages, more })
    }

    /// The newest messages of `room` after id `after` (at most `limit`), and the room's newest id at the
    /// time of reading: what a resuming client is missing.
    pub async fn replay(&self, room: i64, after: i64, limit: i64) -> Result<(History, i64), Error> {
        let last: i64 = sqlx::query("SELECT last_message_id FROM rooms WHERE id = $1")
            .bind(room)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::RoomInvalid)?
            .try_get("last_message_id")?;
        let page = Page { after: Some(after), before: Some(last.saturating_add(1)), limit };
        Ok((self.history(room, page).await?, last))
    }

    /// Deletes messages older than `max_age`, all but the newest `per_room` of each room, and nonces older
    /// than `nonce_age`. Returns how many messages went.
    pub async fn apply_retention(
        &self,
        max_age: Option<Duration>,
        per_room: Option<u64>,
        nonce_age: Duration,
    ) -> Result<u64, Error> {
        let now = now_ms();
        let mut deleted = 0;
        if let Some(age) = max_age {
            let cutoff = now - age.as_millis() as i64;
            let done =
                sqlx::query("DELETE FROM messages WHERE created_at < $1").bind(cutoff).execute(&self.pool).await?;
            deleted += done.rows_affected();
        }
        if let Some(keep) = per_room {
            // Ids are dense, so "the newest N" is "id above the room's last id minus N".
            let done = sqlx::query(
                "DELETE FROM messages WHERE id <= \
                 (SELECT r.last_message_id FROM rooms r WHERE r.id = messages.room_id) - $1",
            )
            .bind(keep as i64)
            .execute(&self.pool)
            .await?;
            deleted += done.rows_affected();
        }
        let nonce_cutoff = now - nonce_age.as_millis() as i64;
        sqlx::query("DELETE FROM message_nonces WHERE created_at < $1").bind(nonce_cutoff).execute(&self.pool).await?;
        Ok(deleted)
    }
}

/// The condition on a `rooms` row under which author `$2` may write there: checked in the statement that
/// advances the counter, so that a just-demoted author is refused.
macro_rules! may_write {
    () => {
        "(NOT staff_only OR EXISTS (SELECT 1 FROM users WHERE id = $2 AND is_staff AND is_active))"
    };
}

/// Advances the room's counter if the author may write there (returning it), and stores the message under it
/// unless the room is ephemeral. SQLite has no data-modifying CTE: two statements in one command, the insert
/// reading the counter the update just set, and only if it set one (`changes()`).
const STORE_SQLITE: &str = concat!(
    "UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = $1 AND ",
    may_write!(),
    " RETURNING last_message_id; \
     INSERT INTO messages (room_id, id, user_id, username, body, created_at) \
     SELECT id, last_message_id, $2, $3, $4, $5 FROM rooms WHERE id = $1 AND NOT ephemeral AND changes() = 1",
);
/// The same, and the nonce `$6` remembered, also in an ephemeral room (where `changes()` is 0 by then, hence
/// the condition again).
const STORE_SQLITE_NONCE: &str = concat!(
    "UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = $1 AND ",
    may_write!(),
    " RETURNING last_message_id; \
     INSERT INTO messages (room_id, id, user_id, username, body, created_at) \
     SELECT id, last_message_id, $2, $3, $4, $5 FROM rooms WHERE id = $1 AND NOT ephemeral AND changes() = 1; \
     INSERT INTO message_nonces (user_id, nonce, room_id, message_id, created_at) \
     SELECT $2, $6, id, last_message_id, $5 FROM rooms WHERE id = $1 AND ",
    may_write!(),
);
/// [`STORE_SQLITE`] for Postgres, as one statement.
const STORE_POSTGRES: &str = concat!(
    "WITH bumped AS (UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = $1 AND ",
    may_write!(),
    " RETURNING id, last_message_id, ephemeral), \
     stored AS (INSERT INTO messages (room_id, id, user_id, username, body, created_at) \
     SELECT id, last_message_id, $2, $3, $4, $5 FROM bumped WHERE NOT ephemeral) \
     SELECT last_message_id FROM bumped",
);
/// [`STORE_SQLITE_NONCE`] for Postgres, as one statement.
const STORE_POSTGRES_NONCE: &str = concat!(
    "WITH bumped AS (UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = $1 AND ",
    may_write!(),
    " RETURNING id, last_message_id, ephemeral), \
     stored AS (INSERT INTO messages (room_id, id, user_id, username, body, created_at) \
     SELECT id, last_message_id, $2, $3, $4, $5 FROM bumped WHERE NOT ephemeral), \
     remembered AS (INSERT INTO message_nonces (user_id, nonce, room_id, message_id, created_at) \
     SELECT $2, $6, id, last_message_id, $5 FROM bumped) \
     SELECT last_message_id FROM bumped",
);

/// Stores one message inside the batch's transaction: one command, a round trip (to SQLite's worker thread,
/// or to Postgres) that under load waits its turn for a core. A nonce already used fails it with a unique
/// violation, which the caller answers (see [`Db::store_batch`]): retries are rare, so they pay, not every
/// message.
async fn store_one(
    conn: &mut AnyConnection,
    backend: Backend,
    message: &NewMessage,
    created_at: i64,
) -> Result<Stored, Error> {
    let sql = match (backend, message.nonce.is_some()) {
        (Backend::Sqlite, false) => STORE_SQLITE,
        (Backend::Sqlite, true) => STORE_SQLITE_NONCE,
        (Backend::Postgres, false) => STORE_POSTGRES,
        (Backend::Postgres, true) => STORE_POSTGRES_NONCE,
    };
    let mut query = sqlx::query(sql)
        .bind(message.room)
        .bind(message.user_id)
        .bind(&*message.username)
        .bind(&message.body)
        .bind(created_at);
    if let Some(nonce) = &message.nonce {
        query = query.bind(nonce);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let Some(row) = rows.first() else {
        let exists =
            sqlx::query("SELECT 1 FROM rooms WHERE id = $1").bind(message.room).fetch_optional(&mut *conn).await?;
        return Err(if exists.is_some() { Error::RoomAccessDenied } else { Error::RoomInvalid });
    };
    let id: i64 = row.try_get("last_message_id")?;
    Ok(Stored::New(StoredMessage { room: message.room, id, created_at }))
}

async fn nonce_lookup(conn: &mut AnyConnection, user_id: i64, nonce: &str) -> Result<Option<StoredMessage>, Error> {
    let row =
        sqlx::query("SELECT room_id, message_id, created_at FROM message_nonces WHERE user_id = $1 AND nonce = $2")
            .bind(user_id)
            .bind(nonce)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(StoredMessage {
        room: row.try_get("room_id")?,
        id: row.try_get("message_id")?,
        created_at: row.try_get("created_at")?,
    }))
}

fn message_from_row(row: &sqlx::any::AnyRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        room: row.try_get("room_id")?,
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        message: row.try_get("body")?,
        ts: row.try_get("created_at")?,
    })
}
