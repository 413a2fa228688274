//! Which window gets which frame: the bookkeeping that lets every window share ONE chat socket.
//!
//! Windows speak the ordinary protocol (docs/protocol.md), as if each had the socket to itself. The router
//! joins a room on the socket while any window is in it, sends a leave only when the last one leaves, gives a
//! room's frames to the windows in it, an ack or a refused send to the window that sent it, and remembers
//! enough (rooms, how far each was seen, sends not yet acknowledged) to rejoin, resume and resend after a
//! reconnect without the windows doing anything. Pure: no socket, no Tauri, so it is tested directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

/// A window's label (`main`, `room-3`).
pub type Window = String;

/// What one window shows: the room in view, and whether the window has the focus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    pub room: Option<i64>,
    pub focused: bool,
}

/// Who gets a frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    Windows(Vec<Window>),
    /// Every window of the app (the room list changed, the session ends, …).
    Everyone,
}

/// What to do with a window's command.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// For the server (when the socket is up; otherwise the resume after connecting covers it).
    pub to_server: Option<String>,
    /// Answers the router gives itself, for the commanding window.
    pub local: Vec<String>,
}

#[derive(Debug, Default)]
struct Room {
    windows: BTreeSet<Window>,
    /// The highest message id delivered: a rejoin resumes after it (a room's messages arrive in id order).
    seen: Option<i64>,
    title: Option<String>,
}

#[derive(Debug, Default)]
pub struct Router {
    rooms: HashMap<i64, Room>,
    /// Leaves sent for rooms no window is in; their answers are nobody's.
    leaving: HashMap<i64, u32>,
    /// Sends not yet acknowledged or refused, in the order they were made: nonce → (window, command).
    in_flight: BTreeMap<u64, (String, Window, String)>,
    sequence: u64,
    views: HashMap<Window, View>,
    /// The newest message id each room has notified about.
    notified: HashMap<i64, i64>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Takes a window's command (the JSON text it would have sent on its own socket).
    pub fn command(&mut self, window: &str, text: &str) -> Routed {
        let Ok(command) = serde_json::from_str::<Value>(text) else {
            return Routed { to_server: Some(text.to_owned()), local: vec![] };
        };
        let room = command.get("room").and_then(room_id);
        let pass = Routed { to_server: Some(text.to_owned()), local: vec![] };
        match (command.get("command").and_then(Value::as_str), room) {
            (Some("join"), Some(room)) => {
                let entry = self.rooms.entry(room).or_default();
                entry.windows.insert(window.to_owned());
                if let Some(after) = command.get("after").and_then(Value::as_i64) {
                    // A window joining from further back than the socket has seen: resume from there.
                    entry.seen = Some(entry.seen.map_or(after, |seen| seen.min(after)));
                }
                pass
            }
            (Some("leave"), Some(room)) => self.leave(window, room),
            (Some("send"), _) => {
                if let Some(nonce) = command.get("nonce").and_then(Value::as_str) {
                    self.sequence += 1;
                    self.in_flight.insert(self.sequence, (nonce.to_owned(), window.to_owned(), text.to_owned()));
                }
                pass
            }
            _ => pass,
        }
    }

    fn leave(&mut self, window: &str, room: i64) -> Routed {
        let Some(entry) = self.rooms.get_mut(&room) else {
            return Routed { to_server: Some(json!({ "command": "leave", "room": room }).to_string()), local: vec![] };
        };
        entry.windows.remove(window);
        let answer = json!({ "leave": room.to_string() }).to_string();
        if !entry.windows.is_empty() {
            // Others still read the room: the socket stays in it.
            return Routed { to_server: None, local: vec![answer] };
        }
        self.rooms.remove(&room);
        *self.leaving.entry(room).or_default() += 1;
        Routed { to_server: Some(json!({ "command": "leave", "room": room }).to_string()), local: vec![answer] }
    }

    /// A window went away: it leaves its rooms. Returns the leaves for the server.
    pub fn window_closed(&mut self, window: &str) -> Vec<String> {
        self.views.remove(window);
        self.in_flight.retain(|_, (_, owner, _)| owner != window);
        let rooms: Vec<i64> =
            self.rooms.iter().filter(|(_, room)| room.windows.contains(window)).map(|(id, _)| *id).collect();
        rooms.into_iter().filter_map(|room| self.leave(window, room).to_server).collect()
    }

    /// What to send on a fresh socket: a join of every room some window is in (resuming after what was
    /// delivered), then every send still unacknowledged, with its nonce, so nothing is lost or posted twice.
    pub fn resume(&mut self) -> Vec<String> {
        self.leaving.clear();
        let mut rooms: Vec<_> = self.rooms.iter().collect();
        rooms.sort_by_key(|(id, _)| **id);
        let joins = rooms.into_iter().map(|(id, room)| match room.seen {
            Some(after) => json!({ "command": "join", "room": id, "after": after }).to_string(),
            None => json!({ "command": "join", "room": id }).to_string(),
        });
        joins.chain(self.in_flight.values().map(|(_, _, command)| command.clone())).collect()
    }

