//! The embedded host: start on an ephemeral port, create the admin, log in over HTTP, chat, stop.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use multichat_desktop::host::{Host, HostSettings};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// POSTs `body` as JSON (with a bearer token, if given) and returns the JSON answer.
async fn post(url: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = reqwest::Client::builder().timeout(WAIT).build().unwrap().post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_hosted_server_serves_chat_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let settings =
        HostSettings { bind: "127.0.0.1:0".parse().unwrap(), data_dir: dir.path().to_owned(), announce: None };
    let host = Host::start(&settings).await.unwrap();
    let addr = host.addr();
    assert_ne!(addr.port(), 0);
    assert!(host.needs_admin().await.unwrap(), "a new host asks for its admin");
    host.create_admin("host", "host-pw").await.unwrap();
    assert!(!host.needs_admin().await.unwrap());

    let login =
        post(&format!("http://{addr}/api/login"), None, json!({ "username": "host", "password": "host-pw" })).await;
    let token = login["token"].as_str().unwrap();
    let room = post(&format!("http://{addr}/api/admin/rooms"), Some(token), json!({ "title": "LAN party" })).await;
    let room = room["id"].as_i64().unwrap();

    let mut request = format!("ws://{addr}/chat/stream/").into_client_request().unwrap();
    request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.unwrap().unwrap();
    ws.send(Message::text(json!({ "command": "join", "room": room }).to_string())).await.unwrap();
    ws.send(Message::text(json!({ "command": "send", "room": room, "message": "hosted!" }).to_string())).await.unwrap();
    let mut got_message = false;
    while !got_message {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = frame {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            got_message = frame["message"] == "hosted!";
        }
    }

    tokio::time::timeout(WAIT, host.stop()).await.expect("stops in time");
    let closed = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(matches!(closed, Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == 1001));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");

    // Hosting again on the same data keeps its accounts and rooms.
    let again = Host::start(&settings).await.unwrap();
    assert!(!again.needs_admin().await.unwrap());
    again.stop().await;
}

#[test]
fn the_addresses_shown_are_the_ones_others_can_open() {
    use multichat_desktop::host::addresses;
    assert_eq!(addresses("192.168.1.20:8000".parse().unwrap()), ["http://192.168.1.20:8000"]);
    let all = addresses("0.0.0.0:8000".parse().unwrap());
    assert_eq!(all.last().map(String::as_str), Some("http://127.0.0.1:8000"), "this computer's own, last");
    assert!(all.iter().all(|a| a.starts_with("http://") && a.ends_with(":8000") && !a.contains("0.0.0.0")), "{all:?}");
}
