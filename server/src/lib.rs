//! MultiChat server: accounts, rooms, staff-only rooms, and every joined room multiplexed over one
//! WebSocket, wire-compatible with the original Django Channels "multichat".
//!
//! The caller binds the listener and owns shutdown, so the same [`serve`] runs the headless binary, the
//! desktop app's embedded host, and the tests (on port 0).

pub mod accounts;
pub mod api;
pub mod auth;
pub mod catch_up;
pub mod client_addr;
pub mod cluster;
pub mod config;
pub mod db;
pub mod discovery;
pub mod error;
pub mod hub;
pub mod protocol;
pub mod retention;
pub mod username;
pub mod web;
pub mod writer;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use db::Db;
pub use error::Error;

use auth::{LoginThrottle, Passwords};
use cluster::{Cluster, RedisOptions};
use hub::{CloseReason, Hub};
use writer::Writer;

/// Handles to everything a request may need; cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub passwords: Passwords,
    pub throttle: Arc<LoginThrottle>,
    /// Stores and publishes what users say.
    pub writer: Writer,
    /// Cancelled to shut the server down; connection tasks watch it too.
    pub shutdown: CancellationToken,
    /// The connection tasks, so that shutdown can wait for their close frames.
    pub tasks: TaskTracker,
    /// Alone, or linked to other nodes through Redis.
    pub cluster: Cluster,
}

impl AppState {
    /// Builds the state and starts the message writer; call it inside a Tokio runtime.
    pub fn new(db: Db, config: Config, shutdown: CancellationToken) -> Result<AppState, Error> {
        let (hub, catch_ups) = Hub::new(config.outbound_queue, config.presence_notices);
        tokio::spawn(catch_up::run(db.clone(), hub.clone(), catch_ups, config.replay_max, shutdown.clone()));
        Ok(AppState {
            writer: Writer::spawn(db.clone(), hub.clone()),
            db,
            hub,
            passwords: Passwords::new(config.hash_concurrency)?,
            throttle: Arc::new(LoginThrottle::new(config.login_backoff_cap)),
            config: Arc::new(config),
            shutdown,
            tasks: TaskTracker::new(),
            cluster: Cluster::default(),
        })
    }

    /// Links this node to the other nodes of its deployment through Redis (see [`cluster`]); call it
    /// before [`serve`]. Fails only on unusable options: a Redis that is down is retried in the background.
    pub fn link(&mut self, redis: RedisOptions) -> Result<(), Error> {
        let (cluster, link) = cluster::link(self.hub.clone(), self.db.clone(), redis, self.shutdown.clone())?;
        self.tasks.spawn(link);
        self.cluster = cluster;
        Ok(())
    }
}

/// The whole HTTP surface: the API, the chat socket, the health check, and the web client.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::router())
        .merge(ws::router())
        .fallback(web::asset)
        // The API takes small JSON documents; nothing legitimate comes near this.
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves on `listener` until `state.shutdown` is cancelled, then stops accepting, closes every chat
/// socket with 1001 and returns once they are gone.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    state.tasks.spawn(retention::run(state.db.clone(), state.config.clone(), shutdown.clone()));
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // Chat frames are small and latency matters: without TCP_NODELAY, a second frame written right after a
    // first (an ack, then the message) waits for the peer's delayed ACK, tens of milliseconds.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(cause = %err, "could not set TCP_NODELAY");
        }
    });
    // Chat sockets are told to close through the hub, the one signal their loops watch.
    let hub = state.hub.clone();
    let closing = shutdown.clone().cancelled_owned();
    tokio::spawn(async move {
        closing.await;
        hub.close_all(CloseReason::Shutdown);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    state.tasks.close();
    state.tasks.wait().await;
    Ok(())
}

/// Connects to the configured database and migrates it.
pub async fn open_database(database_url: Option<&str>, data_dir: &std::path::Path) -> Result<Db, Error> {
    open_database_with(database_url, data_dir, db::PoolOptions::default()).await
}

/// [`open_database`] with the pool sized and timed as `pool` says (for a database given by URL).
pub async fn open_database_with(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
    pool: db::PoolOptions,
) -> Result<Db, Error> {
    let db = match database_url {
        Some(url) => Db::connect_with(url, pool).await?,
        None => Db::open_sqlite_dir(data_dir).await?,
    };
    db.migrate().await?;
    Ok(db)
}
