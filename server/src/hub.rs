//! Who is connected, and in which rooms: the in-memory side of chat.
//!
//! Each connection has a bounded queue of encoded frames. A room event is encoded once and the same
//! frame is pushed to every member's queue without waiting; a member whose queue is full is a slow reader
//! and is disconnected on purpose, so it never stalls the room. Presence is per user: "entered" when a
//! user's first connection joins a room, "left" when their last one leaves it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
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
            CloseReason::LoggedOut => "the session ended; log in again",
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
    /// Returns whether this was the first reason (the connection was not closing yet).
    pub fn close(&self, reason: CloseReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }

    /// Resolves with the reason once [`Closer::close`] was called.
    pub async fn closed(&self) -> CloseReason {
        self.token.cancelled().await;
        self.reason.get().copied().unwrap_or(CloseReason::Shutdown)
    }
}

/// A frame queued for one connection; a chat message carries its `(room, id)` so that a connection
/// replaying history can drop what it already sent.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Frame,
    pub message: Option<(i64, i64)>,
}

/// What a connection task gets back from [`Hub::register`]; dropping it unregisters the connection,
/// so an upgrade that never completes leaves nothing behind.
pub struct Registration {
    pub id: ConnId,
    pub frames: mpsc::Receiver<Delivery>,
    pub closer: Closer,
    hub: Arc<Hub>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

/// A join that raced a change of rights or rooms: read the database again and retry.
#[derive(Debug, PartialEq, Eq)]
pub struct Stale;

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
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Inner {
    next_id: ConnId,
    /// Bumped by every change of sessions, rights or rooms, so that a registration or a join can tell
    /// whether what it read from the database is still current (see [`Hub::register`], [`Hub::join`]).
    epoch: u64,
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<i64, Members>,
}

struct Conn {
    user_id: i64,
    username: Arc<str>,
    session: Arc<str>,
    is_staff: bool,
    queue: mpsc::Sender<Delivery>,
    closer: Closer,
    rooms: HashSet<i64>,
    /// The hub's, counted as frames are queued (without going back to the hub).
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Members {
    staff_only: bool,
    conns: HashSet<ConnId>,
    /// Connections per user in this room, for per-user presence.
    users: HashMap<i64, usize>,
}

/// What the hub has done since the server started (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Chat messages queued for a socket (one per message and recipient).
    pub messages_delivered: AtomicU64,
    /// Connections closed for reading too slowly.
    pub slow_readers_dropped: AtomicU64,
}

impl Hub {
    pub fn new(queue_capacity: usize, presence_notices: bool) -> Hub {
        let counters = Arc::default();
        Hub { inner: Mutex::default(), queue_capacity: queue_capacity.max(1), presence_notices, counters }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How many rooms have a member on this node.
    pub fn rooms_in_use(&self) -> usize {
        self.lock().rooms.values().filter(|members| !members.conns.is_empty()).count()
    }

    /// Adds a connection of `user` through `session`, authenticated against the database at `epoch`.
    /// [`Stale`] if sessions or rights changed since (a logout may have missed this connection):
    /// authenticate again.
    pub fn register(self: &Arc<Self>, user: &User, session: Arc<str>, epoch: u64) -> Result<Registration, Stale> {
        let (queue, frames) = mpsc::channel(self.queue_capacity);
        let closer = Closer::default();
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return Err(Stale);
        }
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
                counters: self.counters.clone(),
            },
        );
        Ok(Registration { id, frames, closer, hub: self.clone() })
    }

    /// Removes a connection and its memberships, telling each room its user left if it was their last.
    fn unregister(&self, id: ConnId) {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.remove(&id) else {
            return;
        };
        for room in &conn.rooms {
            if let Some(notice) = inner.remove_member(room, id, conn.user_id, &conn.username, self.presence_notices) {
                inner.publish(*room, &notice);
            }
        }
    }

    /// The current epoch: read it before checking a join against the database.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Adds connection `id` to `room`, which the database said at `epoch` the user (staff: `is_staff`) may
    /// enter. If rights or rooms changed since, the join is [`Stale`]: the change's evictions could not see
    /// this connection, so admitting it now could seat a demoted user in a staff-only room. Returns false
    /// if the connection was already a member.
    pub fn join(&self, id: ConnId, room: &Room, is_staff: bool, epoch: u64) -> Result<bool, Stale> {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return Err(Stale);
        }
        let Some(conn) = inner.conns.get_mut(&id) else { return Ok(false) };
        conn.is_staff = is_staff;
        if !conn.rooms.insert(room.id) {
            return Ok(false);
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
            let notice = Event::Presence { msg_type: MSG_ENTER, room: room.id, username: &username }.encode();
            inner.publish(room.id, &notice);
        }
        if let Some(members) = inner.rooms.get_mut(&room.id) {
            members.conns.insert(id);
        }
        Ok(true)
    }

    /// Takes connection `id` out of room `room`.
    pub fn leave(&self, id: ConnId, room: i64) -> Left {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&id) else {
            return Left { was_member: false, notice: None };
        };
        if !conn.rooms.remove(&room) {
            return Left { was_member: false, notice: None };
        }
        let (user_id, username) = (conn.user_id, conn.username.clone());
        let notice = inner.remove_member(&room, id, user_id, &username, self.presence_notices);
        if let Some(notice) = &notice {
            inner.publish(room, notice);
        }
        Left { was_member: true, notice }
    }

    pub fn is_member(&self, id: ConnId, room: i64) -> bool {
        self.lock().conns.get(&id).is_some_and(|c| c.rooms.contains(&room))
    }

    /// Sends `frame` to every connection in `room`.
    pub fn publish(&self, room: i64, frame: &Frame) {
        self.lock().publish(room, frame);
    }

    /// Sends chat message `id`, encoded as `frame`, to every connection in `room`.
    pub fn publish_message(&self, room: i64, id: i64, frame: &Frame) {
        self.lock().deliver(room, &Delivery { frame: frame.clone(), message: Some((room, id)) });
    }

    /// Applies a user's new rights to their open connections: a deactivated user is disconnected, and one
    /// who is no longer staff is taken out of every staff-only room at once.
    pub fn user_changed(&self, user: &User) {
        if !user.is_active {
            self.close_user(user.id, CloseReason::AccountChanged);
            return;
        }
        let mut inner = self.lock();
        inner.epoch += 1;
        for conn in inner.conns.values_mut().filter(|c| c.user_id == user.id) {
            conn.is_staff = user.is_staff;
        }
        if !user.is_staff {
            let denied = (ErrorCode::RoomAccessDenied, "you may no longer be in this staff-only room");
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
            let denied = (ErrorCode::RoomAccessDenied, "this room is now for staff only");
            inner.evict(|id, _, conn| id == room.id && !conn.is_staff, denied, self.presence_notices);
        }
    }

    /// Takes every member out of a deleted room.
    pub fn room_deleted(&self, room: i64) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.evict(|id, _, _| id == room, (ErrorCode::RoomInvalid, "this room was deleted"), false);
        inner.rooms.remove(&room);
    }

    /// Closes every connection of one session (logout).
    pub fn close_session(&self, session: &str) {
        let mut inner = self.lock();
        inner.epoch += 1;
        for conn in inner.conns.values().filter(|c| &*c.session == session) {
            conn.closer.close(CloseReason::LoggedOut);
        }
    }

    /// Closes every connection of `user_id` but those of session `keep` (after a password change).
    pub fn close_other_sessions(&self, user_id: i64, keep: &str) {
        let mut inner = self.lock();
        inner.epoch += 1;
        for conn in inner.conns.values().filter(|c| c.user_id == user_id && &*c.session != keep) {
            conn.closer.close(CloseReason::AccountChanged);
        }
    }

    /// Closes every connection of one user.
    pub fn close_user(&self, user_id: i64, reason: CloseReason) {
        let mut inner = self.lock();
        inner.epoch += 1;
        for conn in inner.conns.values().filter(|c| c.user_id == user_id) {
            conn.closer.close(reason);
        }
    }

    /// Sends `frame` to every connection, in rooms or not.
    pub fn broadcast(&self, frame: &Frame) {
        for conn in self.lock().conns.values() {
            push(conn, Delivery { frame: frame.clone(), message: None });
        }
    }

    /// Sends `frame` to every connection of one user.
    pub fn tell_user(&self, user_id: i64, frame: &Frame) {
        for conn in self.lock().conns.values().filter(|c| c.user_id == user_id) {
            push(conn, Delivery { frame: frame.clone(), message: None });
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
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn publish(&self, room: i64, frame: &Frame) {
        self.deliver(room, &Delivery { frame: frame.clone(), message: None });
    }

    fn deliver(&self, room: i64, delivery: &Delivery) {
        let Some(members) = self.rooms.get(&room) else { return };
        for id in &members.conns {
            if let Some(conn) = self.conns.get(id) {
                push(conn, delivery.clone());
            }
        }
    }

    /// Drops `id` from `room`'s members; returns the "left" notice if that was the user's last connection
    /// there (and notices are on).
    fn remove_member(&mut self, room: &i64, id: ConnId, user_id: i64, username: &str, notices: bool) -> Option<Frame> {
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
        (last && notices).then(|| Event::Presence { msg_type: MSG_LEAVE, room: *room, username }.encode())
    }

    /// Takes each connection out of the rooms that `select(room, members, conn)` picks, telling it why
    /// (`why`, then `leave`) and telling the room who left.
    fn evict(&mut self, select: impl Fn(i64, &Members, &Conn) -> bool, why: (ErrorCode, &str), notices: bool) {
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
            push(conn, Delivery { frame: Event::error(why.0, why.1, Some(room)), message: None });
            push(conn, Delivery { frame: Event::Left { leave: room.to_string() }.encode(), message: None });
            if let Some(notice) = self.remove_member(&room, id, user_id, &username, notices) {
                self.publish(room, &notice);
                if let Some(conn) = self.conns.get(&id) {
                    push(conn, Delivery { frame: notice, message: None });
                }
            }
        }
    }
}

