//! The WebSocket wire protocol, in one place: what clients send, what the server answers.
//!
//! It is the original multichat protocol (Django Channels), kept wire-compatible so that the original
//! jQuery client works unchanged; everything new is additive. `docs/protocol.md` is the same table in prose.

use std::borrow::Cow;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

/// An encoded server frame: serialized once, then shared by every recipient (cloning is a refcount).
pub type Frame = Utf8Bytes;

/// `msg_type` of a chat message.
pub const MSG_MESSAGE: u8 = 0;
/// `msg_type` of "someone entered the room".
pub const MSG_ENTER: u8 = 4;
/// `msg_type` of "someone left the room".
pub const MSG_LEAVE: u8 = 5;

/// How long a typing signal shows, in milliseconds; clients renew it every couple of seconds while typing.
pub const TYPING_TTL_MS: u64 = 5000;

/// The longest nonce a client may attach to a `send`, in characters.
pub const MAX_NONCE_CHARS: usize = 64;

/// A command from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `{"command":"join","room":ID}` — join a room (ID a number or a decimal string);
    /// with `"after":N`, also replay what was said after message N (resume after a reconnect).
    Join { room: RoomRef, after: Option<i64> },
    /// `{"command":"leave","room":ID}` — leave a room.
    Leave { room: RoomRef },
    /// `{"command":"send","room":ID,"message":TEXT}` — say TEXT in a joined room; with `"nonce":K`,
    /// get an `ack`, and a retry with the same K is stored once.
    Send { room: RoomRef, message: String, nonce: Option<String> },
    /// `{"command":"history","room":ID,"before":N,"after":M,"limit":L}` — a page of stored messages (all
    /// but `room` optional).
    History { room: RoomRef, before: Option<i64>, after: Option<i64>, limit: Option<i64> },
    /// `{"command":"typing","room":ID}` — tell the room's other members this user is typing (never stored).
    Typing { room: RoomRef },
}

/// A room id as the client wrote it. The original client sends `"1"`, others `1`: both mean room 1,
/// so joining with one and sending with the other works (the original refused that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRef {
    Id(i64),
    /// Not a room id at all (`"abc"`, `-1`): answered with `ROOM_INVALID`, like a room that does not exist.
    Invalid,
}

/// Error codes sent as `{"error":CODE}`. The first three are the original's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The session ended (logged out, account changed) while the socket was open; sent just before closing.
    UserHasToLogin,
    /// No such room.
    RoomInvalid,
    /// A staff-only room and the user is not staff, or `send` to a room not joined.
    RoomAccessDenied,
    /// Not JSON, not an object, a binary frame, or a field of the wrong type or missing.
    MalformedFrame,
    /// A `command` this server does not know.
    UnknownCommand,
    /// A frame over the configured size limit.
    FrameTooLarge,
    /// A message over the configured length limit.
    MessageTooLong,
    /// A message with nothing but white space.
    MessageEmpty,
    /// Too many messages per second on this connection.
    RateLimited,
    /// The server could not do it (the database is down, say); nothing was stored, try again.
    ServerError,
}

