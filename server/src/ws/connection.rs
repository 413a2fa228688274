//! One chat connection: a single task, one `select!` loop over the socket, the room queue, one timer
//! (heartbeat and session end) and the close signal; cleanup once, after the loop.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::FuturesOrdered;
use futures_util::{ready, FutureExt, StreamExt};
use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::auth::CurrentUser;
use crate::db::{now_ms, NewMessage, Page, Stored};
use crate::error::Error;
use crate::hub::{CloseReason, ConnId, Delivery, Joined, NotMember, Registration};
use crate::protocol::{self, Command, ErrorCode, Event, Frame, RoomRef};
use crate::writer::Outcome;
use crate::AppState;

use super::wakes::{Input, Wakes};
use super::write::{write, Unwritten};

/// How often a join is retried while rights or rooms keep changing under it.
const JOIN_ATTEMPTS: usize = 5;
/// A `history` page when the client names no `limit`.
const DEFAULT_PAGE: i64 = 50;
/// The most queued frames written before one flush (and before the loop looks at its other inputs again).
const WRITE_BATCH: usize = 64;
/// The most messages of one connection waiting to be stored. A sender's next commands are read while its
/// earlier messages are being stored: waiting for each commit before reading on would leave its messages
/// queued in the socket whenever the writer is busy, their latency growing with them.
const SENDS_IN_FLIGHT: usize = 32;

/// The rate limiters' clock, made once and shared: making one probes the CPU (CPUID, a trap to the hypervisor
/// on a virtual machine), and with two limiters per connection that was 8 % of the server's time in the churn
/// benchmark.
static LIMITER_CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);

/// Typing signals a connection may send: clients send one every few seconds while the user types (in one
/// room at a time, mostly); two a second with bursts of four leaves room for switching rooms.
const TYPING_QUOTA: Quota = Quota::per_second(NonZeroU32::new(2).unwrap()).allow_burst(NonZeroU32::new(4).unwrap());

/// How a connection's loop ended.
enum End {
    /// The server closes it, for this reason.
    Server(CloseReason),
    /// The client sent a frame over the transport limit (close 1009).
    TooBig,
    /// The peer closed it, vanished, stopped answering pings, or stopped reading.
    Peer,
}

impl From<Unwritten> for End {
    fn from(unwritten: Unwritten) -> End {
        match unwritten {
            Unwritten::Peer => End::Peer,
            Unwritten::Closed(reason) => End::Server(reason),
        }
    }
}

