//! MultiChat servers on the LAN, for the login window: one mDNS browser, started the first time a window asks,
//! whose list goes to every window watching it, whole, each time it changes.
//!
//! `MULTICHAT_DISCOVERY=off` turns LAN discovery off altogether (no browsing, no announcing): for test
//! configurations that must not touch the machine's network, and for anyone who wants it off.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use multichat_server::discovery::{Browser, Change, Found, Interfaces, Kind};
use serde::Serialize;
use tauri::ipc::Channel;

/// Whether this app may use LAN discovery at all (`MULTICHAT_DISCOVERY=off` says no).
pub fn enabled() -> bool {
    !matches!(std::env::var("MULTICHAT_DISCOVERY").as_deref(), Ok("off" | "0" | "false" | "no"))
}

/// The servers found so far, by their DNS-SD name.
#[derive(Debug, Default)]
pub struct ServerList(BTreeMap<String, Found>);

/// One entry of the login window's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LanServer {
    pub id: String,
    pub name: String,
    /// What a click puts in the address field.
    pub url: String,
    /// Hosted by someone's desktop app (rather than a headless server).
    pub desktop: bool,
    /// This app speaks its protocol (one it cannot is listed, but cannot be picked).
    pub compatible: bool,
}

impl ServerList {
    /// Applies a change; says whether the list shown changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Found(found) => self.0.insert(found.id.clone(), found.clone()).is_none_or(|old| old != found),
            Change::Lost { id } => self.0.remove(&id).is_some(),
        }
    }

    /// What the login window shows: servers with an address it can open, by name.
    pub fn shown(&self) -> Vec<LanServer> {
        let mut list: Vec<LanServer> = self
            .0
            .values()
            .filter_map(|found| {
                Some(LanServer {
                    id: found.id.clone(),
                    name: found.name.clone(),
                    url: found.url.clone()?,
                    desktop: found.kind == Some(Kind::Desktop),
                    compatible: found.compatible(),
                })
            })
            .collect();
        list.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then_with(|| a.url.cmp(&b.url)));
        list
    }
}

/// The browser and the windows watching its list.
pub struct Lan {
    enabled: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: bool,
    servers: ServerList,
    watchers: HashMap<String, Channel<Vec<LanServer>>>,
}

impl Lan {
    pub fn new(enabled: bool) -> Arc<Lan> {
        Arc::new(Lan { enabled, state: Mutex::default() })
    }

    /// Sends `window` the list now and whenever it changes; starts browsing if nothing has yet.
    pub fn watch(self: &Arc<Self>, window: &str, channel: Channel<Vec<LanServer>>) {
        let mut state = self.lock();
        let _ = channel.send(state.servers.shown());
        state.watchers.insert(window.to_owned(), channel);
        if self.enabled && !std::mem::replace(&mut state.started, true) {
            tauri::async_runtime::spawn(self.clone().browse());
        }
    }

    pub fn unwatch(&self, window: &str) {
        self.lock().watchers.remove(window);
    }

    async fn browse(self: Arc<Self>) {
        let mut browser = match Browser::start(&Interfaces::default()) {
            Ok(browser) => browser,
            // No multicast here, say: the list stays empty and typing an address works as ever.
            Err(err) => return tracing::warn!(cause = %err, "servers on the LAN will not be listed"),
        };
        while let Some(change) = browser.next().await {
            let mut state = self.lock();
            if state.servers.apply(change) {
                let shown = state.servers.shown();
                state.watchers.retain(|_, channel| channel.send(shown.clone()).is_ok());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multichat_server::discovery::PROTOCOL_VERSION;

    fn found(id: &str, name: &str, url: Option<&str>) -> Found {
        Found {
            id: id.into(),
            name: name.into(),
            kind: Some(Kind::Server),
            protocol: Some(PROTOCOL_VERSION),
            version: None,
            port: 8000,
            addresses: Vec::new(),
            url: url.map(Into::into),
        }
    }

    #[test]
    fn the_list_is_by_name_and_drops_servers_that_went_away() {
        let mut list = ServerList::default();
        assert!(list.apply(Change::Found(found("b", "bravo", Some("http://10.0.0.2:8000")))));
        assert!(list.apply(Change::Found(found("a", "Alpha", Some("http://10.0.0.1:8000")))));
        let names: Vec<_> = list.shown().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["Alpha", "bravo"]);
        assert!(list.apply(Change::Lost { id: "b".into() }));
        assert_eq!(list.shown().len(), 1);
        assert!(!list.apply(Change::Lost { id: "b".into() }), "losing it twice changes nothing");
    }

    #[test]
    fn a_server_seen_again_changes_the_list_only_if_something_changed() {
        let mut list = ServerList::default();
        assert!(list.apply(Change::Found(found("a", "Alpha", Some("http://10.0.0.1:8000")))));
        assert!(!list.apply(Change::Found(found("a", "Alpha", Some("http://10.0.0.1:8000")))));
        assert!(list.apply(Change::Found(found("a", "Alpha", Some("http://10.0.0.9:8000")))));
        assert_eq!(list.shown()[0].url, "http://10.0.0.9:8000");
    }

    #[test]
    fn a_server_without_an_address_to_open_is_not_shown_and_an_incompatible_one_is_marked() {
        let mut list = ServerList::default();
        list.apply(Change::Found(found("v6", "Link-local only", None)));
        let mut newer = found("n", "Newer", Some("http://10.0.0.3:8000"));
        newer.protocol = Some(PROTOCOL_VERSION + 1);
        list.apply(Change::Found(newer));
        let shown = list.shown();
        assert_eq!(shown.len(), 1);
        assert!(!shown[0].compatible);
    }
}
