//! The `messages` table and its nonces: storing accepted messages in batches, reading history, and
//! retention.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Acquire, AnyConnection, Row};

use super::{is_unique_violation, now_ms, Db};
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
    /// staff rights (or remembers its nonce), so ids are dense and a just-demoted author is refused.
    ///
    /// On SQLite the batch is stored on the calling thread, which it blocks meanwhile (a fraction of a
    /// millisecond, or the busy timeout if another process holds the write lock): the message writer has a
    /// thread of its own for it (see `db/sqlite_direct.rs`).
    pub async fn store_batch(&self, batch: &[&NewMessage]) -> Result<Vec<Result<Stored, Error>>, Error> {
        let created_at = now_ms();
        if let Some(direct) = &self.sqlite_direct {
            return direct.store_batch(batch, created_at);
        }
        let mut tx = self.begin_write().await?;
        let results = store_postgres(&mut tx, batch, created_at).await?;
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

/// Stores a batch on Postgres, a statement per message (see [`STORE_POSTGRES`]).
async fn store_postgres(
    conn: &mut AnyConnection,
    batch: &[&NewMessage],
    created_at: i64,
) -> Result<Vec<Result<Stored, Error>>, Error> {
    let mut results = Vec::with_capacity(batch.len());
    for &message in batch {
        let result = match &message.nonce {
            None => store_one_postgres(conn, message, created_at).await,
            // A nonce used before (a retry, here or on another node) fails the insert on its key; a savepoint
            // keeps that from aborting the batch, and the retry is answered with the earlier id.
            Some(nonce) => {
                let mut savepoint = conn.begin().await?;
                match store_one_postgres(&mut savepoint, message, created_at).await {
                    Ok(stored) => {
                        savepoint.commit().await?;
                        Ok(stored)
                    }
                    Err(Error::Database(e)) if is_unique_violation(&e) => {
                        savepoint.rollback().await?;
                        nonce_lookup(conn, message.user_id, nonce)
                            .await?
                            .map(Stored::Duplicate)
                            .ok_or(Error::Database(e))
                    }
                    Err(e) => {
                        savepoint.rollback().await?;
                        Err(e)
                    }
                }
            }
        };
        match result {
            Err(Error::Database(e)) => return Err(Error::Database(e)),
            other => results.push(other),
        }
    }
    Ok(results)
}

/// Advances the room's counter if the author `$2` may write there (returning it), and stores the message under
/// it unless the room is ephemeral: one statement.
const STORE_POSTGRES: &str = concat!(
    "WITH bumped AS (UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = $1 AND ",
    may_write!("$2"),
    " RETURNING id, last_message_id, ephemeral), \
     stored AS (INSERT INTO messages (room_id, id, user_id, username, body, created_at) \
     SELECT id, last_message_id, $2, $3, $4, $5 FROM bumped WHERE NOT ephemeral) \
     SELECT last_message_id FROM bumped",
);
/// The same, and the nonce `$6` remembered (also in an ephemeral room).
const STORE_POSTGRES_NONCE: &str = concat!(
    "WITH bumped AS (UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = $1 AND ",
    may_write!("$2"),
    " RETURNING id, last_message_id, ephemeral), \
     stored AS (INSERT INTO messages (room_id, id, user_id, username, body, created_at) \
     SELECT id, last_message_id, $2, $3, $4, $5 FROM bumped WHERE NOT ephemeral), \
     remembered AS (INSERT INTO message_nonces (user_id, nonce, room_id, message_id, created_at) \
     SELECT $2, $6, id, last_message_id, $5 FROM bumped) \
     SELECT last_message_id FROM bumped",
);

/// Stores one message inside the batch's transaction on Postgres: one statement, one round trip. A nonce
/// already used fails it with a unique violation, which the caller answers: retries are rare, so they pay,
/// not every message.
async fn store_one_postgres(conn: &mut AnyConnection, message: &NewMessage, created_at: i64) -> Result<Stored, Error> {
    let sql = if message.nonce.is_some() { STORE_POSTGRES_NONCE } else { STORE_POSTGRES };
    let mut query = sqlx::query(sql)
        .bind(message.room)
        .bind(message.user_id)
        .bind(&*message.username)
        .bind(&message.body)
        .bind(created_at);
    if let Some(nonce) = &message.nonce {
        query = query.bind(nonce);
    }
    match query.fetch_all(&mut *conn).await?.first() {
        Some(row) => {
            Ok(Stored::New(StoredMessage { room: message.room, id: row.try_get("last_message_id")?, created_at }))
        }
        None => not_stored(conn, message).await?,
    }
}

/// Why a message was not stored: a retry of a nonce (answered with the earlier message, also if the author may
/// no longer write there: it was stored when they could), or a room that is gone or not theirs.
async fn not_stored(conn: &mut AnyConnection, message: &NewMessage) -> Result<Result<Stored, Error>, Error> {
    if let Some(nonce) = &message.nonce {
        if let Some(earlier) = nonce_lookup(conn, message.user_id, nonce).await? {
            return Ok(Ok(Stored::Duplicate(earlier)));
        }
    }
    let exists = sqlx::query("SELECT 1 FROM rooms WHERE id = $1").bind(message.room).fetch_optional(&mut *conn).await?;
    Ok(Err(if exists.is_some() { Error::RoomAccessDenied } else { Error::RoomInvalid }))
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