/// Runs one connection until it closes.
///
/// Not an `async fn`: one keeps its arguments and, beside them, the locals they are moved into for as long as it
/// runs (600 bytes of every connection's task). The block below captures them and uses them in place.
pub fn run(
    mut socket: WebSocket,
    state: AppState,
    who: CurrentUser,
    mut registration: Registration,
) -> impl Future<Output = ()> + Send + 'static {
    let mut conn = Connection {
        id: registration.id,
        joined: registration.joined.clone(),
        limiter: RateLimiter::direct_with_clock(
            Quota::per_second(NonZeroU32::new(state.config.messages_per_second).unwrap_or(NonZeroU32::MIN)),
            LIMITER_CLOCK.clone(),
        ),
        typing_limiter: RateLimiter::direct_with_clock(TYPING_QUOTA, LIMITER_CLOCK.clone()),
        replayed: HashMap::new(),
        in_flight: FuturesOrdered::new(),
        state,
        who,
    };
    // The socket, the timer and the close signal are polled only when they woke the task (see `wakes`); the
    // frame queue, which wakes it nearly every time under load, always.
    let wakes = Wakes::new();
    let task = wakes.task();
    task.around(async move {
        let write_timeout = conn.state.config.write_timeout;
        let ping_every = conn.state.config.ping_interval;
        let mut last_heard = Instant::now();
        // When the unanswered ping went out: a socket is closed only after a ping it had a whole interval to
        // answer, never merely for having been quiet.
        let mut ping_sent: Option<Instant> = None;
        let session_end =
            Instant::now() + Duration::from_millis(conn.who.expires_at.saturating_sub(now_ms()).max(0) as u64);
        // One timer for the heartbeat and the session's end, made once.
        let timer = tokio::time::sleep_until((Instant::now() + ping_every).min(session_end));
        tokio::pin!(timer);
        // Grown by the frames that come, not reserved up front: a full batch's room (3 KiB) in every idle socket
        // was a fifth of what an idle socket cost.
        let mut batch = Vec::new();

        let end = loop {
            tokio::select! {
                reason = wakes.watch(Input::Closed, &mut registration.closed) => {
                    break End::Server(reason.unwrap_or(CloseReason::Shutdown));
                }
                // Everything already queued (up to a batch) is written with one flush: under load a socket gets
                // its frames in one write instead of one system call per frame.
                taken = registration.frames.recv_many(&mut batch, WRITE_BATCH) => {
                    // Only the hub's end can close the queue, and it does so only after this task is gone.
                    if taken == 0 {
                        break End::Server(CloseReason::Shutdown);
                    }
                    // The writer answers a sender before it queues the message: an ack ready by now goes first.
                    let acks = conn.answers_ready();
                    let frames = conn.deliveries(acks, batch.drain(..));
                    let written = write(&mut socket, frames, write_timeout, Some((&mut registration.closed, &wakes)));
                    if let Err(unwritten) = written.await {
                        break unwritten.into();
                    }
                }
                // Acks and refusals of stored messages, in the order they were sent.
                Some((room, nonce, outcome)) = conn.in_flight.next(), if !conn.in_flight.is_empty() => {
                    let frames = conn.stored(room, nonce, outcome).into_iter().map(Message::Text);
                    let written = write(&mut socket, frames, write_timeout, Some((&mut registration.closed, &wakes)));
                    if let Err(unwritten) = written.await {
                        break unwritten.into();
                    }
                }
                incoming = wakes.watch(Input::Socket, socket.next()),
                    if conn.in_flight.len() < SENDS_IN_FLIGHT =>
                {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(err)) if is_capacity_error(&err) => break End::TooBig,
                        _ => break End::Peer,
                    };
                    last_heard = Instant::now();
                    ping_sent = None;
                    let reply = match message {
                        // Boxed: a command's future (a join reads the database) is the largest thing the loop
                        // awaits, and every connection's task would be that large for its whole life.
                        Message::Text(text) => Box::pin(conn.handle(text.as_str())).await,
                        Message::Binary(_) => {
                            let detail = "binary frames are not supported; send JSON text";
                            vec![Event::error(ErrorCode::MalformedFrame, detail, None)]
                        }
                        Message::Ping(_) | Message::Pong(_) => Vec::new(),
                        Message::Close(_) => break End::Peer,
                    };
                    let frames = reply.into_iter().map(Message::Text);
                    let written = write(&mut socket, frames, write_timeout, Some((&mut registration.closed, &wakes)));
                    if let Err(unwritten) = written.await {
                        break unwritten.into();
                    }
                }
                () = wakes.watch(Input::Timer, &mut timer) => {
                    let now = Instant::now();
                    if now >= session_end {
                        break End::Server(CloseReason::LoggedOut);
                    }
                    match ping_sent {
                        Some(sent) if now - sent >= ping_every => {
                            let user = &conn.who.user.username;
                            tracing::debug!(%user, "closing a socket that stopped answering pings");
                            break End::Peer;
                        }
                        Some(_) => {}
                        None if now - last_heard >= ping_every => {
                            let ping = [Message::Ping(Default::default())];
                            let written = write(&mut socket, ping, write_timeout, Some((&mut registration.closed, &wakes)));
                            if let Err(unwritten) = written.await {
                                break unwritten.into();
                            }
                            ping_sent = Some(Instant::now());
                        }
                        None => {}
                    }
                    timer.as_mut().reset((now + ping_every).min(session_end));
                }
            }
        };

        drop(registration);
        if let End::TooBig = end {
            let limit = conn.state.config.transport_limit();
            let close = CloseFrame { code: 1009, reason: format!("frames are limited to {limit} bytes").into() };
            let _ = write(&mut socket, [Message::Close(Some(close))], write_timeout, None).await;
        }
        if let End::Server(reason) = end {
            if matches!(reason, CloseReason::LoggedOut | CloseReason::AccountChanged) {
                // The original client shows errors and knows this one: it tells the user to log in again.
                let frame = Event::error(ErrorCode::UserHasToLogin, reason.text(), None);
                let _ = write(&mut socket, [Message::Text(frame)], write_timeout, None).await;
            }
            let close = CloseFrame { code: reason.code(), reason: reason.text().into() };
            let _ = write(&mut socket, [Message::Close(Some(close))], write_timeout, None).await;
        }
    })
}

