//! The app's windows as the chat socket sees them: each window hands over a Tauri channel when its page
//! starts, and frames, state changes and notifications go out through it — to that window only.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};
use tauri::ipc::Channel;
use tauri::AppHandle;
use tauri_plugin_notification::NotificationExt;

use crate::connection::{State, Windows};

pub struct AppWindows {
    app: AppHandle,
    channels: Mutex<HashMap<String, Channel<Value>>>,
    /// The socket's state event, numbered so a window can tell the newest from one overtaken on its way.
    state: Mutex<(u64, Value)>,
}

impl AppWindows {
    pub fn new(app: AppHandle) -> AppWindows {
        AppWindows { app, channels: Mutex::default(), state: Mutex::new((0, state_event(0, State::Closed, None))) }
    }

    /// A window's page started: from now on its frames go to `channel`. Returns the socket's state.
    pub fn attach(&self, window: &str, channel: Channel<Value>) -> Value {
        lock(&self.channels).insert(window.to_owned(), channel);
        lock(&self.state).1.clone()
    }

    pub fn detach(&self, window: &str) {
        lock(&self.channels).remove(window);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn state_event(seq: u64, state: State, why: Option<&str>) -> Value {
    json!({ "kind": "state", "seq": seq, "state": state, "why": why })
}

impl Windows for AppWindows {
    fn deliver(&self, window: &str, frame: &str) {
        if let Some(channel) = lock(&self.channels).get(window) {
            if channel.send(json!({ "kind": "frame", "frame": frame })).is_err() {
                tracing::debug!(window, "a window did not take a frame");
            }
        }
    }

    fn deliver_to_all(&self, frame: &str) {
        let event = json!({ "kind": "frame", "frame": frame });
        for channel in lock(&self.channels).values() {
            let _ = channel.send(event.clone());
        }
    }

    fn state(&self, state: State, why: Option<&str>) {
        let mut current = lock(&self.state);
        let event = state_event(current.0 + 1, state, why);
        *current = (current.0 + 1, event.clone());
        drop(current);
        for channel in lock(&self.channels).values() {
            let _ = channel.send(event.clone());
        }
    }

    fn notify(&self, title: &str, body: &str) {
        if let Err(err) = self.app.notification().builder().title(title).body(body).show() {
            tracing::info!(cause = %err, "no desktop notification");
        }
    }
}
