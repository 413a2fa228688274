//! Who is connected, and in which rooms: the in-memory side of chat.
//!
//! Each connection has a bounded queue of encoded frames. A room event is encoded once and the same
//! frame is pushed to every member's queue without waiting; a member whose queue is full is a slow reader
//! and is disconnected on purpose, so it never stalls the room. Presence is per user and across nodes
//! (see [`presence`]): "entered" when a user's first connection anywhere joins a room, "left" when their
//! last one leaves it.
//!
//! With several nodes, every change a node makes to its own connections is also sent out as a [`Change`]
//! (through Redis, by [`crate::cluster`]) and the other nodes [`Hub::apply`] it to theirs. Chat messages are
//! released to a room's members in id order whichever node they come from (see [`order`]).

mod change;
pub mod order;
pub mod presence;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroI64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub use change::Change;
use order::{Order, Released};
pub use presence::{Member, NodeId, Transition};
use presence::{Presence, NODE_TTL};

use crate::db::{Room, User};
use crate::protocol::{ErrorCode, Event, Frame, MSG_ENTER, MSG_LEAVE, TYPING_TTL_MS};

/// How long a message that came before its turn waits for the ones before it, before they are read from
/// the database. Two nodes' messages cross in well under a millisecond; this is for a node that stalls.
pub const REORDER_WAIT: Duration = Duration::from_millis(200);

/// Identifies one WebSocket connection.
pub type ConnId = u64;

/// Why the server is closing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
///
/// The task holds the other end, [`Registration::closed`]: a oneshot receiver, polled at every wake-up of the
/// socket, costs an atomic load there (a cancellation token would take a lock each time).
#[derive(Debug, Clone)]
pub struct Closer(Arc<Mutex<Option<oneshot::Sender<CloseReason>>>>);

impl Closer {
    fn new() -> (Closer, oneshot::Receiver<CloseReason>) {
        let (tell, closed) = oneshot::channel();
        (Closer(Arc::new(Mutex::new(Some(tell)))), closed)
    }

    /// Returns whether this was the first reason (the connection was not closing yet).
    pub fn close(&self, reason: CloseReason) -> bool {
        let tell = unpoisoned(&self.0).take();
        tell.map(|tell| tell.send(reason)).is_some()
    }
}

/// A frame queued for one connection; a chat message (or a gap notice) carries its room and id (for a gap,
/// the last id it covers) so that a connection replaying history can drop what it already sent.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Frame,
    pub message: Option<MessageRef>,
}

/// Which message a [`Delivery`] is. The room is never 0 (ids start at 1 on both backends), and that niche makes
/// a `Delivery` 48 bytes instead of 56: every socket's queue allocates its first block of 32 of them when the
/// socket opens, so that is 256 bytes of every idle socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef {
    room: NonZeroI64,
    pub id: i64,
}

impl MessageRef {
    /// `None` for room 0, which no room has (a delivery without a reference is never dropped as already replayed).
    pub fn new(room: i64, id: i64) -> Option<MessageRef> {
        Some(MessageRef { room: NonZeroI64::new(room)?, id })
    }

    pub fn room(&self) -> i64 {
        self.room.get()
    }
}

/// What a connection task gets back from [`Hub::register`]; dropping it unregisters the connection,
/// so an upgrade that never completes leaves nothing behind.
pub struct Registration {
    pub id: ConnId,
    pub frames: mpsc::Receiver<Delivery>,
    /// Resolves with the reason the server closes this connection for (see [`Closer`]).
    pub closed: oneshot::Receiver<CloseReason>,
    /// The rooms it is in, to check a send against without the hub's lock.
    pub joined: Joined,
    hub: Arc<Hub>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

/// The rooms one connection is in. The hub changes it (under its own lock); the connection's task reads it at
/// every send, and must not wait for the hub's lock there: the lock is held while a message is sequenced, and
/// a runtime worker blocked on it stalls every connection it runs.
#[derive(Debug, Clone, Default)]
pub struct Joined(Arc<Mutex<HashSet<i64>>>);

impl Joined {
    pub fn contains(&self, room: i64) -> bool {
        unpoisoned(&self.0).contains(&room)
    }

    fn insert(&self, room: i64) -> bool {
        unpoisoned(&self.0).insert(room)
    }

    fn remove(&self, room: i64) -> bool {
        unpoisoned(&self.0).remove(&room)
    }

    fn all(&self) -> Vec<i64> {
        unpoisoned(&self.0).iter().copied().collect()
    }
}

/// A command for a room the connection has not joined.
#[derive(Debug, PartialEq, Eq)]
pub struct NotMember;

/// A join that raced a change of rights or rooms: read the database again and retry.
#[derive(Debug, PartialEq, Eq)]
pub struct Stale;

/// What [`Hub::join`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Seat {
    /// False if the connection was in the room already.
    pub new: bool,
    /// Who is in the room now, the joiner included, by name (sorted); `None` when presence is turned off.
    pub members: Option<Vec<Arc<str>>>,
}

/// What [`Hub::leave`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Left {
    pub was_member: bool,
    /// The "left" notice, when this was the user's last connection in the room on any node: the caller sends
    /// it to itself after its `leave` reply (the others already have it).
    pub notice: Option<Frame>,
}

