//! `idle`: many authenticated sockets doing nothing. What each costs the server in memory, and how fast they
//! connect.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{provision, Connector};
use crate::report::Report;
use crate::target::Target;

/// Handshakes in flight at once.
const CONNECTING_AT_ONCE: usize = 256;

pub struct Idle {
    pub connections: usize,
    pub users: usize,
    /// How long the sockets are held (and watched) once all are open.
    pub hold: Duration,
}

pub async fn run(target: &Target, idle: Idle) -> anyhow::Result<Report> {
    let parameters = json!({ "connections": idle.connections, "users": idle.users, "hold_s": idle.hold.as_secs_f64() });
    let mut report = Report::new("idle", &target.description, parameters);
    let accounts = provision(target, idle.users, 0).await?;
    let connector = Connector::new(target.addr);
    settle().await;
    let before = target.rss();

    let started = Instant::now();
    let opened: Vec<_> = stream::iter(0..idle.connections)
        .map(|n| {
            let (connector, token) = (connector.clone(), accounts.token(n).to_owned());
            async move { connector.connect(n, &token).await }
        })
        .buffer_unordered(CONNECTING_AT_ONCE)
        .collect()
        .await;
    let connect_time = started.elapsed();
    let mut sockets = Vec::with_capacity(opened.len());
    let mut refused = 0;
    for socket in opened {
        match socket {
            Ok(socket) => sockets.push(socket),
            Err(err) => {
                refused += 1;
                if refused == 1 {
                    report.fail(format!("a connection failed: {err:#}"));
                }
            }
        }
    }
    if refused > 0 {
        report.fail(format!("{refused} of {} connections failed", idle.connections));
    }
    report.figure("connections", sockets.len() as f64, "sockets");
    report.figure("connect_rate", sockets.len() as f64 / connect_time.as_secs_f64(), "sockets/s");

    // Each socket is read by a task of its own (as a client would), which notes if the server closes it.
    let closed = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let closed = closed.clone();
            tokio::spawn(async move {
                while let Some(frame) = socket.next().await {
                    if matches!(frame, Ok(Message::Close(_)) | Err(_)) {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    settle().await;
    if let (Some(before), Some(after)) = (before, target.rss()) {
        report.figure("server_rss_before", before as f64 / 1048576.0, "MiB");
        report.figure("server_rss_after", after as f64 / 1048576.0, "MiB");
        let per = after.saturating_sub(before) as f64 / readers.len().max(1) as f64;
        report.figure("server_rss_per_connection", per / 1024.0, "KiB");
    }
    tokio::time::sleep(idle.hold).await;
    let lost = closed.load(Ordering::Relaxed);
    if lost > 0 {
        report.fail(format!("the server closed {lost} idle sockets"));
    }
    for reader in readers {
        reader.abort();
    }
    Ok(report)
}

/// Lets the server's memory settle (freed buffers returned, tasks parked) before it is read.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}
