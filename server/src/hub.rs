//! Who is connected, and in which rooms: the in-memory side of chat.
//!
//! Each connection has a bounded queue of encoded frames. A room event is encoded once and the same
//! frame is pushed to every member's queue without waiting; a member whose queue is full is a slow reader
//! and is disconnected on purpose, so it never stalls the room. Presence is per user: "entered" when a
//! user's first connection joins a room, "left" when their last one leaves it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::{Room, User};
use crate::protocol::{ErrorCode, Event, Frame, MSG_ENTER, MSG_LEAVE};

/// Identifies one WebSocket connection.
pub type ConnId = u64;

/// Why the server is closing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down (close code 1001).
    Shutdown,
    /// The client did not read its frames fast enough (1008).
    SlowReader,
    /// The session was logged out or expired (4001).
    LoggedOut,
    /// The account was deactivated, deleted or had its password reset (4003).
    AccountChanged,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Shutdown => 1001,
            CloseReason::SlowReader => 1008,
            CloseReason::LoggedOut => 4001,
            CloseReason::AccountChanged => 4003,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "server shutting down",
            CloseReason::SlowReader => "too slow reading messages",
            CloseReason::LoggedOut => "logged out",
            CloseReason::AccountChanged => "account changed; log in again",
        }
    }
}

/// Tells one connection's task to close, and why; the first reason wins.
#[derive(Debug, Clone, Default)]
pub struct Closer {
    token: CancellationToken,
    reason: Arc<OnceLock<CloseReason>>,
}

impl Closer {
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Resolves with the reason once [`Closer::close`] was called.
    pub async fn closed(&self) -> CloseReason {
        self.token.cancelled().await;
        self.reason.get().copied().unwrap_or(CloseReason::Shutdown)
    }
}

/// What a connection task gets back from [`Hub::register`].
pub struct Registration {
    pub id: ConnId,
    pub frames: mpsc::Receiver<Frame>,
    pub closer: Closer,
}

/// What [`Hub::leave`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Left {
    pub was_member: bool,
    /// The "left" notice, when this was the user's last connection in the room: the caller sends it to
    /// itself after its `leave` reply (the others already have it).
    pub notice: Option<Frame>,
}

/// The registry of connections and room memberships of this server process.
pub struct Hub {
    inner: Mutex<Inner>,
    queue_capacity: usize,
    presence_notices: bool,
}

#[derive(Default)]
struct Inner {
    next_id: ConnId,
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<i64, Members>,
}

struct Conn {
    user_id: i64,
    username: Arc<str>,
    session: Arc<str>,
    is_staff: bool,
    queue: mpsc::Sender<Frame>,
    closer: Closer,
    rooms: HashSet<i64>,
}

#[derive(Default)]
struct Members {
    staff_only: bool,
    conns: HashSet<ConnId>,
    /// Connections per user in this room, for per-user presence.
    users: HashMap<i64, usize>,
}

impl Hub {
    pub fn new(queue_capacity: usize, presence_notices: bool) -> Hub {
        Hub {
            inner: Mutex::default(),
            queue_capacity: queue_capacity.max(1),
            presence_notices,
        }
    }

    /// Adds a connection of `user` through `session`.
    pub fn register(&self, user: &User, session: Arc<str>) -> Registration {
        let (queue, frames) = mpsc::channel(self.queue_capacity);
        let closer = Closer::default();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.conns.insert(
            id,
            Conn {
                user_id: user.id,
                username: user.username.as_str().into(),
                session,
                is_staff: user.is_staff,
                queue,
                closer: closer.clone(),
                rooms: HashSet::new(),
            },
        );
        Registration { id, frames, closer }
    }

    /// Removes a connection and its memberships, telling each room its user left if it was their last.
    pub fn unregister(&self, id: ConnId) {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.remove(&id) else {
            return;
        };
        for room in &conn.rooms {
            if let Some(notice) = inner.remove_member(
                room,
                id,
                conn.user_id,
                &conn.username,
                self.presence_notices,
            ) {
                inner.publish(*room, &notice);
            }
        }
    }