/// A request to read a room's messages from the database: those missing before the ones held early, or
/// (`latest`) everything newer than the members have, after this node was cut off from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    pub room: i64,
    pub latest: bool,
    /// Not before then: the missing messages may still arrive on their own.
    pub not_before: Instant,
}

/// The registry of connections and room memberships of this server process.
pub struct Hub {
    inner: Mutex<Inner>,
    queue_capacity: usize,
    presence_notices: bool,
    counters: Arc<Counters>,
    catch_up: mpsc::UnboundedSender<CatchUp>,
}

#[derive(Default)]
struct Inner {
    /// Where changes go out to the other nodes, once this node is part of a cluster.
    relay: Option<mpsc::Sender<Change>>,
    /// The hub's, counted inside the lock as frames are queued and changes relayed.
    counters: Arc<Counters>,
    next_id: ConnId,
    /// Set once the server is shutting down: a connection registered after that is closed at once.
    closing: Option<CloseReason>,
    /// Bumped by every change of sessions, rights or rooms, so that a registration or a join can tell
    /// whether what it read from the database is still current (see [`Hub::register`], [`Hub::join`]).
    epoch: u64,
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<i64, Members>,
    presence: Presence,
}

struct Conn {
    user_id: i64,
    username: Arc<str>,
    session: Arc<str>,
    is_staff: bool,
    outlet: Outlet,
    rooms: Joined,
}

/// Where a connection's frames go, and how to close it when they cannot.
#[derive(Clone)]
struct Outlet {
    queue: mpsc::Sender<Delivery>,
    closer: Closer,
}

struct Members {
    staff_only: bool,
    order: Order,
    seats: Seats,
}

/// Each of a room's member connections here, with its outlet (so that a fan-out needs no lookup per member),
/// behind a lock of the room's own. The hub's lock is not held while a message is pushed to a thousand queues
/// (see [`Hub::publish_message`]): the room's is taken while the hub's is still held, so that each room's
/// frames go out in the order the hub released them, and the hub's is let go before the pushes. Lock order:
/// the hub's, then a room's; nothing takes the hub's while holding a room's.
#[derive(Default)]
struct Seats(Arc<Mutex<HashMap<ConnId, Outlet>>>);

impl Seats {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConnId, Outlet>> {
        unpoisoned(&self.0)
    }
}

/// What the hub has done since the server started (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Chat messages queued for a socket (one per message and recipient).
    pub messages_delivered: AtomicU64,
    /// Connections closed for reading too slowly.
    pub slow_readers_dropped: AtomicU64,
    /// Changes not sent to the other nodes because the way to Redis was jammed (they catch up from the
    /// database instead).
    pub relay_dropped: AtomicU64,
}

impl Hub {
    /// A hub, and the catch-up requests it will make: hand them to [`crate::catch_up::run`].
    pub fn new(queue_capacity: usize, presence_notices: bool) -> (Arc<Hub>, mpsc::UnboundedReceiver<CatchUp>) {
        let (catch_up, requests) = mpsc::unbounded_channel();
        let counters = Arc::<Counters>::default();
        let hub = Hub {
            inner: Mutex::new(Inner { counters: counters.clone(), ..Inner::default() }),
            queue_capacity: queue_capacity.max(1),
            presence_notices,
            counters,
            catch_up,
        };
        (Arc::new(hub), requests)
    }

