//! What one node tells the others through Redis: each change a node makes to its own connections that the
//! other nodes must make to theirs. The JSON form is the format between nodes of one deployment (all nodes
//! of a deployment run the same version); clients never see it.

use serde::{Deserialize, Serialize};

use super::{CloseReason, Member};

/// A change every node applies to its own connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Chat message `id` of `room`, stored, encoded as its live frame.
    Message { room: i64, id: i64, frame: String },
    /// The sending node has (`here`) or no longer has a connection of this user in this room.
    Member { member: Member, here: bool },
    /// The sending node's members, all of them: what was known of it is replaced.
    Snapshot { members: Vec<Member> },
    /// The sending node (re)joined the others: each answers with its [`Change::Snapshot`].
    Hello,
    /// The sending node is still there (it says so every [`super::presence::ALIVE_EVERY`]).
    Alive,
    /// `user` is typing in `room`: the frame goes to the room's members but that user's own connections.
    Typing { room: i64, user: i64, frame: String },
    /// A user's rights changed: deactivated users are disconnected, demoted ones leave staff-only rooms.
    UserChanged { user: i64, is_staff: bool, is_active: bool },
    /// A room's flags changed: when it became staff-only, non-staff members leave it.
    RoomChanged { room: i64, staff_only: bool },
    /// A room was deleted: every member leaves it.
    RoomDeleted { room: i64 },
    /// A session ended (logout): its sockets close. `session` is the stored hash, never the token.
    CloseSession { session: String },
    /// A password changed: the user's sockets close, but those of session `keep`.
    CloseOtherSessions { user: i64, keep: String },
    /// Every socket of a user closes.
    CloseUser { user: i64, reason: CloseReason },
    /// A frame for every socket.
    Broadcast { frame: String },
    /// A frame for every socket of one user.
    TellUser { user: i64, frame: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_json() {
        let changes = [
            Change::Message { room: 1, id: 7, frame: r#"{"msg_type":0}"#.into() },
            Change::CloseUser { user: 3, reason: CloseReason::AccountChanged },
            Change::RoomChanged { room: 2, staff_only: true },
            Change::Member { member: Member { room: 1, user: 2, username: "ann".into() }, here: true },
            Change::Snapshot { members: vec![Member { room: 1, user: 2, username: "ann".into() }] },
            Change::Alive,
        ];
        for change in changes {
            let json = serde_json::to_string(&change).unwrap();
            assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change, "{json}");
        }
    }
}
