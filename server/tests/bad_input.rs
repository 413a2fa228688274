//! Bad input gets a clear error and the connection goes on.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use common::*;
use multichat_server::Config;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn malformed_frames_get_errors_and_the_socket_survives(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    ann.join(lobby.id).await;

    let cases = [
        ("not json at all", "MALFORMED_FRAME"),
        ("[1, 2, 3]", "MALFORMED_FRAME"),
        (r#"{"room": 1}"#, "MALFORMED_FRAME"),
        (r#"{"command": "send", "room": 1}"#, "MALFORMED_FRAME"),
        (r#"{"command": "send", "room": 1, "message": 42}"#, "MALFORMED_FRAME"),
        (r#"{"command": "dance", "room": 1}"#, "UNKNOWN_COMMAND"),
        (r#"{"command": "send", "room": {"id": 1}, "message": "x"}"#, "MALFORMED_FRAME"),
    ];
    for (frame, code) in cases {
        ann.send_text(frame).await;
        let reply = ann.recv().await;
        assert_eq!(reply["error"], code, "for {frame}");
        assert!(reply["detail"].as_str().is_some_and(|d| !d.is_empty()), "a human-readable detail for {frame}");
    }
    ann.send_raw(Message::binary(vec![0u8, 159, 146, 150])).await;
    assert_eq!(ann.recv().await["error"], "MALFORMED_FRAME");

    ann.send(json!({ "command": "send", "room": lobby.id, "message": "still connected" })).await;
    assert_eq!(ann.recv().await["message"], "still connected");
    server.stop().await;
}

async fn oversize_and_empty_messages_are_refused_without_losing_the_socket(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = Config { max_message_chars: 50, max_frame_bytes: 1024, ..test_config() };
    let server = TestServer::start_with(&db, config).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    ann.join(lobby.id).await;

    ann.send(json!({ "command": "send", "room": lobby.id, "message": "é".repeat(51) })).await;
    let reply = ann.recv().await;
    assert_eq!(reply["error"], "MESSAGE_TOO_LONG");
    assert_eq!(reply["room"], lobby.id);
    ann.send(json!({ "command": "send", "room": lobby.id, "message": "é".repeat(50) })).await;
    assert_eq!(ann.recv().await["message"], "é".repeat(50), "exactly the limit, counted in characters");

    ann.send(json!({ "command": "send", "room": lobby.id, "message": "x".repeat(2000) })).await;
    assert_eq!(ann.recv().await["error"], "FRAME_TOO_LARGE");
    ann.send(json!({ "command": "send", "room": lobby.id, "message": "  \n " })).await;
    assert_eq!(ann.recv().await["error"], "MESSAGE_EMPTY");

    ann.send(json!({ "command": "send", "room": lobby.id, "message": "fine" })).await;
    assert_eq!(ann.recv().await["message"], "fine");
    let stored = server.stored(lobby.id).await;
    assert_eq!(stored.len(), 2, "refused messages are not stored");
    server.stop().await;
}

async fn a_flooding_connection_is_rate_limited_and_keeps_its_socket(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, Config { messages_per_second: 3, ..test_config() }).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    ann.join(lobby.id).await;
    for n in 0..10 {
        ann.send(json!({ "command": "send", "room": lobby.id, "message": format!("spam {n}") })).await;
    }
    let mut delivered = 0;
    let mut limited = 0;
    for _ in 0..10 {
        let reply = ann.recv().await;
        if reply["error"] == "RATE_LIMITED" {
            limited += 1;
        } else {
            assert_eq!(reply["msg_type"], 0);
            delivered += 1;
        }
    }
    assert!(limited >= 5, "most of a burst of 10 at 3/s is refused ({delivered} delivered)");
    assert!(delivered >= 3, "the allowance gets through ({delivered} delivered)");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ann.send(json!({ "command": "send", "room": lobby.id, "message": "after a pause" })).await;
    assert_eq!(ann.recv().await["message"], "after a pause");
    server.stop().await;
}

async fn a_dead_database_gets_a_clear_error_and_the_socket_survives(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    ann.join(lobby.id).await;
    server.db.close().await; // every query from now on fails, as with a database that went away

    ann.send(json!({ "command": "send", "room": lobby.id, "message": "into the void" })).await;
    let reply = ann.recv().await;
    assert_eq!(reply["error"], "SERVER_ERROR");
    assert_eq!(reply["room"], lobby.id);
    assert_eq!(ann.join(lobby.id + 1).await["error"], "SERVER_ERROR");
    ann.send(json!({ "command": "leave", "room": lobby.id })).await;
    assert_eq!(ann.recv().await, json!({ "leave": lobby.id.to_string() }), "what needs no database still works");
    server.stop().await;
}

async fn logins_through_a_database_outage_are_told_so_and_not_throttled(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.user("ann", "right", plain()).await;
    server.db.close().await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let response = http_client()
            .post(server.url("/api/login"))
            .json(&json!({ "username": "ann", "password": "right" }))
            .send()
            .await
            .unwrap();
        seen.push(response.status().as_u16());
    }
    // Past the three free failures, a throttle that counted these would answer 429 "try again in 1 s".
    assert_eq!(seen, [503; 6], "the outage is the server's failure, not ann's");
    server.stop().await;
}

async fn a_frame_over_the_transport_limit_ends_only_that_connection(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, Config { max_frame_bytes: 1024, ..test_config() }).await;
    let lobby = server.room("Lobby", false).await.id;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    bob.join(lobby).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let limit = server.state.config.transport_limit();
    // The server refuses the frame from its header and closes with 1009; a client still pushing the rest
    // of the frame at that moment may see the connection reset instead (TCP drops the close frame when
    // the closing side has unread data), so either is an ending, and a close says 1009.
    if ann.try_send_text(&"x".repeat(limit + 1)).await.is_ok() {
        if let Some(close) = ann.closed().await {
            assert_eq!(u16::from(close.code), 1009);
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.state.hub.connections() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "the oversize connection is gone");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    bob.send(json!({ "command": "send", "room": lobby, "message": "unaffected" })).await;
    assert_eq!(bob.recv_message().await["message"], "unaffected", "everyone else carries on");
    server.stop().await;
}

on_both_backends!(
    a_frame_over_the_transport_limit_ends_only_that_connection,
    a_dead_database_gets_a_clear_error_and_the_socket_survives,
    logins_through_a_database_outage_are_told_so_and_not_throttled,
    malformed_frames_get_errors_and_the_socket_survives,
    oversize_and_empty_messages_are_refused_without_losing_the_socket,
    a_flooding_connection_is_rate_limited_and_keeps_its_socket,
);