    /// From now on, sends every change to this node's connections out through `relay` as well.
    pub fn relay_to(&self, relay: mpsc::Sender<Change>) {
        self.lock().relay = Some(relay);
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How many rooms have a member on this node.
    pub fn rooms_in_use(&self) -> usize {
        self.lock().rooms.values().filter(|members| !members.seats.lock().is_empty()).count()
    }

    /// Adds a connection of `user` through `session`, authenticated against the database at `epoch`.
    /// [`Stale`] if sessions or rights changed since (a logout may have missed this connection):
    /// authenticate again.
    pub fn register(self: &Arc<Self>, user: &User, session: Arc<str>, epoch: u64) -> Result<Registration, Stale> {
        let (queue, frames) = mpsc::channel(self.queue_capacity);
        let (closer, closed) = Closer::new();
        let joined = Joined::default();
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return Err(Stale);
        }
        if let Some(reason) = inner.closing {
            closer.close(reason);
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
                outlet: Outlet { queue, closer },
                rooms: joined.clone(),
            },
        );
        Ok(Registration { id, frames, closed, joined, hub: self.clone() })
    }

    /// Removes a connection and its memberships, telling each room its user left if it was their last.
    fn unregister(&self, id: ConnId) {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.remove(&id) else {
            return;
        };
        for room in conn.rooms.all() {
            inner.remove_member(&room, id, conn.user_id, &conn.username, self.presence_notices);
        }
    }

    /// The current epoch: read it before checking a join against the database.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Adds connection `id` to `room`, which the database said at `epoch` the user (staff: `is_staff`) may
    /// enter. If rights or rooms changed since, the join is [`Stale`]: the change's evictions could not see
    /// this connection, so admitting it now could seat a demoted user in a staff-only room.
    pub fn join(&self, id: ConnId, room: &Room, is_staff: bool, epoch: u64) -> Result<Seat, Stale> {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return Err(Stale);
        }
        let Some(conn) = inner.conns.get_mut(&id) else { return Ok(Seat { new: false, members: None }) };
        conn.is_staff = is_staff;
        let new = conn.rooms.insert(room.id);
        if new {
            let (user_id, username, outlet) = (conn.user_id, conn.username.clone(), conn.outlet.clone());
            // The first member on this node starts the room's order where the database was when it was read:
            // what came before is history to them.
            let members = inner.rooms.entry(room.id).or_insert_with(|| Members {
                staff_only: room.staff_only,
                order: Order::after(room.last_message_id),
                seats: Seats::default(),
            });
            members.staff_only = room.staff_only;
            let (first_here, entered) = inner.presence.enter_local(room.id, user_id, &username);
            if first_here {
                inner.relay(|| Change::Member {
                    member: Member { room: room.id, user: user_id, username: username.clone() },
                    here: true,
                });
            }
            // Told before the joiner is a member: the room hears that they entered, they themselves do not.
            if entered && self.presence_notices {
                inner.announce(&Transition { room: room.id, username, entered: true });
            }
            if let Some(members) = inner.rooms.get_mut(&room.id) {
                members.seats.lock().insert(id, outlet);
            }
        }
        let members = self.presence_notices.then(|| inner.presence.names(room.id));
        Ok(Seat { new, members })
    }

    /// Takes connection `id` out of room `room`.
    pub fn leave(&self, id: ConnId, room: i64) -> Left {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&id) else {
            return Left { was_member: false, notice: None };
        };
        if !conn.rooms.remove(room) {
            return Left { was_member: false, notice: None };
        }
        let (user_id, username) = (conn.user_id, conn.username.clone());
        let notice = inner.remove_member(&room, id, user_id, &username, self.presence_notices);
        Left { was_member: true, notice }
    }

    /// Sends chat message `id` of `room`, just stored by this node and encoded as `frame`, to every member
    /// on every node.
    pub fn publish_message(&self, room: i64, id: i64, frame: &Frame) {
        let inner = self.lock();
        inner.relay(|| Change::Message { room, id, frame: frame.to_string() });
        self.sequence_and_unlock(inner, room, id, frame.clone());
    }

    /// Applies a user's new rights to their open connections: a deactivated user is disconnected, and one
    /// who is no longer staff is taken out of every staff-only room at once.
    pub fn user_changed(&self, user: &User) {
        self.change(Change::UserChanged { user: user.id, is_staff: user.is_staff, is_active: user.is_active });
    }

    /// Applies a room's new flags: when it becomes staff-only, non-staff members are taken out.
    pub fn room_changed(&self, room: &Room) {
        self.change(Change::RoomChanged { room: room.id, staff_only: room.staff_only });
    }

    /// Takes every member out of a deleted room.
    pub fn room_deleted(&self, room: i64) {
        self.change(Change::RoomDeleted { room });
    }

    /// Closes every connection of one session (logout).
    pub fn close_session(&self, session: &str) {
        self.change(Change::CloseSession { session: session.to_owned() });
    }

    /// Closes every connection of `user_id` but those of session `keep` (after a password change).
    pub fn close_other_sessions(&self, user_id: i64, keep: &str) {
        self.change(Change::CloseOtherSessions { user: user_id, keep: keep.to_owned() });
    }

    /// Closes every connection of one user.
    pub fn close_user(&self, user_id: i64, reason: CloseReason) {
        self.change(Change::CloseUser { user: user_id, reason });
    }

    /// Sends `frame` to every connection, in rooms or not.
    pub fn broadcast(&self, frame: &Frame) {
        self.change(Change::Broadcast { frame: frame.to_string() });
    }

    /// Sends `frame` to every connection of one user.
    pub fn tell_user(&self, user_id: i64, frame: &Frame) {
        self.change(Change::TellUser { user: user_id, frame: frame.to_string() });
    }

    /// Makes a change here and sends it to the other nodes.
    fn change(&self, change: Change) {
        let mut inner = self.lock();
        inner.relay(|| change.clone());
        self.apply_locked(&mut inner, change);
    }

    /// Applies a change to this node's connections as if another node had made it (after checking them
    /// against the database, say).
    pub fn apply(&self, change: Change) {
        let mut inner = self.lock();
        self.apply_locked(&mut inner, change);
    }

    /// Applies a change node `node` made (see [`Change`]) to this node's connections and to what this
    /// node knows of who is where.
    pub fn apply_from(&self, node: &str, change: Change) {
        let mut inner = self.lock();
        let now = Instant::now();
        let known = inner.presence.heard(node, now);
        // A node first heard of (new, or forgotten after a silence) is asked for its members.
        if !known && !matches!(change, Change::Snapshot { .. } | Change::Hello) {
            inner.relay(|| Change::Hello);
        }
        let transitions = match change {
            Change::Member { member, here } => inner.presence.remote(node, member, here, now).into_iter().collect(),
            Change::Snapshot { members } => inner.presence.replace(node, members, now),
            Change::Hello => {
                let members = inner.presence.local_members();
                inner.relay(|| Change::Snapshot { members });
                Vec::new()
            }
            // The hot path of a cluster: pushed to the members without the hub's lock, as for this node's own.
            Change::Message { room, id, frame } => return self.sequence_and_unlock(inner, room, id, frame.into()),
            other => {
                self.apply_locked(&mut inner, other);
                Vec::new()
            }
        };
        self.announce_all(&inner, &transitions);
    }

    /// Tells the other nodes who is here, and asks for theirs: when this node (re)joins them.
    pub fn introduce(&self) {
        let inner = self.lock();
        let members = inner.presence.local_members();
        inner.relay(|| Change::Snapshot { members });
        inner.relay(|| Change::Hello);
    }

    /// Forgets the other nodes not heard from for [`presence::NODE_TTL`]: their users leave the rooms where
    /// no other connection holds them.
    pub fn expire_nodes(&self) {
        let mut inner = self.lock();
        let Some(cutoff) = Instant::now().checked_sub(NODE_TTL) else { return };
        let transitions = inner.presence.expire(cutoff);
        self.announce_all(&inner, &transitions);
    }

    /// How many other nodes this node knows to be alive.
    pub fn nodes_alive(&self) -> usize {
        self.lock().presence.nodes()
    }

    /// Who is in `room`, on any node, by name (sorted).
    pub fn members(&self, room: i64) -> Vec<Arc<str>> {
        self.lock().presence.names(room)
    }

    fn announce_all(&self, inner: &Inner, transitions: &[Transition]) {
        if self.presence_notices {
            for transition in transitions {
                inner.announce(transition);
            }
        }
    }

    /// Tells `room`, here and on the other nodes, that connection `id`'s user is typing, unless the
    /// connection is not in the room. The user's own connections are not told.
    pub fn typing(&self, id: ConnId, room: i64) -> Result<(), NotMember> {
        let inner = self.lock();
        let conn = inner.conns.get(&id).filter(|c| c.rooms.contains(room)).ok_or(NotMember)?;
        let frame =
            Event::Typing { typing: room.to_string(), username: &conn.username, ttl_ms: TYPING_TTL_MS }.encode();
        let user = conn.user_id;
        inner.relay(|| Change::Typing { room, user, frame: frame.to_string() });
        inner.tell_room_but(room, user, &frame);
        Ok(())
    }

    fn apply_locked(&self, inner: &mut Inner, change: Change) {
        let notices = self.presence_notices;
        match change {
            Change::Message { room, id, frame } => self.sequence(inner, room, id, frame.into()),
            Change::Typing { room, user, frame } => inner.tell_room_but(room, user, &frame.into()),
            // Only meaningful coming from a node (see `apply_from`).
            Change::Member { .. } | Change::Snapshot { .. } | Change::Hello | Change::Alive => {}
            Change::UserChanged { user, is_active: false, .. } => {
                inner.close_where(|c| c.user_id == user, CloseReason::AccountChanged);
            }
            Change::UserChanged { user, is_staff, is_active: true } => {
                inner.epoch += 1;
                for conn in inner.conns.values_mut().filter(|c| c.user_id == user) {
                    conn.is_staff = is_staff;
                }
                if !is_staff {
                    let denied = (ErrorCode::RoomAccessDenied, "you may no longer be in this staff-only room");
                    inner.evict(|_, members, conn| members.staff_only && conn.user_id == user, denied, notices);
                }
            }
            Change::RoomChanged { room, staff_only } => {
                let Some(members) = inner.rooms.get_mut(&room) else {
                    return;
                };
                members.staff_only = staff_only;
                if staff_only {
                    let denied = (ErrorCode::RoomAccessDenied, "this room is now for staff only");
                    inner.evict(|id, _, conn| id == room && !conn.is_staff, denied, notices);
                }
            }
            Change::RoomDeleted { room } => {
                inner.epoch += 1;
                inner.evict(|id, _, _| id == room, (ErrorCode::RoomInvalid, "this room was deleted"), false);
                inner.rooms.remove(&room);
            }
            Change::CloseSession { session } => {
                inner.close_where(|c| *c.session == *session, CloseReason::LoggedOut);
            }
            Change::CloseOtherSessions { user, keep } => {
                inner.close_where(|c| c.user_id == user && *c.session != *keep, CloseReason::AccountChanged);
            }
            Change::CloseUser { user, reason } => inner.close_where(|c| c.user_id == user, reason),
            Change::Broadcast { frame } => inner.tell_where(|_| true, frame.into()),
            Change::TellUser { user, frame } => inner.tell_where(|c| c.user_id == user, frame.into()),
        }
    }

    /// Releases message `id` of `room` to the room's members on this node when its turn comes, and asks
    /// for a catch-up from the database when it came early.
    fn sequence(&self, inner: &mut Inner, room: i64, id: i64, frame: Frame) {
        let Some(members) = inner.rooms.get_mut(&room) else { return };
        let mut released = Vec::new();
        members.order.accept(id, frame, &mut released);
        self.await_missing(room, &mut members.order, &mut released);
        release(&members.seats.lock(), room, released, &self.counters);
    }

    /// [`Hub::sequence`], pushing what it releases after letting go of the hub's lock (see [`Seats`]).
    fn sequence_and_unlock(&self, mut inner: MutexGuard<'_, Inner>, room: i64, id: i64, frame: Frame) {
        let Some(members) = inner.rooms.get_mut(&room) else { return };
        let mut released = Vec::new();
        members.order.accept(id, frame, &mut released);
        self.await_missing(room, &mut members.order, &mut released);
        if released.is_empty() {
            return;
        }
        let seats = members.seats.0.clone();
        let seated = unpoisoned(&seats);
        drop(inner);
        release(&seated, room, released, &self.counters);
    }

    /// When `order` holds messages waiting for missing ones, asks (once) for those to be read from the
    /// database after [`REORDER_WAIT`]; with nobody there to read them, gives the gap up at once.
    fn await_missing(&self, room: i64, order: &mut Order, released: &mut Vec<Released>) {
        if !order.waiting() || order.catching_up {
            return;
        }
        let request = CatchUp { room, latest: false, not_before: Instant::now() + REORDER_WAIT };
        if self.catch_up.send(request).is_ok() {
            order.catching_up = true;
        } else {
            order.fill([], None, released);
        }
    }

    /// Where `room`'s members on this node are (the last message id released to them), if a catch-up
    /// is still wanted: `latest`, or messages are held waiting for missing ones.
    pub fn catch_up_from(&self, room: i64, latest: bool) -> Option<i64> {
        let mut inner = self.lock();
        let order = &mut inner.rooms.get_mut(&room)?.order;
        if latest || order.waiting() {
            Some(order.position())
        } else {
            order.catching_up = false;
            None
        }
    }

    /// Hands `room` the messages read from the database for a catch-up: `found`, and the room's newest id
    /// then (`None` if the database could not be read).
    pub fn caught_up(&self, room: i64, found: Vec<(i64, Frame)>, newest: Option<i64>) {
        let mut inner = self.lock();
        let Some(members) = inner.rooms.get_mut(&room) else { return };
        let mut released = Vec::new();
        members.order.catching_up = false;
        members.order.fill(found, newest.map(|n| n + 1), &mut released);
        self.await_missing(room, &mut members.order, &mut released);
        release(&members.seats.lock(), room, released, &self.counters);
    }

    /// Asks for every room with members here to catch up with the database (after this node was cut off
    /// from the others, whose messages it may have missed).
    pub fn catch_up_everything(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        for (&room, members) in &mut inner.rooms {
            members.order.catching_up = self.catch_up.send(CatchUp { room, latest: true, not_before: now }).is_ok();
        }
    }

    /// The sessions, users and rooms this node's connections depend on (to check them again against the
    /// database after changes to them may have been missed).
    pub fn subjects(&self) -> Subjects {
        let inner = self.lock();
        let mut sessions: Vec<Arc<str>> = inner.conns.values().map(|c| c.session.clone()).collect();
        sessions.sort();
        sessions.dedup();
        let mut users: Vec<i64> = inner.conns.values().map(|c| c.user_id).collect();
        users.sort_unstable();
        users.dedup();
        Subjects { sessions, users, rooms: inner.rooms.keys().copied().collect() }
    }

    /// Closes every connection, and from now on every new one at once (server shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let mut inner = self.lock();
        inner.closing = Some(reason);
        for conn in inner.conns.values() {
            conn.outlet.closer.close(reason);
        }
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        unpoisoned(&self.inner)
    }
}

