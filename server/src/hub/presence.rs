//! Who is in each room, across every node: a user is present in a room while at least one of their
//! connections is in it, on this node or on any other. Users enter and leave only as a whole, so a user with
//! two windows (or two nodes) enters once and leaves once.
//!
//! This node counts its own connections; of the other nodes it knows which users each has in which room,
//! from their changes relayed through Redis. A node that stops being heard from (it died, or lost Redis) is
//! forgotten after [`NODE_TTL`], and its users leave wherever no other connection holds them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How often a linked node says it is alive, when it has nothing else to say.
pub const ALIVE_EVERY: Duration = Duration::from_secs(2);
/// How long a silent node's users count as present.
pub const NODE_TTL: Duration = Duration::from_secs(6);

/// Another node's name (random, chosen at its start).
pub type NodeId = Arc<str>;

/// One user in one room, as a node tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub room: i64,
    pub user: i64,
    pub username: Arc<str>,
}

/// A user became present in a room, or stopped being present anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub room: i64,
    pub username: Arc<str>,
    pub entered: bool,
}

#[derive(Debug)]
struct Present {
    username: Arc<str>,
    /// This node's connections of the user in the room.
    local: usize,
    /// The other nodes that have the user in the room.
    nodes: BTreeSet<NodeId>,
}

impl Present {
    fn is_gone(&self) -> bool {
        self.local == 0 && self.nodes.is_empty()
    }
}

#[derive(Debug)]
struct Node {
    seen: Instant,
    /// (room, user) pairs this node has.
    members: HashSet<(i64, i64)>,
}

/// The rooms' members across the nodes.
#[derive(Debug, Default)]
pub struct Presence {
    rooms: HashMap<i64, HashMap<i64, Present>>,
    nodes: HashMap<NodeId, Node>,
}

impl Presence {
    /// One more connection of `user` in `room` on this node. Returns whether it is the user's first one
    /// there on this node (the other nodes must hear it) and whether the user has just entered.
    pub fn enter_local(&mut self, room: i64, user: i64, username: &Arc<str>) -> (bool, bool) {
        let present = self.entry(room, user, username);
        present.local += 1;
        let first_here = present.local == 1;
        (first_here, first_here && present.nodes.is_empty())
    }

    /// One connection fewer of `user` in `room` on this node. Returns whether this was the user's last
    /// connection in the room on this node (the other nodes must hear it) and whether they are now gone.
    pub fn leave_local(&mut self, room: i64, user: i64) -> (bool, bool) {
        let Some(present) = self.rooms.get_mut(&room).and_then(|users| users.get_mut(&user)) else {
            return (false, false);
        };
        present.local = present.local.saturating_sub(1);
        let last_here = present.local == 0;
        let gone = present.is_gone();
        if gone {
            self.remove(room, user);
        }
        (last_here, gone)
    }

    /// The users present in `room`, by name, sorted.
    pub fn names(&self, room: i64) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> =
            self.rooms.get(&room).map(|users| users.values().map(|p| p.username.clone()).collect()).unwrap_or_default();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// This node's members, for another node that asks (or to tell them after being cut off).
    pub fn local_members(&self) -> Vec<Member> {
        let mut members = Vec::new();
        for (&room, users) in &self.rooms {
            for (&user, present) in users.iter().filter(|(_, p)| p.local > 0) {
                members.push(Member { room, user, username: present.username.clone() });
            }
        }
        members
    }

    /// Another node was heard from; false if it was not known (it is new, or had been forgotten).
    pub fn heard(&mut self, node: &str, now: Instant) -> bool {
        match self.nodes.get_mut(node) {
            Some(known) => {
                known.seen = now;
                true
            }
            None => {
                self.nodes.insert(node.into(), Node { seen: now, members: HashSet::new() });
                false
            }
        }
    }

    /// Node `node` has `member` now (`here`) or no longer has them. Returns the transition, if any.
    pub fn remote(&mut self, node: &str, member: Member, here: bool, now: Instant) -> Option<Transition> {
        self.heard(node, now);
        let node: NodeId = self.nodes.get_key_value(node)?.0.clone();
        let known = self.nodes.get_mut(&node)?;
        let key = (member.room, member.user);
        if here {
            if !known.members.insert(key) {
                return None;
            }
            let present = self.entry(member.room, member.user, &member.username);
            let was_absent = present.is_gone();
            present.nodes.insert(node);
            was_absent.then_some(Transition { room: member.room, username: member.username, entered: true })
        } else {
            if !known.members.remove(&key) {
                return None;
            }
            self.forget(&node, key)
        }
    }