    /// Records what a window shows, for notifications.
    pub fn view(&mut self, window: &str, view: View) {
        self.views.insert(window.to_owned(), view);
    }

    /// Whether message `id` of `room` should raise a desktop notification: not when a focused window shows
    /// the room, and once per message however many windows ask.
    pub fn should_notify(&mut self, room: i64, id: i64) -> bool {
        if self.views.values().any(|view| view.focused && view.room == Some(room)) {
            return false;
        }
        let notified = self.notified.entry(room).or_insert(0);
        if id <= *notified {
            return false;
        }
        *notified = id;
        true
    }

    /// The title a room was joined under.
    pub fn title(&self, room: i64) -> Option<&str> {
        self.rooms.get(&room)?.title.as_deref()
    }

    /// Which windows get a frame from the server.
    pub fn frame(&mut self, text: &str) -> To {
        let Ok(frame) = serde_json::from_str::<Value>(text) else { return To::Windows(vec![]) };
        let to = To::Windows;
        if let Some(nonce) = frame.get("ack").and_then(Value::as_str) {
            return to(self.sender_of(nonce).into_iter().collect());
        }
        if frame.get("error").is_some() {
            if let Some(owner) = frame.get("nonce").and_then(Value::as_str).and_then(|n| self.sender_of(n)) {
                return to(vec![owner]);
            }
            let Some(room) = frame.get("room").and_then(room_id) else { return To::Everyone };
            let windows = self.in_room(room);
            if matches!(frame["error"].as_str(), Some("ROOM_ACCESS_DENIED" | "ROOM_INVALID")) {
                // Refused at the door or taken out: the socket is not in the room any more.
                self.rooms.remove(&room);
            }
            return to(windows);
        }
        if let Some(room) = frame.get("leave").and_then(room_id) {
            if let Some(count) = self.leaving.get_mut(&room).filter(|count| **count > 0) {
                *count -= 1;
                return to(vec![]);
            }
            let windows = self.in_room(room);
            self.rooms.remove(&room);
            return to(windows);
        }
        if let Some(room) = frame.get("join").and_then(room_id) {
            if let (Some(entry), Some(title)) = (self.rooms.get_mut(&room), frame["title"].as_str()) {
                entry.title = Some(title.to_owned());
            }
            return to(self.in_room(room));
        }
        let room = ["history", "gap", "typing", "room"].iter().find_map(|key| frame.get(*key).and_then(room_id));
        let Some(room) = room else { return To::Everyone };
        if frame.get("msg_type").and_then(Value::as_i64) == Some(0) {
            if let (Some(entry), Some(id)) = (self.rooms.get_mut(&room), frame["id"].as_i64()) {
                entry.seen = Some(entry.seen.map_or(id, |seen| seen.max(id)));
            }
        }
        to(self.in_room(room))
    }

    fn sender_of(&mut self, nonce: &str) -> Option<Window> {
        let key = self.in_flight.iter().find(|(_, (n, _, _))| n == nonce).map(|(key, _)| *key)?;
        self.in_flight.remove(&key).map(|(_, window, _)| window)
    }

    fn in_room(&self, room: i64) -> Vec<Window> {
        self.rooms.get(&room).map(|room| room.windows.iter().cloned().collect()).unwrap_or_default()
    }
}

