//! One chat connection: a single task, one `select!` loop over the socket, the room queue, the
//! heartbeat and the close signals; cleanup once, after the loop.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};

use crate::auth::CurrentUser;
use crate::db::now_ms;
use crate::error::Error;
use crate::hub::{CloseReason, ConnId};
use crate::protocol::{self, Command, ErrorCode, Event, Frame, RoomRef, MSG_MESSAGE};
use crate::AppState;

/// How often a join is retried while rights or rooms keep changing under it.
const JOIN_ATTEMPTS: usize = 5;

/// How a connection's loop ended.
enum End {
    /// The server closes it, for this reason.
    Server(CloseReason),
    /// The client sent a frame over the transport limit (close 1009).
    TooBig,
    /// The peer closed it, vanished, or stopped answering pings.
    Peer,
}

/// Runs one connection until it closes.
pub async fn run(mut socket: WebSocket, state: AppState, who: CurrentUser) {
    let registration = state.hub.register(&who.user, who.session.clone());
    let mut conn = Connection {
        id: registration.id,
        state: state.clone(),
        who,
        limiter: RateLimiter::direct(Quota::per_second(
            NonZeroU32::new(state.config.messages_per_second).unwrap_or(NonZeroU32::MIN),
        )),
    };
    let mut frames = registration.frames;
    let ping_every = state.config.ping_interval;
    let mut heartbeat = interval(ping_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // When the unanswered ping went out: a socket is closed only after a ping it had a whole interval to
    // answer, never merely for having been quiet.
    let mut ping_sent: Option<Instant> = None;
    let session_left = Duration::from_millis(conn.who.expires_at.saturating_sub(now_ms()).max(0) as u64);
    let session_end = tokio::time::sleep(session_left);
    tokio::pin!(session_end);

    let end = loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break End::Server(CloseReason::Shutdown),
            reason = registration.closer.closed() => break End::Server(reason),
            _ = &mut session_end => break End::Server(CloseReason::LoggedOut),
            Some(frame) = frames.recv() => {
                if conn.write(&mut socket, Message::Text(frame)).await.is_err() {
                    break End::Peer;
                }
            }
            incoming = socket.recv() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(err)) if is_capacity_error(&err) => break End::TooBig,
                    _ => break End::Peer,
                };
                last_heard = Instant::now();
                ping_sent = None;
                let reply = match message {
                    Message::Text(text) => conn.handle(text.as_str()).await,
                    Message::Binary(_) => vec![Event::error(ErrorCode::MalformedFrame, "binary frames are not supported; send JSON text", None)],
                    Message::Ping(_) | Message::Pong(_) => Vec::new(),
                    Message::Close(_) => break End::Peer,
                };
                if conn.write_all(&mut socket, reply).await.is_err() {
                    break End::Peer;
                }
            }
            _ = heartbeat.tick() => match ping_sent {
                Some(sent) if sent.elapsed() >= ping_every => {
                    tracing::debug!(user = %conn.who.user.username, "closing a socket that stopped answering pings");
                    break End::Peer;
                }
                Some(_) => {}
                None if last_heard.elapsed() >= ping_every => {
                    if conn.write(&mut socket, Message::Ping(Default::default())).await.is_err() {
                        break End::Peer;
                    }
                    ping_sent = Some(Instant::now());
                }
                None => {}
            },
        }
    };

    state.hub.unregister(conn.id);
    if let End::TooBig = end {
        let limit = state.config.transport_limit();
        let close = CloseFrame { code: 1009, reason: format!("frames are limited to {limit} bytes").into() };
        let _ = conn.write(&mut socket, Message::Close(Some(close))).await;
    }
    if let End::Server(reason) = end {
        if matches!(reason, CloseReason::LoggedOut | CloseReason::AccountChanged) {
            // The original client shows errors and knows this one: it tells the user to log in again.
            let frame = Event::error(ErrorCode::UserHasToLogin, reason.text(), None);
            let _ = conn.write(&mut socket, Message::Text(frame)).await;
        }
        let close = CloseFrame { code: reason.code(), reason: reason.text().into() };
        let _ = conn.write(&mut socket, Message::Close(Some(close))).await;
    }
}

struct Connection {
    id: ConnId,
    state: AppState,
    who: CurrentUser,
    limiter: DefaultDirectRateLimiter,
}

