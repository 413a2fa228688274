//! What the app remembers between starts (in `settings.json` through `tauri-plugin-store`): the servers used
//! last, who logged in last, and whether and where to host. Never a password or a token: those are the
//! keyring's ([`crate::credentials`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::address::DEFAULT_PORT;

/// How many recent servers the login window offers.
pub const RECENT_SERVERS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Servers logged into, the latest first.
    pub recent_servers: Vec<String>,
    /// The last login that asked to be remembered: the next start looks up its token in the keyring.
    pub remembered: Option<Remembered>,
    pub host: Hosting,
    /// The rooms open in the main window, per account (`ann@http://lan:8000`), reopened at the next login.
    pub open_rooms: std::collections::BTreeMap<String, Vec<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub server: String,
    pub username: String,
}

/// The "Host server" toggle and where it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hosting {
    /// On: the app hosts whenever it runs (it starts hosting again on the next start).
    pub enabled: bool,
    /// `0.0.0.0` serves every network this computer is on; a single address serves that one only.
    pub ip: IpAddr,
    pub port: u16,
    /// Announce the hosted server on the LAN, so that others' apps list it (on unless the host turns it off).
    pub advertise: bool,
    /// The name others see in that list; empty for "MultiChat on <this computer's name>".
    pub name: String,
}

impl Default for Hosting {
    fn default() -> Hosting {
        Hosting {
            enabled: false,
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_PORT,
            advertise: true,
            name: String::new(),
        }
    }
}

impl Hosting {
    pub fn bind(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl Settings {
    /// Puts `server` first among the recent ones (once), keeping the newest few.
    pub fn used_server(&mut self, server: &str) {
        self.recent_servers.retain(|s| s != server);
        self.recent_servers.insert(0, server.to_owned());
        self.recent_servers.truncate(RECENT_SERVERS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_servers_are_latest_first_once_each_and_few() {
        let mut settings = Settings::default();
        for i in 0..10 {
            settings.used_server(&format!("http://s{i}:8000"));
        }
        settings.used_server("http://s5:8000");
        assert_eq!(settings.recent_servers.len(), RECENT_SERVERS);
        assert_eq!(settings.recent_servers[0], "http://s5:8000");
        assert_eq!(settings.recent_servers.iter().filter(|s| *s == "http://s5:8000").count(), 1);
        assert_eq!(settings.recent_servers[1], "http://s9:8000");
    }

    #[test]
    fn settings_from_an_older_or_partial_file_fill_in_defaults() {
        let settings: Settings = serde_json::from_str(r#"{"host":{"enabled":true}}"#).unwrap();
        assert!(settings.host.enabled);
        assert_eq!(settings.host.port, DEFAULT_PORT);
        assert!(settings.host.advertise, "a host from before LAN discovery is announced");
        assert!(settings.recent_servers.is_empty());
    }
}
