//! "Host server": the `multichat_server` library running inside the app, so that one click serves the LAN.
//!
//! The server gets its own SQLite database in the app's data directory and runs on the app's Tokio runtime
//! (Tauri's), not a second one; stopping it is the same graceful shutdown as the headless binary's.

use std::net::SocketAddr;
use std::path::PathBuf;

use multichat_server::accounts::{self, Rights};
use multichat_server::discovery::{Advertiser, Announcement};
use multichat_server::{open_database, AppState, Config};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Where and how to host.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// The address to listen on: `0.0.0.0:8000` serves the whole LAN.
    pub bind: SocketAddr,
    /// Where the hosted server keeps its database.
    pub data_dir: PathBuf,
    /// How it announces itself on the LAN, if it does (its `bind` is replaced by the real address).
    pub announce: Option<Announcement>,
}

/// A server running inside the app.
pub struct Host {
    addr: SocketAddr,
    state: AppState,
    task: JoinHandle<std::io::Result<()>>,
    advertiser: Option<Advertiser>,
}

impl Host {
    /// Opens (creating and migrating) the host's database and starts serving.
    pub async fn start(settings: &HostSettings) -> Result<Host> {
        let db = open_database(None, &settings.data_dir).await?;
        let listener = tokio::net::TcpListener::bind(settings.bind)
            .await
            .map_err(|cause| Error::Bind { addr: settings.bind, cause })?;
        let addr = listener.local_addr().map_err(|cause| Error::Bind { addr: settings.bind, cause })?;
        let state = AppState::new(db, Config::default(), CancellationToken::new())?;
        let task = tokio::spawn(multichat_server::serve(listener, state.clone()));
        tracing::info!(%addr, "hosting a server");
        let mut host = Host { addr, state, task, advertiser: None };
        host.announce(settings.announce.clone());
        Ok(host)
    }

    /// Starts, changes or (with `None`) withdraws the announcement on the LAN, leaving the server running.
    /// A LAN where mDNS cannot run costs the announcement only: it is logged, and the server serves on.
    pub fn announce(&mut self, announce: Option<Announcement>) {
        // The old announcement is dropped: its daemon sends the goodbyes on its own thread.
        self.advertiser = None;
        if let Some(announce) = announce {
            let announce = Announcement { bind: self.addr, ..announce };
            match Advertiser::start(&announce) {
                Ok(advertiser) => self.advertiser = Some(advertiser),
                Err(err) => tracing::warn!(cause = %err, "the hosted server is not announced on the LAN"),
            }
        }
    }

    /// Whether the LAN is being told about this server.
    pub fn announced(&self) -> bool {
        self.advertiser.is_some()
    }

    /// The address it listens on (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the host must still create its server's admin account (no account exists yet).
    pub async fn needs_admin(&self) -> Result<bool> {
        Ok(self.state.db.count_users().await? == 0)
    }

    /// Creates the first admin (staff too) of the hosted server.
    pub async fn create_admin(&self, username: &str, password: &str) -> Result<()> {
        let rights = Rights { is_staff: true, is_admin: true };
        accounts::create(&self.state.db, &self.state.passwords, username, password, rights).await?;
        Ok(())
    }

    /// Stops accepting, closes every chat socket with 1001, and waits until the server has stopped.
    pub async fn stop(mut self) {
        // Withdrawn first: the LAN's lists drop the server before its sockets close.
        if let Some(advertiser) = self.advertiser.take() {
            advertiser.stop().await;
        }
        self.state.shutdown.cancel();
        if let Ok(Err(err)) = self.task.await {
            tracing::warn!(cause = %err, "the hosted server stopped with an error");
        }
        self.state.db.close().await;
        tracing::info!(addr = %self.addr, "stopped hosting");
    }
}

/// The addresses others can open to reach a server listening on `bind`: every non-loopback IPv4 address of
/// this computer when it listens on all of them, else just its own; loopback last, for this computer.
pub fn addresses(bind: SocketAddr) -> Vec<String> {
    let port = bind.port();
    let mut ips: Vec<std::net::IpAddr> = if bind.ip().is_unspecified() {
        let mut lan: Vec<_> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .map(|interface| interface.ip())
            .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
            .collect();
        lan.sort();
        lan.dedup();
        lan.push(std::net::Ipv4Addr::LOCALHOST.into());
        lan
    } else {
        vec![bind.ip()]
    };
    ips.dedup();
    ips.into_iter().map(|ip| format!("http://{}", SocketAddr::new(ip, port))).collect()
}