struct Connection {
    id: ConnId,
    joined: Joined,
    state: AppState,
    who: CurrentUser,
    limiter: DefaultDirectRateLimiter,
    typing_limiter: DefaultDirectRateLimiter,
    /// Per room resumed with `after`: the highest message id the client has, from before or from the
    /// replay. Live copies of those (queued while the replay was read) are dropped.
    replayed: HashMap<i64, i64>,
    /// Messages handed to the writer and not yet answered, oldest first.
    in_flight: FuturesOrdered<InFlight>,
}

/// A message handed to the writer: its room and nonce, and what became of it.
struct InFlight {
    room: i64,
    nonce: Option<String>,
    outcome: Outcome,
}

impl Future for InFlight {
    type Output = (i64, Option<String>, Result<Stored, Error>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = ready!(Pin::new(&mut self.outcome).poll(cx));
        Poll::Ready((self.room, self.nonce.take(), outcome))
    }
}

/// A command's failure: what went wrong, and the room it concerned.
type Failure = (Error, Option<i64>);

impl Connection {
    /// `first`, then a batch of queued frames less those a replay already sent, as frames to write.
    fn deliveries<'a>(
        &'a self,
        first: Vec<Frame>,
        batch: impl Iterator<Item = Delivery> + 'a,
    ) -> impl Iterator<Item = Message> + 'a {
        let batch = batch.filter(|delivery| !self.already_replayed(delivery)).map(|delivery| delivery.frame);
        first.into_iter().chain(batch).map(Message::Text)
    }

    fn already_replayed(&self, delivery: &Delivery) -> bool {
        delivery.message.is_some_and(|m| self.replayed.get(&m.room()).is_some_and(|&seen| m.id <= seen))
    }

    /// Answers one text frame with the frames this connection gets back (replies, errors, own notices).
    async fn handle(&mut self, text: &str) -> Vec<Frame> {
        if text.len() > self.state.config.max_frame_bytes {
            let detail = format!("frames are limited to {} bytes", self.state.config.max_frame_bytes);
            return vec![Event::error(ErrorCode::FrameTooLarge, &detail, None)];
        }
        let command = match protocol::parse(text) {
            Ok(command) => command,
            Err(bad) => return vec![Event::error(bad.code, &bad.detail, None)],
        };
        // Any other command sees the connection's messages stored first: a `history` right after a `send`
        // has the message, and replies keep the order of the commands.
        let mut frames = Vec::new();
        if !matches!(command, Command::Send { .. }) {
            while let Some((room, nonce, outcome)) = self.in_flight.next().await {
                frames.extend(self.stored(room, nonce, outcome));
            }
        }
        let result = match command {
            Command::Send { room, message, nonce } => return self.send(room, message, nonce).await,
            Command::Join { room, after } => self.join(room, after).await,
            Command::Leave { room } => self.leave(room).await,
            Command::History { room, before, after, limit } => self.history(room, before, after, limit).await,
            Command::Typing { room } => self.typing(room),
        };
        frames.extend(result.unwrap_or_else(|(error, room)| vec![error_frame(&error, room, None)]));
        frames
    }

    async fn join(&mut self, room: RoomRef, after: Option<i64>) -> Result<Vec<Frame>, Failure> {
        let id = room_id(room)?;
        let fail = |e: Error| (e, Some(id));
        // Rights are read from the database, then the hub admits the join only if no change of rights or
        // rooms landed in between; otherwise read again. Changes are rare, so this almost never loops.
        for _ in 0..JOIN_ATTEMPTS {
            let epoch = self.state.hub.epoch();
            let (room, is_staff) = self.state.db.enterable_room(id, self.who.user.id).await.map_err(fail)?;
            let Ok(seat) = self.state.hub.join(self.id, &room, is_staff, epoch) else {
                continue;
            };
            let members = seat.members.as_ref().map(|names| names.iter().map(|n| &**n).collect());
            let mut frames = vec![Event::Joined { join: room.id.to_string(), title: &room.title, members }.encode()];
            match after {
                // Subscribed first, read second: whatever is stored by now is replayed, whatever comes
                // later is live, and live copies of replayed messages are dropped by id.
                Some(after) => frames.extend(self.replay(id, after).await.map_err(fail)?),
                None => {
                    self.replayed.remove(&id);
                }
            }
            return Ok(frames);
        }
        Err(fail(Error::Busy))
    }

    /// The messages of `room` after `after`, as live events, preceded by a `gap` frame if some of them
    /// are not replayed (over the replay cap, expired, or never stored).
    async fn replay(&mut self, room: i64, after: i64) -> Result<Vec<Frame>, Error> {
        let (history, last) = self.state.db.replay(room, after, self.state.config.replay_max).await?;
        // Only what was read is suppressed live: a client claiming more than the room has (a database
        // restored from a backup, say) must still get the messages that come next.
        self.replayed.insert(room, last);
        let first_replayed = history.messages.first().map_or(last + 1, |m| m.id);
        let mut frames = Vec::with_capacity(history.messages.len() + 1);
        if first_replayed > after + 1 {
            frames.push(Event::Gap { gap: room.to_string(), after, before: first_replayed }.encode());
        }
        frames.extend(history.messages.iter().map(|m| Event::from(m).encode()));
        Ok(frames)
    }

    async fn leave(&mut self, room: RoomRef) -> Result<Vec<Frame>, Failure> {
        let id = room_id(room)?;
        let left = self.state.hub.leave(self.id, id);
        self.replayed.remove(&id);
        // Leaving a room one never joined is answered like the original does, unless there is no such room.
        if !left.was_member && self.state.db.room(id).await.map_err(|e| (e, Some(id)))?.is_none() {
            return Err((Error::RoomInvalid, Some(id)));
        }
        let mut frames = vec![Event::Left { leave: id.to_string() }.encode()];
        frames.extend(left.notice);
        Ok(frames)
    }

    async fn history(
        &mut self,
        room: RoomRef,
        before: Option<i64>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Vec<Frame>, Failure> {
        let id = room_id(room)?;
        let fail = |e: Error| (e, Some(id));
        self.state.db.enterable_room(id, self.who.user.id).await.map_err(fail)?;
        let limit = limit.unwrap_or(DEFAULT_PAGE).min(self.state.config.history_page_max);
        let page = self.state.db.history(id, Page { before, after, limit }).await.map_err(fail)?;
        let frame = Event::History {
            history: id.to_string(),
            messages: page.messages.iter().map(Event::from).collect(),
            more: page.more,
        };
        Ok(vec![frame.encode()])
    }

    /// Tells the room this user is typing. Never stored, and limited like messages (with its own budget).
    fn typing(&mut self, room: RoomRef) -> Result<Vec<Frame>, Failure> {
        let id = room_id(room)?;
        let refuse = |code: ErrorCode, detail: &str| Ok(vec![Event::error(code, detail, Some(id))]);
        let not_joined = "join the room before typing in it";
        if !self.joined.contains(id) {
            return refuse(ErrorCode::RoomAccessDenied, not_joined);
        }
        if self.typing_limiter.check().is_err() {
            return refuse(ErrorCode::RateLimited, "too many typing signals; slow down");
        }
        match self.state.hub.typing(self.id, id) {
            Ok(()) => Ok(Vec::new()),
            // Taken out of the room in between (demoted, the room deleted).
            Err(NotMember) => refuse(ErrorCode::RoomAccessDenied, not_joined),
        }
    }

    /// Hands a message to the writer (its ack or refusal follows from [`Connection::stored`]), or refuses it
    /// at once; refusals carry the send's nonce so the client knows which message failed.
    async fn send(&mut self, room: RoomRef, message: String, nonce: Option<String>) -> Vec<Frame> {
        let id = match room_id(room) {
            Ok(id) => id,
            Err((error, _)) => return vec![error_frame(&error, None, nonce.as_deref())],
        };
        let config = &self.state.config;
        let refuse = |code: ErrorCode, detail: &str| {
            vec![Event::Error { error: code, detail, room: Some(id), nonce: nonce.as_deref() }.encode()]
        };
        if !self.joined.contains(id) {
            return refuse(ErrorCode::RoomAccessDenied, "join the room before sending to it");
        }
        if message.chars().count() > config.max_message_chars {
            return refuse(
                ErrorCode::MessageTooLong,
                &format!("messages are limited to {} characters", config.max_message_chars),
            );
        }
        if message.trim().is_empty() {
            return refuse(ErrorCode::MessageEmpty, "the message is empty");
        }
        if self.limiter.check().is_err() {
            return refuse(ErrorCode::RateLimited, "too many messages; slow down");
        }
        let new = NewMessage {
            room: id,
            user_id: self.who.user.id,
            username: self.who.user.username.as_str().into(),
            body: message,
            nonce: nonce.clone(),
        };
        match self.state.writer.submit(new).await {
            Ok(outcome) => {
                self.in_flight.push_back(InFlight { room: id, nonce, outcome });
                Vec::new()
            }
            Err(error) => vec![error_frame(&error, Some(id), nonce.as_deref())],
        }
    }

    /// The answers to the messages the writer is done with by now (see [`Connection::stored`]).
    fn answers_ready(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        // Most sockets never send: with nothing in flight there is nothing to poll (polling an empty set
        // still registers the task's waker with it, at every delivery).
        if self.in_flight.is_empty() {
            return frames;
        }
        // Without waiting: the loop polls `in_flight` with the task's own waker before it sleeps again.
        while let Some(Some((room, nonce, outcome))) = self.in_flight.next().now_or_never() {
            frames.extend(self.stored(room, nonce, outcome));
        }
        frames
    }

    /// The answer to a message the writer is done with: an ack when it was stored, else the refusal.
    fn stored(&mut self, id: i64, nonce: Option<String>, outcome: Result<Stored, Error>) -> Vec<Frame> {
        match outcome {
            Ok(Stored::New(stored) | Stored::Duplicate(stored)) => match &nonce {
                Some(nonce) => {
                    vec![Event::Ack { ack: nonce, room: stored.room, id: stored.id, ts: stored.created_at }.encode()]
                }
                None => Vec::new(),
            },
            Err(Error::RoomAccessDenied) => {
                // Rights changed since the join: take the connection out, as the hub does for demotions.
                let left = self.state.hub.leave(self.id, id);
                let refusal = Event::Error {
                    error: ErrorCode::RoomAccessDenied,
                    detail: "this room is for staff only",
                    room: Some(id),
                    nonce: nonce.as_deref(),
                };
                let mut frames = vec![refusal.encode()];
                frames.push(Event::Left { leave: id.to_string() }.encode());
                frames.extend(left.notice);
                frames
            }
            Err(error) => vec![error_frame(&error, Some(id), nonce.as_deref())],
        }
    }
}