/// Locks `mutex`. Nothing in the hub's critical sections can panic half-way and leave its maps inconsistent
/// in a way that matters more than staying up, so a poisoned lock is taken over rather than propagated.
fn unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// See [`Hub::subjects`].
#[derive(Debug, Default)]
pub struct Subjects {
    /// Session hashes.
    pub sessions: Vec<Arc<str>>,
    pub users: Vec<i64>,
    pub rooms: Vec<i64>,
}

impl Inner {
    fn publish(&self, room: i64, frame: &Frame) {
        let Some(members) = self.rooms.get(&room) else { return };
        for outlet in members.seats.lock().values() {
            push(outlet, Delivery { frame: frame.clone(), message: None }, &self.counters);
        }
    }

    /// Tells this node's members of a room that a user entered or left it; returns the notice.
    fn announce(&self, transition: &Transition) -> Frame {
        let msg_type = if transition.entered { MSG_ENTER } else { MSG_LEAVE };
        let notice = Event::Presence { msg_type, room: transition.room, username: &transition.username }.encode();
        self.publish(transition.room, &notice);
        notice
    }

    /// Sends a change to the other nodes, if there are any; `change` is only built then. When the way to
    /// Redis is jammed it is dropped (and counted): the other nodes then catch up from the database.
    fn relay(&self, change: impl FnOnce() -> Change) {
        if let Some(relay) = &self.relay {
            if let Err(mpsc::error::TrySendError::Full(_)) = relay.try_send(change()) {
                self.counters.relay_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends `frame` to the members of `room` on this node but the connections of `user`.
    fn tell_room_but(&self, room: i64, user: i64, frame: &Frame) {
        let Some(members) = self.rooms.get(&room) else { return };
        for (id, outlet) in members.seats.lock().iter() {
            if self.conns.get(id).is_some_and(|c| c.user_id != user) {
                push(outlet, Delivery { frame: frame.clone(), message: None }, &self.counters);
            }
        }
    }

    /// Sends `frame` to the connections `select` picks, in rooms or not.
    fn tell_where(&self, select: impl Fn(&Conn) -> bool, frame: Frame) {
        for conn in self.conns.values().filter(|c| select(c)) {
            push(&conn.outlet, Delivery { frame: frame.clone(), message: None }, &self.counters);
        }
    }

    /// Closes the connections `select` picks, for `reason`.
    fn close_where(&mut self, select: impl Fn(&Conn) -> bool, reason: CloseReason) {
        self.epoch += 1;
        for conn in self.conns.values().filter(|c| select(c)) {
            conn.outlet.closer.close(reason);
        }
    }

    /// Drops `id` from `room`'s members, telling the other nodes if it was the user's last connection there
    /// on this node, and the room if the user is gone from it; returns the "left" notice then (if notices
    /// are on), which the leaving connection itself has not had.
    fn remove_member(
        &mut self,
        room: &i64,
        id: ConnId,
        user_id: i64,
        username: &Arc<str>,
        notices: bool,
    ) -> Option<Frame> {
        let members = self.rooms.get_mut(room)?;
        let mut seats = members.seats.lock();
        seats.remove(&id);
        let empty = seats.is_empty();
        drop(seats);
        if empty {
            self.rooms.remove(room);
        }
        let (last_here, gone) = self.presence.leave_local(*room, user_id);
        if last_here {
            self.relay(|| Change::Member {
                member: Member { room: *room, user: user_id, username: username.clone() },
                here: false,
            });
        }
        (gone && notices)
            .then(|| self.announce(&Transition { room: *room, username: username.clone(), entered: false }))
    }

    /// Takes each connection out of the rooms that `select(room, members, conn)` picks, telling it why
    /// (`why`, then `leave`) and telling the room who left.
    fn evict(&mut self, select: impl Fn(i64, &Members, &Conn) -> bool, why: (ErrorCode, &str), notices: bool) {
        let mut evicted = Vec::new();
        for (id, conn) in &self.conns {
            for room in conn.rooms.all() {
                if self.rooms.get(&room).is_some_and(|m| select(room, m, conn)) {
                    evicted.push((*id, room));
                }
            }
        }
        for (id, room) in evicted {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.rooms.remove(room);
            let (user_id, username) = (conn.user_id, conn.username.clone());
            let refusal = Delivery { frame: Event::error(why.0, why.1, Some(room)), message: None };
            push(&conn.outlet, refusal, &self.counters);
            let left = Delivery { frame: Event::Left { leave: room.to_string() }.encode(), message: None };
            push(&conn.outlet, left, &self.counters);
            if let Some(notice) = self.remove_member(&room, id, user_id, &username, notices) {
                if let Some(conn) = self.conns.get(&id) {
                    push(&conn.outlet, Delivery { frame: notice, message: None }, &self.counters);
                }
            }
        }
    }
}

/// Delivers what a room's order released to its members here, in that order.
fn release(seats: &HashMap<ConnId, Outlet>, room: i64, released: Vec<Released>, counters: &Counters) {
    for item in released {
        let delivery = match item {
            Released::Message(id, frame) => Delivery { frame, message: MessageRef::new(room, id) },
            Released::Gap { after, before } => Delivery {
                frame: Event::Gap { gap: room.to_string(), after, before }.encode(),
                message: MessageRef::new(room, before - 1),
            },
        };
        let queued = seats.values().filter(|outlet| push(outlet, delivery.clone(), counters)).count();
        // Counted once per message, not once per member: the counter is shared by every thread.
        counters.messages_delivered.fetch_add(queued as u64, Ordering::Relaxed);
    }
}

/// Queues `delivery` for a connection without waiting, and says whether it was queued; a full queue means
/// a slow reader, which is disconnected.
fn push(outlet: &Outlet, delivery: Delivery, counters: &Counters) -> bool {
    match outlet.queue.try_send(delivery) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(_)) => {
            if outlet.closer.close(CloseReason::SlowReader) {
                counters.slow_readers_dropped.fetch_add(1, Ordering::Relaxed);
            }
            false
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

    #[test]
    fn a_queued_delivery_is_a_frame_and_two_words() {
        // Every socket's queue allocates 32 of these when it opens: 48 bytes is 256 bytes of every idle socket
        // less than 56, which the message reference took as an `Option<(i64, i64)>`.
        assert_eq!(std::mem::size_of::<Delivery>(), 48);
        assert_eq!(MessageRef::new(0, 5), None, "no room has id 0: it is the niche");
        assert_eq!(MessageRef::new(3, 5).map(|m| (m.room(), m.id)), Some((3, 5)));
    }

    fn drain(frames: &mut mpsc::Receiver<Delivery>) -> Vec<String> {
        std::iter::from_fn(|| frames.try_recv().ok()).map(|d| d.frame.as_str().to_owned()).collect()
    }

    #[test]
    fn a_join_that_raced_a_change_of_rights_is_stale_and_admits_nobody() {
        let (hub, _catch_up) = Hub::new(8, true);
        let sam = user(1, "sam", true);
        let conn = hub.register(&sam, "s1".into(), hub.epoch()).unwrap();
        let read_at = hub.epoch();
        // The admin demotes sam after the join read the database but before it reached the hub.
        hub.user_changed(&User { is_staff: false, ..sam.clone() });
        assert_eq!(hub.join(conn.id, &room(7, true), true, read_at), Err(Stale));
        assert!(!conn.joined.contains(7));
        let seat = hub.join(conn.id, &room(7, false), false, hub.epoch()).unwrap();
        assert!(seat.new, "a fresh read is admitted");
    }

    #[test]
    fn a_registration_that_raced_a_logout_is_stale() {
        let (hub, _catch_up) = Hub::new(8, true);
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
        let (hub, _catch_up) = Hub::new(8, true);
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
        let (hub, _catch_up) = Hub::new(2, false);
        let mut slow = hub.register(&user(1, "slow", false), "s".into(), hub.epoch()).unwrap();
        let mut quick = hub.register(&user(2, "quick", false), "q".into(), hub.epoch()).unwrap();
        for conn in [slow.id, quick.id] {
            hub.join(conn, &room(1, false), false, hub.epoch()).unwrap();
        }
        for n in 0..3 {
            hub.apply(Change::Typing { room: 1, user: 9, frame: format!("frame {n}") });
            drain(&mut quick.frames);
        }
        assert_eq!((&mut slow.closed).await, Ok(CloseReason::SlowReader));
        assert!(quick.closed.try_recv().is_err(), "the quick reader stays");
    }

    #[test]
    fn after_shutdown_began_a_new_connection_is_closed_at_once() {
        let (hub, _catch_up) = Hub::new(8, false);
        let mut open = hub.register(&user(1, "ann", false), "a".into(), hub.epoch()).unwrap();
        hub.close_all(CloseReason::Shutdown);
        assert_eq!(open.closed.try_recv(), Ok(CloseReason::Shutdown));
        // A handshake that was already past authentication registers afterwards: it must not stay open.
        let mut late = hub.register(&user(2, "bob", false), "b".into(), hub.epoch()).unwrap();
        assert_eq!(late.closed.try_recv(), Ok(CloseReason::Shutdown));
    }

    #[test]
    fn demotion_takes_a_user_out_of_staff_only_rooms_only() {
        let (hub, _catch_up) = Hub::new(8, true);
        let sam = user(1, "sam", true);
        let mut conn = hub.register(&sam, "s".into(), hub.epoch()).unwrap();
        hub.join(conn.id, &room(1, true), true, hub.epoch()).unwrap();
        hub.join(conn.id, &room(2, false), true, hub.epoch()).unwrap();
        hub.user_changed(&User { is_staff: false, ..sam });
        assert!(!conn.joined.contains(1));
        assert!(conn.joined.contains(2));
        let frames = drain(&mut conn.frames);
        assert!(frames[0].contains("ROOM_ACCESS_DENIED"), "{frames:?}");
        assert_eq!(frames[1], r#"{"leave":"1"}"#);
    }

    #[test]
    fn changes_made_here_go_out_and_changes_from_elsewhere_do_not_go_back() {
        let (hub, _catch_up) = Hub::new(8, true);
        let (relay, mut out) = mpsc::channel(16);
        hub.relay_to(relay);
        let mut ann = hub.register(&user(1, "ann", false), "a".into(), hub.epoch()).unwrap();
        hub.join(ann.id, &room(1, false), false, hub.epoch()).unwrap();
        let ann_here = Member { room: 1, user: 1, username: "ann".into() };
        assert_eq!(out.try_recv().unwrap(), Change::Member { member: ann_here.clone(), here: true });
        hub.publish_message(1, 1, &Frame::from("one"));
        assert_eq!(out.try_recv().unwrap(), Change::Message { room: 1, id: 1, frame: "one".into() });

        // Another node's message and room deletion apply here, and are not sent back out.
        hub.apply(Change::Message { room: 1, id: 2, frame: "two".into() });
        hub.apply(Change::RoomDeleted { room: 1 });
        let frames = drain(&mut ann.frames);
        assert_eq!(frames[..2], ["one", "two"]);
        assert!(frames[2].contains("ROOM_INVALID"), "{frames:?}");
        // The deletion is not sent back; that ann is no longer here is this node's own news.
        assert_eq!(out.try_recv().unwrap(), Change::Member { member: ann_here, here: false });
        assert!(out.try_recv().is_err(), "nothing relayed back");
    }

    #[test]
    fn the_join_reply_lists_everyone_present_on_any_node_and_typing_skips_the_typist() {
        let (hub, _catch_up) = Hub::new(8, true);
        let lobby = room(1, false);
        let mut ann = hub.register(&user(1, "ann", false), "a".into(), hub.epoch()).unwrap();
        let mut ann2 = hub.register(&user(1, "ann", false), "a".into(), hub.epoch()).unwrap();
        hub.apply_from(
            "node-b",
            Change::Member { member: Member { room: 1, user: 3, username: "cy".into() }, here: true },
        );
        let seat = hub.join(ann.id, &lobby, false, hub.epoch()).unwrap();
        let names: Vec<&str> = seat.members.as_ref().unwrap().iter().map(|n| &**n).collect();
        assert_eq!(names, ["ann", "cy"]);
        let mut bob = hub.register(&user(2, "bob", false), "b".into(), hub.epoch()).unwrap();
        hub.join(bob.id, &lobby, false, hub.epoch()).unwrap();
        hub.join(ann2.id, &lobby, false, hub.epoch()).unwrap();
        assert_eq!(drain(&mut ann.frames), [r#"{"msg_type":4,"room":1,"username":"bob"}"#]);

        hub.typing(ann.id, 1).unwrap();
        assert_eq!(drain(&mut bob.frames), [r#"{"typing":"1","username":"ann","ttl_ms":5000}"#]);
        assert!(drain(&mut ann2.frames).is_empty(), "not to the typist's other window");
        assert_eq!(hub.typing(ann.id, 2), Err(NotMember));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_goes_silent_takes_its_users_out_after_the_ttl() {
        let (hub, _catch_up) = Hub::new(8, true);
        let mut ann = hub.register(&user(1, "ann", false), "a".into(), hub.epoch()).unwrap();
        hub.join(ann.id, &room(1, false), false, hub.epoch()).unwrap();
        hub.apply_from(
            "node-b",
            Change::Snapshot { members: vec![Member { room: 1, user: 3, username: "cy".into() }] },
        );
        assert_eq!(drain(&mut ann.frames), [r#"{"msg_type":4,"room":1,"username":"cy"}"#]);
        tokio::time::advance(NODE_TTL / 2).await;
        hub.apply_from("node-b", Change::Alive);
        tokio::time::advance(NODE_TTL / 2 + Duration::from_millis(10)).await;
        hub.expire_nodes();
        assert!(drain(&mut ann.frames).is_empty(), "heard from within the TTL");
        tokio::time::advance(NODE_TTL).await;
        hub.expire_nodes();
        assert_eq!(drain(&mut ann.frames), [r#"{"msg_type":5,"room":1,"username":"cy"}"#]);
        let names: Vec<String> = hub.members(1).iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["ann"]);
        assert_eq!(hub.nodes_alive(), 0);
    }

    #[test]
    fn messages_released_by_several_threads_at_once_reach_every_member_in_id_order() {
        // This node's writer and the cluster's listener publish into the same room at once, and the members'
        // queues are pushed to after the hub's lock is let go: the order must survive that, even when a
        // thread loses its core half-way through a room (more threads than cores make sure some do).
        const THREADS: i64 = 6;
        const EACH: i64 = 5_000;
        let (hub, _catch_up) = Hub::new((THREADS * EACH) as usize + 8, false);
        let mut members: Vec<Registration> = (1..=64)
            .map(|n| hub.register(&user(n, &format!("u{n}"), false), "s".into(), hub.epoch()).unwrap())
            .collect();
        for member in &members {
            hub.join(member.id, &room(1, false), false, hub.epoch()).unwrap();
        }
        std::thread::scope(|threads| {
            threads.spawn(|| (0..EACH).for_each(|n| hub.publish_message(1, n * THREADS + 1, &Frame::from("here"))));
            for node in 2..=THREADS {
                let hub = &hub;
                threads.spawn(move || {
                    for n in 0..EACH {
                        let message = Change::Message { room: 1, id: n * THREADS + node, frame: "there".into() };
                        hub.apply_from(&format!("node-{node}"), message);
                    }
                });
            }
        });
        for member in &mut members {
            let ids: Vec<i64> = std::iter::from_fn(|| member.frames.try_recv().ok())
                .filter_map(|delivery| delivery.message.map(|message| message.id))
                .collect();
            assert_eq!(ids.len(), (THREADS * EACH) as usize);
            assert!(ids.windows(2).all(|pair| pair[0] + 1 == pair[1]), "out of order for member {}", member.id);
        }
    }

    #[test]
    fn a_node_first_heard_of_is_asked_for_its_members_and_a_hello_is_answered() {
        let (hub, _catch_up) = Hub::new(8, true);
        let (relay, mut out) = mpsc::channel(16);
        hub.relay_to(relay);
        let ann = hub.register(&user(1, "ann", false), "a".into(), hub.epoch()).unwrap();
        hub.join(ann.id, &room(1, false), false, hub.epoch()).unwrap();
        out.try_recv().unwrap();
        hub.apply_from("node-b", Change::Alive);
        assert_eq!(out.try_recv().unwrap(), Change::Hello);
        hub.apply_from("node-c", Change::Hello);
        let ann_here = Member { room: 1, user: 1, username: "ann".into() };
        assert_eq!(out.try_recv().unwrap(), Change::Snapshot { members: vec![ann_here] });
        assert!(out.try_recv().is_err());
    }
}