impl Connection {
    /// Writes one frame, giving up after the configured write timeout (a peer that stopped reading).
    async fn write(&self, socket: &mut WebSocket, message: Message) -> Result<(), ()> {
        match timeout(self.state.config.write_timeout, socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn write_all(&self, socket: &mut WebSocket, frames: Vec<Frame>) -> Result<(), ()> {
        for frame in frames {
            self.write(socket, Message::Text(frame)).await?;
        }
        Ok(())
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
        let result = match command {
            Command::Join { room } => self.join(room).await,
            Command::Leave { room } => self.leave(room).await,
            Command::Send { room, message } => self.send(room, message).await,
        };
        result.unwrap_or_else(|(error, room)| {
            let code = match &error {
                Error::RoomInvalid => ErrorCode::RoomInvalid,
                Error::RoomAccessDenied => ErrorCode::RoomAccessDenied,
                _ => {
                    error.log_if_internal();
                    ErrorCode::ServerError
                }
            };
            vec![Event::error(code, &error.to_string(), room)]
        })
    }

    async fn join(&mut self, room: RoomRef) -> Result<Vec<Frame>, (Error, Option<i64>)> {
        let id = room_id(room)?;
        let fail = |e: Error| (e, Some(id));
        // Rights are read from the database, then the hub admits the join only if no change of rights or
        // rooms landed in between; otherwise read again. Changes are rare, so this almost never loops.
        for _ in 0..JOIN_ATTEMPTS {
            let epoch = self.state.hub.epoch();
            let (room, is_staff) =
                self.state.db.room_for(id, self.who.user.id).await.map_err(fail)?.ok_or(fail(Error::RoomInvalid))?;
            if room.staff_only && !is_staff {
                return Err(fail(Error::RoomAccessDenied));
            }
            if self.state.hub.join(self.id, &room, is_staff, epoch).is_ok() {
                return Ok(vec![Event::Joined { join: room.id.to_string(), title: &room.title }.encode()]);
            }
        }
        Err(fail(Error::Busy))
    }

    async fn leave(&mut self, room: RoomRef) -> Result<Vec<Frame>, (Error, Option<i64>)> {
        let id = room_id(room)?;
        let left = self.state.hub.leave(self.id, id);
        // Leaving a room one never joined is answered like the original does, unless there is no such room.
        if !left.was_member && self.state.db.room(id).await.map_err(|e| (e, Some(id)))?.is_none() {
            return Err((Error::RoomInvalid, Some(id)));
        }
        let mut frames = vec![Event::Left { leave: id.to_string() }.encode()];
        frames.extend(left.notice);
        Ok(frames)
    }

    async fn send(&mut self, room: RoomRef, message: String) -> Result<Vec<Frame>, (Error, Option<i64>)> {
        let id = room_id(room)?;
        let config = &self.state.config;
        let refuse = |code: ErrorCode, detail: &str| Ok(vec![Event::error(code, detail, Some(id))]);
        if !self.state.hub.is_member(self.id, id) {
            return Err((Error::RoomAccessDenied, Some(id)));
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
        // One room's messages are stored and published in id order: the room lock spans both.
        let order = self.state.rooms_in_order.lock(id).await;
        let stored = match self.state.db.store_message(id, self.who.user.id, &self.who.user.username, &message).await {
            Ok(stored) => stored,
            Err(Error::RoomAccessDenied) => {
                // Rights changed since the join: take the connection out, as the hub does for demotions.
                drop(order);
                let left = self.state.hub.leave(self.id, id);
                let mut frames =
                    vec![Event::error(ErrorCode::RoomAccessDenied, "this room is for staff only", Some(id))];
                frames.push(Event::Left { leave: id.to_string() }.encode());
                frames.extend(left.notice);
                return Ok(frames);
            }
            Err(e) => return Err((e, Some(id))),
        };
        let event = Event::Message {
            msg_type: MSG_MESSAGE,
            room: id,
            username: &self.who.user.username,
            message: &message,
            id: stored.id,
            ts: stored.created_at,
        };
        self.state.hub.publish(id, &event.encode());
        drop(order);
        Ok(Vec::new())
    }
}

/// True when the transport refused a frame for its size (axum wraps tungstenite's error).
fn is_capacity_error(err: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    matches!(err.source().and_then(|e| e.downcast_ref::<WsError>()), Some(WsError::Capacity(_)))
}

fn room_id(room: RoomRef) -> Result<i64, (Error, Option<i64>)> {
    match room {
        RoomRef::Id(id) => Ok(id),
        RoomRef::Invalid => Err((Error::RoomInvalid, None)),
    }
}
