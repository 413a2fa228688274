//! Catching rooms up from the database: the one task that reads the messages a room's members on this node
//! should have had but did not get live (another node's message lost or late on the way, or missed while
//! this node was cut off from Redis). The hub asks, this task reads, the hub releases them in order.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::hub::{CatchUp, Hub};
use crate::protocol::{Event, Frame};

/// Serves the hub's catch-up requests until shutdown. At most `limit` messages are read per room (the
/// newest); the members are told of the gap before them.
pub async fn run(
    db: Db,
    hub: Arc<Hub>,
    mut requests: mpsc::UnboundedReceiver<CatchUp>,
    limit: i64,
    shutdown: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            request = requests.recv() => match request {
                Some(request) => request,
                None => return,
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(request.not_before) => {}
        }
        let Some(position) = hub.catch_up_from(request.room, request.latest) else { continue };
        match db.replay(request.room, position, limit).await {
            Ok((history, newest)) => {
                let found: Vec<(i64, Frame)> =
                    history.messages.iter().map(|m| (m.id, Event::from(m).encode())).collect();
                hub.caught_up(request.room, found, Some(newest));
            }
            Err(err) => {
                tracing::warn!(room = request.room, cause = %err, "could not read missed messages; telling the room of the gap");
                hub.caught_up(request.room, Vec::new(), None);
            }
        }
    }
}