/// The error frame for a failed command; internal causes are logged and reported as `SERVER_ERROR`.
fn error_frame(error: &Error, room: Option<i64>, nonce: Option<&str>) -> Frame {
    let code = match error {
        Error::RoomInvalid => ErrorCode::RoomInvalid,
        Error::RoomAccessDenied => ErrorCode::RoomAccessDenied,
        _ => {
            error.log_if_internal();
            ErrorCode::ServerError
        }
    };
    Event::Error { error: code, detail: &error.to_string(), room, nonce }.encode()
}

/// True when the transport refused a frame for its size (axum wraps tungstenite's error).
fn is_capacity_error(err: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    matches!(err.source().and_then(|e| e.downcast_ref::<WsError>()), Some(WsError::Capacity(_)))
}

fn room_id(room: RoomRef) -> Result<i64, Failure> {
    match room {
        RoomRef::Id(id) => Ok(id),
        RoomRef::Invalid => Err((Error::RoomInvalid, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(WebSocket, AppState, CurrentUser, Registration) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn a_connections_task_stays_small_for_its_whole_life() {
        // Every socket carries this much for as long as it is open, idle or not (1,480 bytes in a release build
        // when this was written; it was 3,776 when writes were wrapped in layers of `async fn`s).
        let size = future_size(run);
        assert!(size <= 1_600, "a connection's future grew to {size} bytes: what does it now hold across an await?");
    }
}
