//! Per-room message order on one node: messages reach a node from its own writer and, through Redis, from
//! the other nodes' writers, and two nodes' messages can cross on the way. Ids are dense per room (the shared
//! database hands them out), so a node knows which id comes next: it holds a message that came early until
//! the ones before it arrive, and when they do not arrive in time it reads them from the database or, when
//! they are not stored there either, tells the members about the gap.

use std::collections::BTreeMap;

use crate::protocol::Frame;

/// What a room's members get next, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Chat message `id`.
    Message(i64, Frame),
    /// Messages `after+1 … before-1` will not come live: page them with `history` if wanted.
    Gap { after: i64, before: i64 },
}

/// The next id a room's members on this node should get, and the messages that came before their turn.
#[derive(Debug)]
pub struct Order {
    next: i64,
    early: BTreeMap<i64, Frame>,
    /// A catch-up from the database was asked for and has not run yet.
    pub catching_up: bool,
}

impl Order {
    /// A room whose members have seen everything up to message `last` (or it is history to them).
    pub fn after(last: i64) -> Order {
        Order { next: last + 1, early: BTreeMap::new(), catching_up: false }
    }

    /// The id of the last message released (the members' position).
    pub fn position(&self) -> i64 {
        self.next - 1
    }

    /// Whether messages are held waiting for earlier ones.
    pub fn waiting(&self) -> bool {
        !self.early.is_empty()
    }

    /// Takes message `id`: releases it, and whatever it unblocks, if it is next; holds it if it is early;
    /// drops it if it was released already (a copy that came the other way, or one read from the database).
    pub fn accept(&mut self, id: i64, frame: Frame, out: &mut Vec<Released>) {
        if id < self.next {
            return;
        }
        self.early.insert(id, frame);
        self.release_run(out);
    }

    /// Fills the gap with `found` (messages read from the database, in any order) and moves past what is
    /// still missing below `upto`, telling the members about it. `upto` is one past the newest id the
    /// database had, or `None` when it could not be read: then the gap before the first early message is
    /// given up on. Messages above `upto` stay held if something before them is still missing.
    pub fn fill(&mut self, found: impl IntoIterator<Item = (i64, Frame)>, upto: Option<i64>, out: &mut Vec<Released>) {
        for (id, frame) in found {
            if id >= self.next {
                self.early.entry(id).or_insert(frame);
            }
        }
        let upto = upto.or_else(|| self.early.keys().next().copied()).unwrap_or(self.next);
        while let Some(entry) = self.early.first_entry() {
            let id = *entry.key();
            if id >= upto {
                break;
            }
            if id > self.next {
                out.push(Released::Gap { after: self.next - 1, before: id });
            }
            out.push(Released::Message(id, entry.remove()));
            self.next = id + 1;
        }
        if self.next < upto {
            out.push(Released::Gap { after: self.next - 1, before: upto });
            self.next = upto;
        }
        self.release_run(out);
    }

    /// Releases the held messages that follow on without a hole.
    fn release_run(&mut self, out: &mut Vec<Released>) {
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            out.push(Released::Message(self.next, entry.remove()));
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: i64) -> Frame {
        Frame::from(format!("message {id}"))
    }

    fn ids(out: &[Released]) -> Vec<String> {
        out.iter()
            .map(|r| match r {
                Released::Message(id, _) => id.to_string(),
                Released::Gap { after, before } => format!("gap {after}..{before}"),
            })
            .collect()
    }

    #[test]
    fn messages_in_order_are_released_at_once() {
        let mut order = Order::after(4);
        let mut out = Vec::new();
        order.accept(5, frame(5), &mut out);
        order.accept(6, frame(6), &mut out);
        assert_eq!(ids(&out), ["5", "6"]);
        assert!(!order.waiting());
    }

    #[test]
    fn an_early_message_waits_for_the_one_before_it() {
        let mut order = Order::after(4);
        let mut out = Vec::new();
        order.accept(6, frame(6), &mut out);
        order.accept(7, frame(7), &mut out);
        assert!(out.is_empty() && order.waiting());
        order.accept(5, frame(5), &mut out);
        assert_eq!(ids(&out), ["5", "6", "7"]);
        assert_eq!(out[1], Released::Message(6, frame(6)), "each message keeps its own frame");
    }

    #[test]
    fn a_message_already_released_is_not_released_again() {
        let mut order = Order::after(4);
        let mut out = Vec::new();
        order.accept(5, frame(5), &mut out);
        order.accept(5, frame(5), &mut out);
        order.accept(3, frame(3), &mut out);
        assert_eq!(ids(&out), ["5"]);
    }

    #[test]
    fn a_gap_is_filled_from_the_database_in_id_order() {
        let mut order = Order::after(4);
        let mut out = Vec::new();
        order.accept(7, frame(7), &mut out);
        order.fill([(6, frame(6)), (5, frame(5)), (7, frame(7))], Some(8), &mut out);
        assert_eq!(ids(&out), ["5", "6", "7"]);
        assert!(!order.waiting());
    }

    #[test]
    fn what_the_database_no_longer_has_is_reported_as_a_gap() {
        let mut order = Order::after(4);
        let mut out = Vec::new();
        order.accept(9, frame(9), &mut out);
        // 5 and 6 were never stored (an ephemeral room), 8 was deleted by retention.
        order.fill([(7, frame(7))], Some(10), &mut out);
        assert_eq!(ids(&out), ["gap 4..7", "7", "gap 7..9", "9"]);
    }

    #[test]
    fn messages_newer_than_the_database_read_keep_waiting_for_their_predecessors() {
        let mut order = Order::after(4);
        let mut out = Vec::new();
        order.accept(8, frame(8), &mut out);
        // The database had up to 6; 7 was committed after the read and is still on its way.
        order.fill([(5, frame(5)), (6, frame(6))], Some(7), &mut out);
        assert_eq!(ids(&out), ["5", "6"]);
        assert!(order.waiting());
        order.accept(7, frame(7), &mut out);
        assert_eq!(ids(&out), ["5", "6", "7", "8"]);
    }

    #[test]
    fn when_the_database_cannot_be_read_the_gap_is_given_up_on() {
        let mut order = Order::after(4);
        let mut out = Vec::new();
        order.accept(7, frame(7), &mut out);
        order.fill([], None, &mut out);
        assert_eq!(ids(&out), ["gap 4..7", "7"]);
        assert_eq!(order.position(), 7);
    }

    #[test]
    fn catching_up_with_nothing_held_releases_what_the_database_has_newer() {
        let mut order = Order::after(4);
        let mut out = Vec::new();
        order.fill([(5, frame(5)), (6, frame(6))], Some(7), &mut out);
        assert_eq!(ids(&out), ["5", "6"]);
        order.accept(6, frame(6), &mut out);
        assert_eq!(ids(&out), ["5", "6"], "the live copy that comes later is dropped");
    }
}