    /// Adds connection `id` to `room` (already checked against the user's rights). Returns false if it
    /// was already a member.
    pub fn join(&self, id: ConnId, room: &Room) -> bool {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&id) else {
            return false;
        };
        if !conn.rooms.insert(room.id) {
            return false;
        }
        let (user_id, username) = (conn.user_id, conn.username.clone());
        let members = inner.rooms.entry(room.id).or_default();
        members.staff_only = room.staff_only;
        let first = {
            let count = members.users.entry(user_id).or_default();
            *count += 1;
            *count == 1
        };
        if first && self.presence_notices {
            let notice = Event::Presence {
                msg_type: MSG_ENTER,
                room: room.id,
                username: &username,
            }
            .encode();
            inner.publish(room.id, &notice);
        }
        if let Some(members) = inner.rooms.get_mut(&room.id) {
            members.conns.insert(id);
        }
        true
    }

    /// Takes connection `id` out of room `room`.
    pub fn leave(&self, id: ConnId, room: i64) -> Left {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&id) else {
            return Left {
                was_member: false,
                notice: None,
            };
        };
        if !conn.rooms.remove(&room) {
            return Left {
                was_member: false,
                notice: None,
            };
        }
        let (user_id, username) = (conn.user_id, conn.username.clone());
        let notice = inner.remove_member(&room, id, user_id, &username, self.presence_notices);
        if let Some(notice) = &notice {
            inner.publish(room, notice);
        }
        Left {
            was_member: true,
            notice,
        }
    }

    pub fn is_member(&self, id: ConnId, room: i64) -> bool {
        self.lock()
            .conns
            .get(&id)
            .is_some_and(|c| c.rooms.contains(&room))
    }

    /// Sends `frame` to every connection in `room`.
    pub fn publish(&self, room: i64, frame: &Frame) {
        self.lock().publish(room, frame);
    }

    /// Applies a user's new rights to their open connections: a deactivated user is disconnected, and one
    /// who is no longer staff is taken out of every staff-only room at once.
    pub fn user_changed(&self, user: &User) {
        if !user.is_active {
            self.close_user(user.id, CloseReason::AccountChanged);
            return;
        }
        let mut inner = self.lock();
        for conn in inner.conns.values_mut().filter(|c| c.user_id == user.id) {
            conn.is_staff = user.is_staff;
        }
        if !user.is_staff {
            let denied = (
                ErrorCode::RoomAccessDenied,
                "you may no longer be in this staff-only room",
            );
            inner.evict(
                |_, members, conn| members.staff_only && conn.user_id == user.id,
                denied,
                self.presence_notices,
            );
        }
    }

    /// Applies a room's new flags: when it becomes staff-only, non-staff members are taken out.
    pub fn room_changed(&self, room: &Room) {
        let mut inner = self.lock();
        let Some(members) = inner.rooms.get_mut(&room.id) else {
            return;
        };
        members.staff_only = room.staff_only;
        if room.staff_only {
            let denied = (
                ErrorCode::RoomAccessDenied,
                "this room is now for staff only",
            );
            inner.evict(
                |id, _, conn| id == room.id && !conn.is_staff,
                denied,
                self.presence_notices,
            );
        }
    }

    /// Takes every member out of a deleted room.
    pub fn room_deleted(&self, room: i64) {
        let mut inner = self.lock();
        inner.evict(
            |id, _, _| id == room,
            (ErrorCode::RoomInvalid, "this room was deleted"),
            false,
        );
        inner.rooms.remove(&room);
    }

    /// Closes every connection of one session (logout).
    pub fn close_session(&self, session: &str) {
        for conn in self
            .lock()
            .conns
            .values()
            .filter(|c| &*c.session == session)
        {
            conn.closer.close(CloseReason::LoggedOut);
        }
    }

    /// Closes every connection of `user_id` but those of session `keep` (after a password change).
    pub fn close_other_sessions(&self, user_id: i64, keep: &str) {
        for conn in self
            .lock()
            .conns
            .values()
            .filter(|c| c.user_id == user_id && &*c.session != keep)
        {
            conn.closer.close(CloseReason::AccountChanged);
        }
    }

    /// Closes every connection of one user.
    pub fn close_user(&self, user_id: i64, reason: CloseReason) {
        for conn in self.lock().conns.values().filter(|c| c.user_id == user_id) {
            conn.closer.close(reason);
        }
    }

    /// Closes every connection (server shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for conn in self.lock().conns.values() {
            conn.closer.close(reason);
        }
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in a critical section can panic half-way and leave the maps inconsistent in a way that
        // matters more than staying up, so a poisoned lock is taken over rather than propagated.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn publish(&self, room: i64, frame: &Frame) {
        let Some(members) = self.rooms.get(&room) else {
            return;
        };
        for id in &members.conns {
            if let Some(conn) = self.conns.get(id) {
                push(conn, frame.clone());
            }
        }
    }

    /// Drops `id` from `room`'s members; returns the "left" notice if that was the user's last connection
    /// there (and notices are on).
    fn remove_member(
        &mut self,
        room: &i64,
        id: ConnId,
        user_id: i64,
        username: &str,
        notices: bool,
    ) -> Option<Frame> {
        let members = self.rooms.get_mut(room)?;
        members.conns.remove(&id);
        let last = match members.users.get_mut(&user_id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                members.users.remove(&user_id);
                true
            }
            None => false,
        };
        if members.conns.is_empty() {
            self.rooms.remove(room);
        }
        (last && notices).then(|| {
            Event::Presence {
                msg_type: MSG_LEAVE,
                room: *room,
                username,
            }
            .encode()
        })
    }

    /// Takes each connection out of the rooms that `select(room, members, conn)` picks, telling it why
    /// (`why`, then `leave`) and telling the room who left.
    fn evict(
        &mut self,
        select: impl Fn(i64, &Members, &Conn) -> bool,
        why: (ErrorCode, &str),
        notices: bool,
    ) {
        let mut evicted = Vec::new();
        for (id, conn) in &self.conns {
            for room in &conn.rooms {
                if self.rooms.get(room).is_some_and(|m| select(*room, m, conn)) {
                    evicted.push((*id, *room));
                }
            }
        }
        for (id, room) in evicted {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.rooms.remove(&room);
            let (user_id, username) = (conn.user_id, conn.username.clone());
            push(conn, Event::error(why.0, why.1, Some(room)));
            push(
                conn,
                Event::Left {
                    leave: room.to_string(),
                }
                .encode(),
            );
            if let Some(notice) = self.remove_member(&room, id, user_id, &username, notices) {
                self.publish(room, &notice);
                if let Some(conn) = self.conns.get(&id) {
                    push(conn, notice);
                }
            }
        }
    }
}

/// Queues `frame` for `conn` without waiting; a full queue means a slow reader, which is disconnected.
fn push(conn: &Conn, frame: Frame) {
    if let Err(mpsc::error::TrySendError::Full(_)) = conn.queue.try_send(frame) {
        conn.closer.close(CloseReason::SlowReader);
    }
}
