//! The load's clients: accounts and rooms made through the HTTP API, and chat sockets opened from many
//! loopback source addresses.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use futures_util::{stream, SinkExt, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::target::Target;

pub type Socket = WebSocketStream<TcpStream>;

/// Loopback source addresses the sockets are spread over (127.0.0.1 …): one address has ~28,000 ephemeral
/// ports, and closed sockets hold theirs for a minute (TIME_WAIT), which would throttle `churn`.
const SOURCES: usize = 250;
/// Logins at once (each costs the server a password hash).
const LOGINS_AT_ONCE: usize = 4;

/// The accounts and rooms a run uses.
pub struct Accounts {
    /// One session token per user; sockets share them round-robin (logins are not what is measured).
    pub tokens: Vec<String>,
    pub rooms: Vec<i64>,
}

impl Accounts {
    pub fn token(&self, socket: usize) -> &str {
        &self.tokens[socket % self.tokens.len()]
    }
}

/// Creates `users` users and `rooms` rooms (named after this run, so runs never collide) and logs the users
/// in. The baseline server has no accounts: any token is let in and rooms are just numbers.
pub async fn provision(target: &Target, users: usize, rooms: usize) -> anyhow::Result<Accounts> {
    let Some((admin, password)) = &target.admin else {
        return Ok(Accounts { tokens: vec!["baseline".into(); users.max(1)], rooms: (1..=rooms as i64).collect() });
    };
    let http = reqwest::Client::new();
    let admin_token = login(&http, target, admin, password).await.context("the admin's login")?;
    let run = format!("{:08x}", std::process::id() ^ std::time::UNIX_EPOCH.elapsed()?.subsec_nanos());
    let mut room_ids = Vec::with_capacity(rooms);
    for n in 0..rooms {
        let room: Value = http
            .post(target.http("/api/admin/rooms"))
            .bearer_auth(&admin_token)
            .json(&json!({ "title": format!("bench {run} {n}") }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        room_ids.push(room["id"].as_i64().context("a room id")?);
    }
    let tokens = stream::iter(0..users.max(1))
        .map(|n| {
            let (http, admin_token) = (&http, &admin_token);
            let name = format!("b{run}u{n}");
            async move {
                let password = format!("{name}-password");
                http.post(target.http("/api/admin/users"))
                    .bearer_auth(admin_token)
                    .json(&json!({ "username": name, "password": password }))
                    .send()
                    .await?
                    .error_for_status()?;
                login(http, target, &name, &password).await
            }
        })
        .buffered(LOGINS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(Accounts { tokens, rooms: room_ids })
}

async fn login(http: &reqwest::Client, target: &Target, username: &str, password: &str) -> anyhow::Result<String> {
    let response = http
        .post(target.http("/api/login"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("login of {username}: {}", response.status());
    }
    let body: Value = response.json().await?;
    Ok(body["token"].as_str().context("a token")?.to_owned())
}

/// Opens chat sockets to one server.
#[derive(Clone)]
pub struct Connector {
    addr: SocketAddr,
    config: WebSocketConfig,
}

impl Connector {
    pub fn new(addr: SocketAddr) -> Connector {
        // Small buffers on purpose: thousands of idle client sockets must not cost the load tool gigabytes.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        Connector { addr, config }
    }

    /// Opens socket number `n` with session `token`, from source address 127.0.0.(1 + n mod 250).
    pub async fn connect(&self, n: usize, token: &str) -> anyhow::Result<Socket> {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (n % SOURCES) as u8);
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source.into(), 0))?;
        let tcp = socket.connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let mut request = format!("ws://{}/chat/stream/", self.addr).into_client_request()?;
        request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
        let (socket, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(self.config)).await?;
        Ok(socket)
    }
}

/// Sends a command and waits for the reply that has `key` (other frames before it are skipped).
pub async fn command(socket: &mut Socket, frame: Value, key: &str) -> anyhow::Result<Value> {
    socket.send(Message::text(frame.to_string())).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let reply: Value = serde_json::from_str(text.as_str())?;
                if let Some(error) = reply.get("error") {
                    bail!("the server refused {frame}: {error} {}", reply["detail"]);
                }
                if reply.get(key).is_some() {
                    return Ok(reply);
                }
            }
            Some(Ok(Message::Close(close))) => bail!("the server closed the socket: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("the socket ended"),
        }
    }
}

pub async fn join(socket: &mut Socket, room: i64) -> anyhow::Result<()> {
    command(socket, json!({ "command": "join", "room": room }), "join").await.map(drop)
}