    /// Node `node` has exactly `members`: replaces what was known of it. Returns the transitions.
    pub fn replace(&mut self, node: &str, members: Vec<Member>, now: Instant) -> Vec<Transition> {
        self.heard(node, now);
        let wanted: HashSet<(i64, i64)> = members.iter().map(|m| (m.room, m.user)).collect();
        let before = self.nodes.get(node).map(|n| n.members.clone()).unwrap_or_default();
        let mut transitions: Vec<Transition> =
            before.difference(&wanted).filter_map(|&key| self.drop_membership(node, key)).collect();
        for member in members.into_iter().filter(|m| !before.contains(&(m.room, m.user))) {
            transitions.extend(self.remote(node, member, true, now));
        }
        transitions
    }

    /// Forgets the nodes not heard from since `cutoff`; returns the transitions that causes.
    pub fn expire(&mut self, cutoff: Instant) -> Vec<Transition> {
        let silent: Vec<NodeId> =
            self.nodes.iter().filter(|(_, n)| n.seen < cutoff).map(|(id, _)| id.clone()).collect();
        let mut transitions = Vec::new();
        for node in silent {
            if let Some(gone) = self.nodes.remove(&node) {
                transitions.extend(gone.members.into_iter().filter_map(|key| self.forget(&node, key)));
            }
        }
        transitions
    }

    /// How many other nodes are known (for tests and metrics).
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    fn drop_membership(&mut self, node: &str, key: (i64, i64)) -> Option<Transition> {
        self.nodes.get_mut(node)?.members.remove(&key);
        self.forget(node, key)
    }

    /// Takes `node` off the holders of `key`; the transition if the user is gone then.
    fn forget(&mut self, node: &str, (room, user): (i64, i64)) -> Option<Transition> {
        let present = self.rooms.get_mut(&room)?.get_mut(&user)?;
        present.nodes.remove(node);
        if !present.is_gone() {
            return None;
        }
        let username = present.username.clone();
        self.remove(room, user);
        Some(Transition { room, username, entered: false })
    }

    fn entry(&mut self, room: i64, user: i64, username: &Arc<str>) -> &mut Present {
        self.rooms.entry(room).or_default().entry(user).or_insert_with(|| Present {
            username: username.clone(),
            local: 0,
            nodes: BTreeSet::new(),
        })
    }

    fn remove(&mut self, room: i64, user: i64) {
        if let Some(users) = self.rooms.get_mut(&room) {
            users.remove(&user);
            if users.is_empty() {
                self.rooms.remove(&room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(room: i64, user: i64, name: &str) -> Member {
        Member { room, user, username: name.into() }
    }

    fn names(presence: &Presence, room: i64) -> Vec<String> {
        presence.names(room).iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_user_enters_with_the_first_connection_anywhere_and_leaves_with_the_last() {
        let mut presence = Presence::default();
        let (ann, b): (Arc<str>, NodeId) = ("ann".into(), "node-b".into());
        let now = Instant::now();
        assert_eq!(presence.enter_local(1, 7, &ann), (true, true));
        assert_eq!(presence.enter_local(1, 7, &ann), (false, false), "a second window");
        assert_eq!(presence.remote(&b, member(1, 7, "ann"), true, now), None, "on another node too");
        assert_eq!(presence.leave_local(1, 7), (false, false));
        assert_eq!(presence.leave_local(1, 7), (true, false), "still there through node b");
        assert_eq!(names(&presence, 1), ["ann"]);
        let left = presence.remote(&b, member(1, 7, "ann"), false, now);
        assert_eq!(left, Some(Transition { room: 1, username: ann, entered: false }));
        assert!(names(&presence, 1).is_empty());
    }

    #[test]
    fn a_silent_node_is_forgotten_and_its_users_leave_unless_held_elsewhere() {
        let mut presence = Presence::default();
        let start = Instant::now();
        let (b, c): (NodeId, NodeId) = ("b".into(), "c".into());
        presence.remote(&b, member(1, 1, "ann"), true, start);
        presence.remote(&b, member(1, 2, "bob"), true, start);
        presence.remote(&c, member(1, 2, "bob"), true, start);
        let later = start + NODE_TTL + Duration::from_secs(1);
        presence.heard(&c, later);
        let left = presence.expire(later - NODE_TTL);
        assert_eq!(left, [Transition { room: 1, username: "ann".into(), entered: false }]);
        assert_eq!(names(&presence, 1), ["bob"]);
        assert_eq!(presence.nodes(), 1);
    }

    #[test]
    fn a_snapshot_replaces_what_was_known_of_a_node() {
        let mut presence = Presence::default();
        let now = Instant::now();
        let b: NodeId = "b".into();
        presence.remote(&b, member(1, 1, "ann"), true, now);
        presence.remote(&b, member(2, 1, "ann"), true, now);
        let mut changes = presence.replace(&b, vec![member(2, 1, "ann"), member(2, 3, "cy")], now);
        changes.sort_by_key(|t| t.room);
        assert_eq!(
            changes,
            [
                Transition { room: 1, username: "ann".into(), entered: false },
                Transition { room: 2, username: "cy".into(), entered: true },
            ]
        );
        assert_eq!(names(&presence, 2), ["ann", "cy"]);
    }
}
