//! Per-room ordering: a room's messages are stored and published one at a time, so every member sees
//! them in id order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// One async lock per room, made on first use.
#[derive(Default)]
pub struct RoomOrder {
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoomOrder {
    /// Waits for `room`'s turn; the turn lasts as long as the guard.
    pub async fn lock(&self, room: i64) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(room).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Forgets a deleted room's lock.
    pub fn forget(&self, room: i64) {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(&room);
    }
}
