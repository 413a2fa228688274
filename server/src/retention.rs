//! Retention: deleting old messages in the background, as configured, and expired nonces.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::Db;

/// How long a nonce keeps a retried send from posting twice: far longer than any client retries.
pub const NONCE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Applies retention at start and then every `config.retention_interval`, until `shutdown`.
pub async fn run(db: Db, config: Arc<Config>, shutdown: CancellationToken) {
    loop {
        match db.apply_retention(config.retention_max_age, config.retention_per_room, NONCE_TTL).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "retention deleted old messages"),
            Err(err) => err.log_if_internal(),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.retention_interval) => {}
        }
    }
}
