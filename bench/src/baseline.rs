//! The ceiling: a bare tokio fan-out server with none of MultiChat's features (no accounts, no storage, no
//! rights, no presence), speaking just enough of the protocol for the scenarios — `join`, `leave`, `send` and
//! the message frame. Every figure of the real server is reported as a ratio to this one, measured on the same
//! machine in the same sitting. It does what the real server should: encodes each message once and shares the
//! bytes, writes everything queued for a socket in one flush, and keeps small read buffers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames queued for one socket; beyond that a frame is dropped, which the load tool reports as missing.
const QUEUE: usize = 1024;

#[derive(Default)]
struct Rooms {
    rooms: RwLock<HashMap<i64, Arc<Mutex<Room>>>>,
}

/// One room: numbering and queueing under one lock, so that every member gets the messages in id order.
#[derive(Default)]
struct Room {
    last_id: i64,
    members: Vec<(u64, mpsc::Sender<Utf8Bytes>)>,
}

impl Rooms {
    fn room(&self, id: i64) -> Arc<Mutex<Room>> {
        if let Some(room) = self.rooms.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return room.clone();
        }
        self.rooms.write().unwrap_or_else(|p| p.into_inner()).entry(id).or_default().clone()
    }
}

/// The real server's message frame, field for field and in the same order.
#[derive(Serialize)]
struct MessageFrame<'a> {
    msg_type: u8,
    room: i64,
    username: &'a str,
    message: &'a str,
    id: i64,
    ts: i64,
}

#[derive(Deserialize)]
struct Command {
    command: String,
    room: serde_json::Value,
    #[serde(default)]
    message: String,
    nonce: Option<String>,
}

/// Serves until the process is stopped.
pub async fn serve(bind: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    eprintln!("baseline server listening on http://{}", listener.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    let next = AtomicU64::new(0);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let id = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(tcp, id, rooms.clone()));
    }
}

async fn connection(tcp: TcpStream, id: u64, rooms: Arc<Rooms>) {
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(socket) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else { return };
    let (mut sink, mut stream) = socket.split();
    let (queue, mut frames) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let mut joined = Vec::new();
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { break };
                // Everything already queued goes out in one flush.
                let mut batch = vec![frame];
                while let Ok(more) = frames.try_recv() {
                    batch.push(more);
                }
                let mut failed = false;
                for frame in batch {
                    failed |= sink.feed(Message::Text(frame)).await.is_err();
                }
                if failed || sink.flush().await.is_err() {
                    break;
                }
            }
            incoming = stream.next() => {
                let Some(Ok(Message::Text(text))) = incoming else {
                    match incoming {
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => continue,
                        _ => break,
                    }
                };
                let Ok(command) = serde_json::from_str::<Command>(text.as_str()) else { continue };
                let room = command.room.as_i64().or_else(|| command.room.as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
                let reply = match command.command.as_str() {
                    "join" => {
                        rooms.room(room).lock().unwrap_or_else(|p| p.into_inner()).members.push((id, queue.clone()));
                        joined.push(room);
                        Some(format!(r#"{{"join":"{room}","title":"{room}"}}"#))
                    }
                    "leave" => {
                        leave(&rooms, room, id);
                        joined.retain(|r| *r != room);
                        Some(format!(r#"{{"leave":"{room}"}}"#))
                    }
                    "send" => {
                        let (id, ts) = publish(&rooms, room, &command.message);
                        command.nonce.map(|nonce| serde_json::json!({ "ack": nonce, "room": room, "id": id, "ts": ts }).to_string())
                    }
                    _ => None,
                };
                if let Some(reply) = reply {
                    if sink.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    for room in joined {
        leave(&rooms, room, id);
    }
}

fn leave(rooms: &Rooms, room: i64, id: u64) {
    rooms.room(room).lock().unwrap_or_else(|p| p.into_inner()).members.retain(|(member, _)| *member != id);
}

/// Encodes the message once and queues the same bytes for every member; returns its id and time.
fn publish(rooms: &Rooms, room: i64, message: &str) -> (i64, i64) {
    let room_lock = rooms.room(room);
    let mut room_state = room_lock.lock().unwrap_or_else(|p| p.into_inner());
    room_state.last_id += 1;
    let id = room_state.last_id;
    let ts = std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_millis() as i64);
    let frame = MessageFrame { msg_type: 0, room, username: "baseline", message, id, ts };
    let frame = Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default());
    for (_, queue) in &room_state.members {
        let _ = queue.try_send(frame.clone());
    }
    (id, ts)
}
