//! The embedded SQLite file used directly (rusqlite), on the calling thread: storing messages, and the reads
//! every socket makes (its session, the rooms it joins).
//!
//! Through sqlx every statement is a hand-off to the connection's worker thread and back, and under full load
//! each hand-off waited its turn for a core: in the 1 × 1,000 benchmark at 500k deliveries/s the same server
//! with storage replaced by ids counted in memory delivered several ms sooner (docs/performance.md). The
//! message writer has a thread of its own, so it runs SQLite there itself: a batch is a few function calls.
//! The hot reads run on the runtime's worker that asks: one indexed row of a small, warm file takes a few
//! microseconds in WAL mode (readers never wait for the writer), less than the two thread hand-offs they cost
//! through sqlx, which were a fifth of the server's time when sockets come and go (docs/performance.md).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use super::{NewMessage, Stored, StoredMessage, SQLITE_SETTINGS};
use crate::error::Error;

/// The nonce remembered if new and the author `?1` may write in room `?3`, under the id the message will get.
const REMEMBER_NONCE: &str = concat!(
    "INSERT INTO message_nonces (user_id, nonce, room_id, message_id, created_at) ",
    "SELECT ?1, ?2, id, last_message_id + 1, ?4 FROM rooms WHERE id = ?3 AND ",
    may_write!("?1"),
    " ON CONFLICT DO NOTHING"
);
/// The room's counter advanced (its nonce, remembered just before, vouched for the author's rights).
const BUMP: &str = "UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = ?1 \
                    RETURNING last_message_id, ephemeral";
/// The room's counter advanced if the author `?2` may write there.
const BUMP_IF_ALLOWED: &str = concat!(
    "UPDATE rooms SET last_message_id = last_message_id + 1 WHERE id = ?1 AND ",
    may_write!("?2"),
    " RETURNING last_message_id, ephemeral"
);
const INSERT: &str = "INSERT INTO messages (room_id, id, user_id, username, body, created_at) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const NONCE_LOOKUP: &str =
    "SELECT room_id, message_id, created_at FROM message_nonces WHERE user_id = ?1 AND nonce = ?2";

/// Connections of its own to the database file, opened on first use (a file that cannot be opened then is
/// a failed batch or read, not a failed start) and kept until the [`super::Db`] is closed.
#[derive(Debug)]
pub(super) struct SqliteDirect {
    path: PathBuf,
    conn: Mutex<Slot>,
    /// Idle read connections: as many as have ever read at once (at most one per thread that reads);
    /// `None` once closed.
    readers: Mutex<Option<Vec<Connection>>>,
}

#[derive(Debug)]
enum Slot {
    NotYetOpen,
    Open(Connection),
    /// Closed with the pool: every batch fails from now on, as every query through the pool does.
    Closed,
}

impl SqliteDirect {
    pub(super) fn new(path: PathBuf) -> SqliteDirect {
        SqliteDirect { path, conn: Mutex::new(Slot::NotYetOpen), readers: Mutex::new(Some(Vec::new())) }
    }

    /// Runs `read` on an idle read connection (or a new one), blocking the calling thread meanwhile: for short
    /// reads by index only.
    pub(super) fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let idle = match self.readers.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            Some(idle) => idle.pop(),
            None => return Err(closed()),
        };
        let conn = match idle {
            Some(conn) => conn,
            None => open(&self.path)?,
        };
        let result = read(&conn);
        if let Some(idle) = self.readers.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            idle.push(conn);
        }
        Ok(result?)
    }

    /// Stores `batch` in one transaction (see [`super::Db::store_batch`]), blocking the calling thread meanwhile.
    pub(super) fn store_batch(
        &self,
        batch: &[&NewMessage],
        created_at: i64,
    ) -> Result<Vec<Result<Stored, Error>>, Error> {
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Slot::NotYetOpen = *slot {
            *slot = Slot::Open(open(&self.path)?);
        }
        let Slot::Open(conn) = &mut *slot else { return Err(closed()) };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        for message in batch {
            results.push(store_one(&tx, message, created_at)?);
        }
        tx.commit()?;
        Ok(results)
    }

    /// Closes the connections for good.
    pub(super) fn close(&self) {
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Slot::Closed;
        *self.readers.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// What every use after [`SqliteDirect::close`] fails with, as every query through the closed pool does.
fn closed() -> Error {
    Error::Database(sqlx::Error::PoolClosed)
}

/// Opens the file the pool created and migrated, set up as the pool's connections are.
fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.execute_batch(SQLITE_SETTINGS)?;
    Ok(conn)
}

/// Stores one message of a batch: the nonce (if any), the counter, then the text unless the room is ephemeral.
/// The rights are checked in the statement that moves first, so that a just-demoted author is refused.
fn store_one(tx: &Transaction, message: &NewMessage, created_at: i64) -> Result<Result<Stored, Error>, Error> {
    let bumped = match &message.nonce {
        Some(nonce) => {
            let remembered = tx.prepare_cached(REMEMBER_NONCE)?.execute(params![
                message.user_id,
                nonce,
                message.room,
                created_at
            ])?;
            if remembered == 1 {
                tx.prepare_cached(BUMP)?.query_row(params![message.room], id_and_ephemeral).optional()?
            } else {
                None
            }
        }
        None => tx
            .prepare_cached(BUMP_IF_ALLOWED)?
            .query_row(params![message.room, message.user_id], id_and_ephemeral)
            .optional()?,
    };
    let Some((id, ephemeral)) = bumped else { return not_stored(tx, message) };
    if !ephemeral {
        tx.prepare_cached(INSERT)?.execute(params![
            message.room,
            id,
            message.user_id,
            &*message.username,
            &message.body,
            created_at
        ])?;
    }
    Ok(Ok(Stored::New(StoredMessage { room: message.room, id, created_at })))
}

fn id_and_ephemeral(row: &rusqlite::Row) -> rusqlite::Result<(i64, bool)> {
    Ok((row.get(0)?, row.get(1)?))
}

/// Why a message was not stored: a retry of a nonce (answered with the earlier message, also if the author may
/// no longer write there: it was stored when they could), or a room that is gone or not theirs.
fn not_stored(tx: &Transaction, message: &NewMessage) -> Result<Result<Stored, Error>, Error> {
    if let Some(nonce) = &message.nonce {
        let earlier = tx
            .prepare_cached(NONCE_LOOKUP)?
            .query_row(params![message.user_id, nonce], |row| {
                Ok(StoredMessage { room: row.get(0)?, id: row.get(1)?, created_at: row.get(2)? })
            })
            .optional()?;
        if let Some(earlier) = earlier {
            return Ok(Ok(Stored::Duplicate(earlier)));
        }
    }
    let exists = tx.prepare_cached("SELECT 1 FROM rooms WHERE id = ?1")?.exists(params![message.room])?;
    Ok(Err(if exists { Error::RoomAccessDenied } else { Error::RoomInvalid }))
}