/// A frame the server sends.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Event<'a> {
    /// `{"ack":K,"room":ID,"id":N,"ts":MS}` — to the sender of a `send` with nonce K: stored as message N.
    Ack { ack: &'a str, room: i64, id: i64, ts: i64 },
    /// `{"history":"ID","messages":[…],"more":BOOL}` — a page of history, oldest first, each message as
    /// its live event; `more` when further messages lie beyond the page in the direction read.
    History { history: String, messages: Vec<Event<'a>>, more: bool },
    /// `{"rooms":"changed"}` — rooms were created, changed or deleted, or this user's rights changed:
    /// fetch the room list again.
    RoomsChanged { rooms: &'static str },
    /// `{"gap":"ID","after":N,"before":M}` — messages N+1 … M-1 were not replayed (too many, or no longer
    /// stored): page them with `history` if wanted.
    Gap { gap: String, after: i64, before: i64 },
    /// `{"join":"ID","title":T,"members":[U…]}` — to the joiner, after a successful join; `members` (who is
    /// in the room, the joiner included, sorted) unless presence is turned off.
    Joined {
        join: String,
        title: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        members: Option<Vec<&'a str>>,
    },
    /// `{"leave":"ID"}` — to the leaver, after a leave (also when removed by the server).
    Left { leave: String },
    /// `{"msg_type":0,"room":ID,"username":U,"message":M,"id":N,"ts":MS}` — a message, to every member;
    /// `id` is the room's dense message id, `ts` the server's time in Unix milliseconds.
    Message { msg_type: u8, room: i64, username: &'a str, message: &'a str, id: i64, ts: i64 },
    /// `{"msg_type":4|5,"room":ID,"username":U}` — someone entered or left the room.
    Presence { msg_type: u8, room: i64, username: &'a str },
    /// `{"typing":"ID","username":U,"ttl_ms":MS}` — U is typing in the room: show it for MS milliseconds,
    /// unless renewed by another, or ended by a message from U or U leaving.
    Typing { typing: String, username: &'a str, ttl_ms: u64 },
    /// `{"error":CODE,"detail":TEXT}` (+ `"room":ID` when it concerns one, `"nonce":K` for a refused
    /// `send` that carried one) — a refused command.
    Error {
        error: ErrorCode,
        detail: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        nonce: Option<&'a str>,
    },
}

impl Event<'_> {
    /// Serializes the event once; the frame is then cloned per recipient, never re-encoded.
    pub fn encode(&self) -> Frame {
        // Serializing these plain structs cannot fail; an empty object would be the harmless fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned()).into()
    }

    pub fn rooms_changed() -> Frame {
        Event::RoomsChanged { rooms: "changed" }.encode()
    }

    pub fn error(error: ErrorCode, detail: &str, room: Option<i64>) -> Frame {
        Event::Error { error, detail, room, nonce: None }.encode()
    }
}

/// A stored message is sent exactly as it was live.
impl<'a> From<&'a crate::db::Message> for Event<'a> {
    fn from(m: &'a crate::db::Message) -> Event<'a> {
        Event::Message {
            msg_type: MSG_MESSAGE,
            room: m.room,
            username: &m.username,
            message: &m.message,
            id: m.id,
            ts: m.ts,
        }
    }
}

/// Why a client frame could not be read as a command.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame {
    pub code: ErrorCode,
    pub detail: Cow<'static, str>,
}

/// The fields any command may carry; unknown fields are ignored so that clients may add their own.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    command: Option<Cow<'a, str>>,
    room: Option<RawRoom>,
    message: Option<String>,
    nonce: Option<String>,
    after: Option<i64>,
    before: Option<i64>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoom {
    Number(serde_json::Number),
    Text(String),
}

impl From<RawRoom> for RoomRef {
    fn from(raw: RawRoom) -> RoomRef {
        let id = match raw {
            RawRoom::Number(n) => n.as_i64(),
            RawRoom::Text(s) => s.trim().parse::<i64>().ok(),
        };
        id.filter(|id| *id > 0).map_or(RoomRef::Invalid, RoomRef::Id)
    }
}

/// Reads one client text frame.
pub fn parse(text: &str) -> Result<Command, BadFrame> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| BadFrame {
        code: ErrorCode::MalformedFrame,
        detail: format!("not a command object: {e}").into(),
    })?;
    let missing = |field: &'static str| BadFrame {
        code: ErrorCode::MalformedFrame,
        detail: format!("missing field `{field}`").into(),
    };
    let invalid = |detail: &'static str| BadFrame { code: ErrorCode::MalformedFrame, detail: detail.into() };
    let command = envelope.command.ok_or_else(|| missing("command"))?;
    let room = envelope.room.map(RoomRef::from);
    if envelope.after.is_some_and(|n| n < 0) || envelope.before.is_some_and(|n| n < 1) {
        return Err(invalid("`after` must be 0 or more and `before` 1 or more"));
    }
    if envelope.limit.is_some_and(|n| n < 1) {
        return Err(invalid("`limit` must be 1 or more"));
    }
    if envelope.nonce.as_ref().is_some_and(|n| n.is_empty() || n.chars().count() > MAX_NONCE_CHARS) {
        return Err(invalid("a `nonce` has 1 to 64 characters"));
    }
    match command.as_ref() {
        "join" => Ok(Command::Join { room: room.ok_or_else(|| missing("room"))?, after: envelope.after }),
        "leave" => Ok(Command::Leave { room: room.ok_or_else(|| missing("room"))? }),
        "send" => Ok(Command::Send {
            room: room.ok_or_else(|| missing("room"))?,
            message: envelope.message.ok_or_else(|| missing("message"))?,
            nonce: envelope.nonce,
        }),
        "history" => Ok(Command::History {
            room: room.ok_or_else(|| missing("room"))?,
            before: envelope.before,
            after: envelope.after,
            limit: envelope.limit,
        }),
        "typing" => Ok(Command::Typing { room: room.ok_or_else(|| missing("room"))? }),
        other => Err(BadFrame {
            code: ErrorCode::UnknownCommand,
            detail: format!("unknown command `{}`", other.chars().take(40).collect::<String>()).into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_may_be_numbers_or_decimal_strings() {
        let join = |room| Ok(Command::Join { room, after: None });
        assert_eq!(parse(r#"{"command":"join","room":"7"}"#), join(RoomRef::Id(7)));
        assert_eq!(parse(r#"{"command":"leave","room":7}"#), Ok(Command::Leave { room: RoomRef::Id(7) }));
        assert_eq!(parse(r#"{"command":"join","room":"abc"}"#), join(RoomRef::Invalid));
        assert_eq!(parse(r#"{"command":"join","room":-3}"#), join(RoomRef::Invalid));
        assert_eq!(parse(r#"{"command":"join","room":1.5}"#), join(RoomRef::Invalid));
    }

    #[test]
    fn send_carries_its_message_and_unknown_fields_are_ignored() {
        assert_eq!(
            parse(r#"{"command":"send","room":1,"message":"hi","extra":true}"#),
            Ok(Command::Send { room: RoomRef::Id(1), message: "hi".into(), nonce: None })
        );
    }

    #[test]
    fn resume_history_and_nonces_are_read_and_checked() {
        assert_eq!(
            parse(r#"{"command":"join","room":1,"after":41}"#),
            Ok(Command::Join { room: RoomRef::Id(1), after: Some(41) })
        );
        assert_eq!(
            parse(r#"{"command":"send","room":1,"message":"hi","nonce":"k-1"}"#),
            Ok(Command::Send { room: RoomRef::Id(1), message: "hi".into(), nonce: Some("k-1".into()) })
        );
        assert_eq!(
            parse(r#"{"command":"history","room":1,"before":10,"limit":5}"#),
            Ok(Command::History { room: RoomRef::Id(1), before: Some(10), after: None, limit: Some(5) })
        );
        let code = |text: &str| parse(text).unwrap_err().code;
        assert_eq!(code(r#"{"command":"history","room":1,"after":-1}"#), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"command":"history","room":1,"limit":0}"#), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"command":"send","room":1,"message":"x","nonce":""}"#), ErrorCode::MalformedFrame);
        let long = format!(r#"{{"command":"send","room":1,"message":"x","nonce":"{}"}}"#, "n".repeat(65));
        assert_eq!(code(&long), ErrorCode::MalformedFrame);
    }

    #[test]
    fn typing_names_its_room() {
        assert_eq!(parse(r#"{"command":"typing","room":"2"}"#), Ok(Command::Typing { room: RoomRef::Id(2) }));
        assert_eq!(parse(r#"{"command":"typing"}"#).unwrap_err().code, ErrorCode::MalformedFrame);
    }

    #[test]
    fn bad_frames_say_what_is_wrong() {
        let code = |text: &str| parse(text).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::MalformedFrame);
        assert_eq!(code("[1,2]"), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"room":1}"#), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"command":"send","room":1}"#), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"command":"send","room":1,"message":5}"#), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"command":"dance","room":1}"#), ErrorCode::UnknownCommand);
    }

    #[test]
    fn events_encode_as_the_original_client_expects() {
        let joined = Event::Joined { join: "3".into(), title: "Lobby", members: None }.encode();
        assert_eq!(joined.as_str(), r#"{"join":"3","title":"Lobby"}"#);
        let joined = Event::Joined { join: "3".into(), title: "Lobby", members: Some(vec!["ann", "bo"]) }.encode();
        assert_eq!(joined.as_str(), r#"{"join":"3","title":"Lobby","members":["ann","bo"]}"#);
        let typing = Event::Typing { typing: "3".into(), username: "ann", ttl_ms: 5000 }.encode();
        assert_eq!(typing.as_str(), r#"{"typing":"3","username":"ann","ttl_ms":5000}"#);
        let msg = Event::Message { msg_type: MSG_MESSAGE, room: 3, username: "ann", message: "hi", id: 9, ts: 5 };
        assert_eq!(msg.encode().as_str(), r#"{"msg_type":0,"room":3,"username":"ann","message":"hi","id":9,"ts":5}"#);
        let err = Event::error(ErrorCode::RoomAccessDenied, "staff only", None);
        assert_eq!(err.as_str(), r#"{"error":"ROOM_ACCESS_DENIED","detail":"staff only"}"#);
        let ack = Event::Ack { ack: "k1", room: 3, id: 9, ts: 5 }.encode();
        assert_eq!(ack.as_str(), r#"{"ack":"k1","room":3,"id":9,"ts":5}"#);
    }
}