/// Queues `delivery` for `conn` without waiting; a full queue means a slow reader, which is disconnected.
fn push(conn: &Conn, delivery: Delivery) {
    let message = delivery.message.is_some();
    match conn.queue.try_send(delivery) {
        Ok(()) if message => {
            conn.counters.messages_delivered.fetch_add(1, Ordering::Relaxed);
        }
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            if conn.closer.close(CloseReason::SlowReader) {
                conn.counters.slow_readers_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, name: &str, is_staff: bool) -> User {
        User { id, username: name.into(), is_staff, is_admin: false, is_active: true, created_at: 0 }
    }

    fn room(id: i64, staff_only: bool) -> Room {
        Room { id, title: format!("room {id}"), staff_only, ephemeral: false, created_at: 0, last_message_id: 0 }
    }

    fn drain(frames: &mut mpsc::Receiver<Delivery>) -> Vec<String> {
        std::iter::from_fn(|| frames.try_recv().ok()).map(|d| d.frame.as_str().to_owned()).collect()
    }

    #[test]
    fn a_join_that_raced_a_change_of_rights_is_stale_and_admits_nobody() {
        let hub = Arc::new(Hub::new(8, true));
        let sam = user(1, "sam", true);
        let conn = hub.register(&sam, "s1".into(), hub.epoch()).unwrap();
        let read_at = hub.epoch();
        // The admin demotes sam after the join read the database but before it reached the hub.
        hub.user_changed(&User { is_staff: false, ..sam.clone() });
        assert_eq!(hub.join(conn.id, &room(7, true), true, read_at), Err(Stale));
        assert!(!hub.is_member(conn.id, 7));
        assert_eq!(hub.join(conn.id, &room(7, false), false, hub.epoch()), Ok(true), "a fresh read is admitted");
    }

    #[test]
    fn a_registration_that_raced_a_logout_is_stale() {
        let hub = Arc::new(Hub::new(8, true));
        let ann = user(1, "ann", false);
        let read_at = hub.epoch();
        // The session was checked, then logged out before the socket was registered.
        hub.close_session("s1");
        assert!(hub.register(&ann, "s1".into(), read_at).is_err());
        assert_eq!(hub.connections(), 0);
        let conn = hub.register(&ann, "s1".into(), hub.epoch()).unwrap();
        assert_eq!(hub.connections(), 1);
        drop(conn);
        assert_eq!(hub.connections(), 0, "dropping the registration unregisters");
    }

    #[test]
    fn presence_is_per_user_not_per_connection() {
        let hub = Arc::new(Hub::new(8, true));
        let ann = user(1, "ann", false);
        let mut bob = hub.register(&user(2, "bob", false), "b".into(), hub.epoch()).unwrap();
        let (w1, w2) = (
            hub.register(&ann, "a".into(), hub.epoch()).unwrap(),
            hub.register(&ann, "a".into(), hub.epoch()).unwrap(),
        );
        let lobby = room(1, false);
        hub.join(bob.id, &lobby, false, hub.epoch()).unwrap();
        hub.join(w1.id, &lobby, false, hub.epoch()).unwrap();
        hub.join(w2.id, &lobby, false, hub.epoch()).unwrap();
        assert_eq!(drain(&mut bob.frames), [r#"{"msg_type":4,"room":1,"username":"ann"}"#]);
        assert_eq!(hub.leave(w1.id, 1), Left { was_member: true, notice: None });
        drop(w2);
        assert_eq!(drain(&mut bob.frames), [r#"{"msg_type":5,"room":1,"username":"ann"}"#]);
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_slow_reader_and_spares_the_others() {
        let hub = Arc::new(Hub::new(2, false));
        let slow = hub.register(&user(1, "slow", false), "s".into(), hub.epoch()).unwrap();
        let mut quick = hub.register(&user(2, "quick", false), "q".into(), hub.epoch()).unwrap();
        for conn in [slow.id, quick.id] {
            hub.join(conn, &room(1, false), false, hub.epoch()).unwrap();
        }
        for n in 0..3 {
            hub.publish(1, &Frame::from(format!("frame {n}")));
            drain(&mut quick.frames);
        }
        assert_eq!(slow.closer.closed().await, CloseReason::SlowReader);
        assert!(!quick.closer.token.is_cancelled());
    }

    #[test]
    fn demotion_takes_a_user_out_of_staff_only_rooms_only() {
        let hub = Arc::new(Hub::new(8, true));
        let sam = user(1, "sam", true);
        let mut conn = hub.register(&sam, "s".into(), hub.epoch()).unwrap();
        hub.join(conn.id, &room(1, true), true, hub.epoch()).unwrap();
        hub.join(conn.id, &room(2, false), true, hub.epoch()).unwrap();
        hub.user_changed(&User { is_staff: false, ..sam });
        assert!(!hub.is_member(conn.id, 1));
        assert!(hub.is_member(conn.id, 2));
        let frames = drain(&mut conn.frames);
        assert!(frames[0].contains("ROOM_ACCESS_DENIED"), "{frames:?}");
        assert_eq!(frames[1], r#"{"leave":"1"}"#);
    }
}