/// A room id as the protocol allows it: a number or a decimal string.
fn room_id(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(to: To) -> Vec<String> {
        match to {
            To::Windows(windows) => windows,
            To::Everyone => vec!["everyone".into()],
        }
    }

    fn message(room: i64, id: i64) -> String {
        json!({ "msg_type": 0, "room": room, "username": "bob", "message": "hi", "id": id, "ts": 1 }).to_string()
    }

    #[test]
    fn a_room_frame_goes_to_the_windows_in_that_room_only() {
        let mut router = Router::new();
        router.command("main", r#"{"command":"join","room":1,"after":0}"#);
        router.command("room-2", r#"{"command":"join","room":2,"after":0}"#);
        router.command("main", r#"{"command":"join","room":2}"#);
        assert_eq!(windows(router.frame(&message(1, 1))), ["main"]);
        assert_eq!(windows(router.frame(&message(2, 1))), ["main", "room-2"]);
        assert_eq!(windows(router.frame(r#"{"rooms":"changed"}"#)), ["everyone"]);
    }

    #[test]
    fn the_socket_leaves_a_room_only_when_its_last_window_does() {
        let mut router = Router::new();
        router.command("main", r#"{"command":"join","room":"3"}"#);
        router.command("room-3", r#"{"command":"join","room":3}"#);
        let first = router.command("room-3", r#"{"command":"leave","room":3}"#);
        assert_eq!(first.to_server, None, "main is still in the room");
        assert_eq!(first.local, [r#"{"leave":"3"}"#]);
        assert_eq!(windows(router.frame(&message(3, 1))), ["main"]);
        let last = router.command("main", r#"{"command":"leave","room":3}"#);
        assert_eq!(last.to_server.as_deref(), Some(r#"{"command":"leave","room":3}"#));
        assert_eq!(router.frame(r#"{"leave":"3"}"#), To::Windows(vec![]), "the answer to our own leave is nobody's");
    }

    #[test]
    fn acks_and_refused_sends_go_to_the_sender_only() {
        let mut router = Router::new();
        router.command("main", r#"{"command":"join","room":1}"#);
        router.command("room-1", r#"{"command":"join","room":1}"#);
        router.command("room-1", r#"{"command":"send","room":1,"message":"a","nonce":"n1"}"#);
        router.command("main", r#"{"command":"send","room":1,"message":"b","nonce":"n2"}"#);
        assert_eq!(windows(router.frame(r#"{"ack":"n1","room":1,"id":1,"ts":1}"#)), ["room-1"]);
        assert_eq!(windows(router.frame(r#"{"error":"RATE_LIMITED","detail":"","room":1,"nonce":"n2"}"#)), ["main"]);
        assert!(router.resume().iter().all(|c| !c.contains("nonce")), "nothing left to resend");
    }

    #[test]
    fn a_reconnect_rejoins_after_the_newest_delivered_and_resends_what_was_not_acknowledged() {
        let mut router = Router::new();
        router.command("main", r#"{"command":"join","room":1,"after":10}"#);
        router.command("main", r#"{"command":"join","room":2}"#);
        router.frame(&message(1, 11));
        router.frame(&message(1, 12));
        router.command("main", r#"{"command":"send","room":1,"message":"a","nonce":"n1"}"#);
        router.command("main", r#"{"command":"send","room":1,"message":"b","nonce":"n2"}"#);
        router.frame(r#"{"ack":"n1","room":1,"id":13,"ts":1}"#);
        assert_eq!(
            router.resume(),
            [
                r#"{"after":12,"command":"join","room":1}"#.to_owned(),
                r#"{"command":"join","room":2}"#.to_owned(),
                r#"{"command":"send","room":1,"message":"b","nonce":"n2"}"#.to_owned(),
            ]
        );
    }

    #[test]
    fn a_refusal_or_removal_takes_the_room_off_the_socket() {
        let mut router = Router::new();
        router.command("main", r#"{"command":"join","room":1}"#);
        router.command("main", r#"{"command":"join","room":2}"#);
        let refused = router.frame(r#"{"error":"ROOM_ACCESS_DENIED","detail":"","room":1}"#);
        assert_eq!(windows(refused), ["main"]);
        assert_eq!(windows(router.frame(r#"{"leave":"2"}"#)), ["main"], "removed by the server");
        assert!(router.resume().is_empty(), "nothing to rejoin");
    }

    #[test]
    fn a_closed_window_leaves_its_rooms_and_its_sends_are_dropped() {
        let mut router = Router::new();
        router.command("main", r#"{"command":"join","room":1}"#);
        router.command("room-2", r#"{"command":"join","room":2}"#);
        router.command("room-2", r#"{"command":"send","room":2,"message":"a","nonce":"n"}"#);
        assert_eq!(router.window_closed("room-2"), [r#"{"command":"leave","room":2}"#]);
        assert_eq!(router.resume(), [r#"{"command":"join","room":1}"#]);
    }

    #[test]
    fn notifications_skip_rooms_in_view_in_a_focused_window_and_come_once() {
        let mut router = Router::new();
        router.view("main", View { room: Some(1), focused: true });
        router.view("room-2", View { room: Some(2), focused: false });
        assert!(!router.should_notify(1, 5), "in view");
        assert!(router.should_notify(2, 5), "shown, but in a window in the background");
        assert!(!router.should_notify(2, 5), "a second window asking about the same message");
        router.view("main", View { room: Some(1), focused: false });
        assert!(router.should_notify(1, 6));
    }

    #[test]
    fn typing_goes_to_the_windows_in_its_room_only() {
        let mut router = Router::new();
        router.command("main", r#"{"command":"join","room":1}"#);
        router.command("room-2", r#"{"command":"join","room":2}"#);
        let typing = json!({ "typing": "2", "username": "bob", "ttl_ms": 5000 }).to_string();
        assert_eq!(windows(router.frame(&typing)), ["room-2"]);
    }
}
