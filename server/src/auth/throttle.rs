//! Login throttling: exponential backoff per username and per client address.
//!
//! Names that do not exist are counted exactly like real ones, so the throttle reveals nothing about
//! which accounts exist; the backoff is capped so that nobody can lock an admin out for good.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

/// How quickly failures are punished. Each failure past `free` doubles the wait, from `base` up to `cap`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub free: u32,
    pub base: Duration,
    pub cap: Duration,
}

/// Failed-login counters, kept in memory (a restart forgives, which the cap makes harmless).
pub struct LoginThrottle {
    per_name: Backoff,
    per_addr: Backoff,
    entries: Mutex<HashMap<Key, Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Name(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

/// Entries are swept once the table is this large, so that a spray of random names cannot grow it forever.
const SWEEP_AT: usize = 50_000;

impl LoginThrottle {
    pub fn new(cap: Duration) -> LoginThrottle {
        let base = Duration::from_secs(1);
        LoginThrottle {
            per_name: Backoff { free: 3, base, cap },
            per_addr: Backoff { free: 20, base, cap },
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a login attempt: fails with [`Error::Throttled`] (and the seconds to wait) while `name_key` or
    /// `addr` is backing off; otherwise counts the attempt as failed at once, until [`LoginThrottle::succeeded`]
    /// takes it back. Counting before the password is checked is what stops a burst of concurrent guesses
    /// from all getting through before the first failure is known.
    pub fn attempt(&self, name_key: &str, addr: Option<IpAddr>) -> Result<(), Error> {
        let mut entries = self.lock();
        // The clock is read under the lock: a success unblocks an address by setting its `blocked_until` to
        // its own now, which an attempt that read the clock before queueing for the lock would take for a
        // wait of a few nanoseconds, and refuse a login that nothing blocks.
        let now = Instant::now();
        let wait = self
            .keys(name_key, addr)
            .filter_map(|key| entries.get(&key))
            .map(|e| e.blocked_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if !wait.is_zero() {
            return Err(Error::Throttled(wait.as_secs_f64().ceil() as u64));
        }
        self.count(&mut entries, name_key, addr, now);
        Ok(())
    }

    /// The attempt succeeded: forgets the failures of `name_key`, and takes this attempt back from `addr`.
    pub fn succeeded(&self, name_key: &str, addr: Option<IpAddr>) {
        let mut entries = self.lock();
        entries.remove(&Key::Name(name_key.to_owned()));
        if let Some(addr) = addr {
            self.take_back(&mut entries, Key::Addr(addr));
        }
    }

    /// The server failed (a database that went away, a stored hash it cannot read) before the password was
    /// judged: the attempt is taken back from both, so that an outage does not lock out whoever retried
    /// through it.
    pub fn not_judged(&self, name_key: &str, addr: Option<IpAddr>) {
        let mut entries = self.lock();
        for key in self.keys(name_key, addr) {
            self.take_back(&mut entries, key);
        }
    }

    fn take_back(&self, entries: &mut HashMap<Key, Entry>, key: Key) {
        let free = self.backoff(&key).free;
        if let Some(entry) = entries.get_mut(&key) {
            entry.failures = entry.failures.saturating_sub(1);
            if entry.failures <= free {
                entry.blocked_until = Instant::now();
            }
        }
    }

    /// Counts one failure against `name_key` and `addr`.
    fn count(&self, entries: &mut HashMap<Key, Entry>, name_key: &str, addr: Option<IpAddr>, now: Instant) {
        if entries.len() >= SWEEP_AT {
            let forget = self.per_name.cap.max(self.per_addr.cap) * 2;
            entries.retain(|_, e| now.duration_since(e.last_failure) < forget);
        }
        for key in self.keys(name_key, addr) {
            let backoff = self.backoff(&key);
            let entry = entries.entry(key).or_insert(Entry { failures: 0, last_failure: now, blocked_until: now });
            // A quiet spell twice the cap long forgives the past.
            if now.duration_since(entry.last_failure) > backoff.cap * 2 {
                entry.failures = 0;
            }
            entry.failures += 1;
            entry.last_failure = now;
            if entry.failures > backoff.free {
                let doublings = (entry.failures - backoff.free - 1).min(20);
                entry.blocked_until = now + (backoff.base * 2u32.pow(doublings)).min(backoff.cap);
            }
        }
    }

    fn backoff(&self, key: &Key) -> Backoff {
        match key {
            Key::Name(_) => self.per_name,
            Key::Addr(_) => self.per_addr,
        }
    }

    fn keys(&self, name_key: &str, addr: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::Name(name_key.to_owned())).chain(addr.map(Key::Addr))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_past_the_free_ones_back_off_exponentially_up_to_the_cap() {
        let throttle = LoginThrottle::new(Duration::from_secs(4));
        for _ in 0..4 {
            throttle.attempt("alice", None).unwrap();
        }
        assert!(matches!(throttle.attempt("alice", None), Err(Error::Throttled(1))), "the 4th failure blocks");
        let now = Instant::now();
        let mut entries = throttle.lock();
        throttle.count(&mut entries, "alice", None, now);
        assert_eq!(entries[&Key::Name("alice".into())].blocked_until - now, Duration::from_secs(2), "doubling");
        for _ in 0..10 {
            throttle.count(&mut entries, "alice", None, now);
        }
        assert_eq!(entries[&Key::Name("alice".into())].blocked_until - now, Duration::from_secs(4), "capped");
        drop(entries);
        throttle.attempt("bob", None).unwrap();
        throttle.succeeded("alice", None);
        throttle.attempt("alice", None).unwrap();
    }

    #[test]
    fn a_success_takes_its_attempt_back() {
        let throttle = LoginThrottle::new(Duration::from_secs(60));
        let addr: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..100 {
            throttle.attempt("carol", Some(addr)).unwrap();
            throttle.succeeded("carol", Some(addr));
        }
        throttle.attempt("carol", Some(addr)).unwrap();
    }

    #[test]
    fn many_people_behind_one_address_logging_in_at_once_are_never_refused() {
        // Everyone in an office behind one NAT logs in at nine: successes must not block each other.
        let throttle = LoginThrottle::new(Duration::from_secs(60));
        let addr: IpAddr = "192.0.2.8".parse().unwrap();
        std::thread::scope(|threads| {
            for person in 0..4 {
                let throttle = &throttle;
                threads.spawn(move || {
                    for n in 0..20_000 {
                        let name = format!("p{person}-{n}");
                        throttle.attempt(&name, Some(addr)).unwrap_or_else(|e| panic!("login {n} of {person}: {e}"));
                        throttle.succeeded(&name, Some(addr));
                    }
                });
            }
        });
    }

    #[test]
    fn an_attempt_the_server_could_not_judge_is_taken_back() {
        let throttle = LoginThrottle::new(Duration::from_secs(60));
        let addr: IpAddr = "192.0.2.6".parse().unwrap();
        for _ in 0..30 {
            throttle.attempt("dave", Some(addr)).unwrap();
            throttle.not_judged("dave", Some(addr));
        }
        for _ in 0..4 {
            throttle.attempt("dave", Some(addr)).unwrap();
        }
        assert!(throttle.attempt("dave", Some(addr)).is_err(), "real failures still count");
    }

    #[test]
    fn one_address_trying_many_names_is_throttled_too() {
        let throttle = LoginThrottle::new(Duration::from_secs(60));
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..21 {
            throttle.attempt(&format!("user{i}"), Some(addr)).unwrap();
        }
        assert!(throttle.attempt("someone-else", Some(addr)).is_err());
        assert!(throttle.attempt("someone-else", None).is_ok());
    }
}
