//! Nothing acknowledged is lost: the real server process is killed with SIGKILL mid-traffic, restarted,
//! and every message it had acknowledged is found, with its id and text.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use multichat_server::accounts::{self, Rights};
use multichat_server::auth::Passwords;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

async fn login_token(addr: &str) -> String {
    let response = http_client()
        .post(format!("http://{addr}/api/login"))
        .json(&json!({ "username": "ann", "password": "pw" }))
        .send()
        .await
        .unwrap();
    response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

/// Sends numbered messages with nonces, ten in flight at a time, until the connection dies; returns what
/// the server acknowledged (id → text) and how many were sent.
async fn send_until_killed(addr: &str, token: &str, room: i64) -> (BTreeMap<i64, String>, usize) {
    let mut request = format!("ws://{addr}/chat/stream/").into_client_request().unwrap();
    request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text(json!({ "command": "join", "room": room }).to_string())).await.unwrap();
    let mut acked = BTreeMap::new();
    let mut next = 1;
    'traffic: loop {
        for _ in 0..10 {
            let frame =
                json!({ "command": "send", "room": room, "message": format!("m{next}"), "nonce": format!("n{next}") });
            if ws.send(Message::text(frame.to_string())).await.is_err() {
                break 'traffic;
            }
            next += 1;
        }
        let mut acks = 0;
        while acks < 10 {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("the server answers or dies") {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    if let Some(nonce) = frame["ack"].as_str() {
                        let text = format!("m{}", &nonce[1..]);
                        assert!(acked.insert(frame["id"].as_i64().unwrap(), text).is_none(), "one id per message");
                        acks += 1;
                    }
                }
                Some(Ok(_)) => {}
                _ => break 'traffic,
            }
        }
    }
    (acked, next - 1)
}

async fn a_killed_server_loses_no_acknowledged_message(backend: Backend) {
    let db = TestDb::new(backend).await;
    let room = {
        let setup = db.open().await;
        accounts::create(&setup, &Passwords::new(1).unwrap(), "ann", "pw", Rights::default()).await.unwrap();
        let room = setup.create_room("Lobby", false, false).await.unwrap().id;
        setup.close().await;
        room
    };
    let (mut child, addr) = serve_binary(&db, &["--messages-per-second", "1000000"]);
    let token = login_token(&addr).await;
    let pid = child.id().to_string();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    });
    let (acked, sent) = send_until_killed(&addr, &token, room).await;
    killer.await.unwrap();
    child.wait().unwrap();
    assert!(acked.len() >= 20, "the server was killed mid-traffic, not before it ({} acked)", acked.len());

    let (mut child, addr) = serve_binary(&db, &["--messages-per-second", "1000000"]);
    let token = login_token(&addr).await;
    let stored = stored_messages(&addr, &token, room).await;
    for (id, text) in &acked {
        assert_eq!(stored.get(id), Some(text), "acknowledged message {id} survived the kill");
    }
    let ids: Vec<i64> = stored.keys().copied().collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "ids stay dense across the crash");

    // The client retries everything it sent, acknowledged or not: nothing is posted twice.
    let session = Session { token: token.clone(), addr: addr.parse().unwrap(), http: http_client() };
    let mut ws = session.connect().await;
    ws.join(room).await;
    for n in 1..=sent {
        let ack = ws.send_acked(room, &format!("m{n}"), &format!("n{n}")).await;
        let id = ack["id"].as_i64().expect("an ack");
        if let Some((acked_id, _)) = acked.iter().find(|(_, text)| **text == format!("m{n}")) {
            assert_eq!(id, *acked_id, "a retried m{n} keeps its id");
        }
    }
    let stored = stored_messages(&addr, &token, room).await;
    let mut texts: Vec<&String> = stored.values().collect();
    texts.sort();
    texts.dedup();
    assert_eq!((stored.len(), texts.len()), (sent, sent), "every message stored exactly once");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Every stored message of `room`, id → text, paged through the HTTP history.
async fn stored_messages(addr: &str, token: &str, room: i64) -> BTreeMap<i64, String> {
    let mut stored = BTreeMap::new();
    loop {
        let after = stored.keys().last().copied().unwrap_or(0);
        let page: Value = http_client()
            .get(format!("http://{addr}/api/rooms/{room}/messages?after={after}&limit=200"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["messages"].as_array().unwrap() {
            stored.insert(m["id"].as_i64().unwrap(), m["message"].as_str().unwrap().to_owned());
        }
        if page["more"] != true {
            return stored;
        }
    }
}

on_both_backends!(a_killed_server_loses_no_acknowledged_message);
