//! The app's state, shared by every command: the session, the settings, and the hosted server.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use multichat_server::discovery::{self, Announcement, Interfaces, Kind};
use serde::Serialize;
use serde_json::Value;
use tauri::{AppHandle, Wry};
use tauri_plugin_store::{Store, StoreExt};

use crate::credentials::{CredentialStore, SystemKeyring};
use crate::error::{Error, Result};
use crate::host::{self, Host, HostSettings};
use crate::lan::{self, Lan};
use crate::session::Sessions;
use crate::settings::{Hosting, Settings};
use crate::tls;
use crate::windows::AppWindows;

/// The store file and the key the settings live under.
const STORE: &str = "settings.json";
const KEY: &str = "settings";

pub struct Desktop {
    pub sessions: Sessions,
    pub windows: Arc<AppWindows>,
    /// Servers found on the LAN, for the login window.
    pub lan: Arc<Lan>,
    /// LAN discovery may run (browsing and announcing); see [`lan::enabled`].
    discovery: bool,
    store: Arc<Store<Wry>>,
    settings: Mutex<Settings>,
    hosted: tokio::sync::Mutex<Hosted>,
    data_dir: PathBuf,
}

#[derive(Default)]
struct Hosted {
    host: Option<Host>,
    /// The settings the running host was started or last changed with.
    running: Option<Hosting>,
    /// Why hosting failed last (the port is taken, say), until it works.
    error: Option<String>,
}

/// What the "Host server" panel shows.
#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub enabled: bool,
    pub ip: String,
    pub port: u16,
    pub running: bool,
    /// Where others reach it (`http://192.168.1.20:8000`), while running.
    pub addresses: Vec<String>,
    /// The address this app logs in at.
    pub local: Option<String>,
    pub needs_admin: bool,
    pub error: Option<String>,
    /// Whether to announce it on the LAN, and under which name ("" for the default one).
    pub advertise: bool,
    pub name: String,
    /// The name announced when none is set.
    pub default_name: String,
    /// Whether the LAN is being told about it right now.
    pub announced: bool,
}

impl Desktop {
    pub fn new(app: &AppHandle, data_dir: PathBuf) -> Result<Desktop> {
        let store = app.store(STORE).map_err(|e| Error::Settings(e.to_string()))?;
        let settings = store.get(KEY).and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
        let credentials: Arc<dyn CredentialStore> = Arc::new(SystemKeyring::default());
        let windows = Arc::new(AppWindows::new(app.clone()));
        let discovery = lan::enabled();
        if !discovery {
            tracing::info!("LAN discovery is off (MULTICHAT_DISCOVERY)");
        }
        Ok(Desktop {
            sessions: Sessions::new(credentials, windows.clone(), tls::client_config(&[])?),
            windows,
            lan: Lan::new(discovery),
            discovery,
            store,
            settings: Mutex::new(settings),
            hosted: tokio::sync::Mutex::default(),
            data_dir,
        })
    }

    pub fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the settings and writes them to disk.
    pub async fn change_settings<T>(&self, change: impl AsyncFnOnce(&mut Settings) -> T) -> Result<T> {
        let mut settings = self.settings();
        let out = change(&mut settings).await;
        self.store.set(KEY, serde_json::to_value(&settings).unwrap_or(Value::Null));
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
        self.store.save().map_err(|e| Error::Settings(e.to_string()))?;
        Ok(out)
    }

    /// Starts or stops hosting as `hosting` says, and remembers it for the next start.
    pub async fn set_hosting(&self, hosting: Hosting) -> Result<HostStatus> {
        self.change_settings(async |s| s.host = hosting.clone()).await?;
        self.apply_hosting().await;
        Ok(self.host_status().await)
    }

    /// Makes the hosted server match the settings (at start, and after a change).
    pub async fn apply_hosting(&self) {
        let wanted = self.settings().host;
        let mut hosted = self.hosted.lock().await;
        let Hosted { host, running, error } = &mut *hosted;
        if let (true, Some(host), Some(running)) = (wanted.enabled, host.as_mut(), running.as_mut()) {
            if running.ip == wanted.ip && running.port == wanted.port {
                // Same address: only the announcement may have changed, and the server keeps running.
                if (running.advertise, &running.name) != (wanted.advertise, &wanted.name) {
                    host.announce(self.announcement(&wanted));
                    *running = wanted;
                }
                return;
            }
        }
        if let Some(host) = host.take() {
            host.stop().await;
        }
        *running = None;
        *error = None;
        if wanted.enabled {
            let settings = HostSettings {
                bind: wanted.bind(),
                data_dir: self.data_dir.join("server"),
                announce: self.announcement(&wanted),
            };
            match Host::start(&settings).await {
                Ok(started) => {
                    *host = Some(started);
                    *running = Some(wanted);
                }
                Err(err) => *error = Some(err.to_string()),
            }
        }
    }

    /// How the hosted server announces itself, if it does.
    fn announcement(&self, hosting: &Hosting) -> Option<Announcement> {
        let name = match hosting.name.trim() {
            "" => discovery::default_name(),
            name => name.to_owned(),
        };
        (self.discovery && hosting.advertise).then(|| Announcement {
            name,
            kind: Kind::Desktop,
            bind: hosting.bind(),
            interfaces: Interfaces::default(),
        })
    }

    pub async fn host_status(&self) -> HostStatus {
        let wanted = self.settings().host;
        let hosted = self.hosted.lock().await;
        let host = hosted.host.as_ref();
        let needs_admin = match host {
            Some(host) => host.needs_admin().await.unwrap_or(false),
            None => false,
        };
        HostStatus {
            enabled: wanted.enabled,
            ip: wanted.ip.to_string(),
            port: wanted.port,
            running: host.is_some(),
            addresses: host.map(|h| host::addresses(h.addr())).unwrap_or_default(),
            local: host.map(|h| format!("http://127.0.0.1:{}", h.addr().port())),
            needs_admin,
            error: hosted.error.clone(),
            advertise: wanted.advertise,
            name: wanted.name,
            default_name: discovery::default_name(),
            announced: host.is_some_and(Host::announced),
        }
    }

    /// Creates the hosted server's first admin.
    pub async fn create_host_admin(&self, username: &str, password: &str) -> Result<()> {
        let hosted = self.hosted.lock().await;
        let host = hosted.host.as_ref().ok_or(Error::Unreachable)?;
        host.create_admin(username, password).await
    }

    /// Stops hosting gracefully (the app is quitting).
    pub async fn shut_down(&self) {
        if let Some(host) = self.hosted.lock().await.host.take() {
            host.stop().await;
        }
    }
}
