//! Who may connect and where: the handshake, staff-only rooms, and rights that change while connected.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The HTTP status a refused handshake got.
fn refused_status(result: Result<Ws, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

fn request(server: &TestServer) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    format!("ws://{}/chat/stream/", server.addr).into_client_request().unwrap()
}

async fn anonymous_and_forged_handshakes_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    assert_eq!(refused_status(Ws::open(request(&server)).await), 401, "no session at all");

    let mut forged = request(&server);
    forged.headers_mut().insert("authorization", HeaderValue::from_static("Bearer not-a-real-token"));
    assert_eq!(refused_status(Ws::open(forged).await), 401);
    server.stop().await;
}

async fn browsers_authenticate_by_cookie_or_subprotocol_from_allowed_origins_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let ann = server.login_new("ann", plain()).await;
    let cookie = HeaderValue::from_str(&format!("multichat_session={}", ann.token)).unwrap();

    let mut same_origin = request(&server);
    same_origin.headers_mut().insert("cookie", cookie.clone());
    same_origin.headers_mut().insert("origin", HeaderValue::from_str(&server.origin()).unwrap());
    assert!(Ws::open(same_origin).await.is_ok(), "the server's own page, with its cookie");

    let mut desktop = request(&server);
    desktop.headers_mut().insert("origin", HeaderValue::from_static("tauri://localhost"));
    let offered = format!("multichat, token.{}", ann.token);
    desktop.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(&offered).unwrap());
    assert!(Ws::open(desktop).await.is_ok(), "the desktop webview, token as a subprotocol");

    let mut hijack = request(&server);
    hijack.headers_mut().insert("cookie", cookie.clone());
    hijack.headers_mut().insert("origin", HeaderValue::from_static("http://evil.example"));
    assert_eq!(refused_status(Ws::open(hijack).await), 403, "another site riding the cookie");

    let mut cookie_without_origin = request(&server);
    cookie_without_origin.headers_mut().insert("cookie", cookie);
    assert_eq!(refused_status(Ws::open(cookie_without_origin).await), 401, "native clients must use the token");
    server.stop().await;
}

async fn non_staff_are_refused_staff_rooms_and_never_see_their_messages(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let secret = server.room("Staff room", true).await;
    let mut sam = server.login_new("sam", staff()).await.connect().await;
    let mut pat = server.login_new("pat", plain()).await.connect().await;
    assert_eq!(sam.join(secret.id).await["join"], secret.id.to_string());

    let refused = pat.join(secret.id).await;
    assert_eq!(refused["error"], "ROOM_ACCESS_DENIED");
    pat.send(json!({ "command": "send", "room": secret.id, "message": "let me in" })).await;
    assert_eq!(pat.recv().await["error"], "ROOM_ACCESS_DENIED", "send to a room not joined");

    sam.send(json!({ "command": "send", "room": secret.id, "message": "staff only" })).await;
    assert_eq!(sam.recv().await["message"], "staff only");
    pat.expect_nothing(Duration::from_millis(300)).await;

    let listed: serde_json::Value =
        server.login("pat", "pat-password").await.get("/api/rooms").await.json().await.unwrap();
    assert_eq!(listed, json!([]), "staff-only rooms are not even listed for non-staff");
    server.stop().await;
}

async fn unknown_rooms_are_invalid(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    assert_eq!(ann.join(999).await["error"], "ROOM_INVALID");
    ann.send(json!({ "command": "join", "room": "not-a-number" })).await;
    assert_eq!(ann.recv().await["error"], "ROOM_INVALID");
    ann.send(json!({ "command": "leave", "room": 999 })).await;
    assert_eq!(ann.recv().await["error"], "ROOM_INVALID");
    server.stop().await;
}

async fn a_demoted_user_is_removed_from_staff_rooms_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let secret = server.room("Staff room", true).await;
    let lobby = server.room("Lobby", false).await;
    let boss = server.login_new("boss", admin()).await;
    let mut boss_ws = boss.connect().await;
    let sam = server.login_new("sam", staff()).await;
    let mut sam_ws = sam.connect().await;
    boss_ws.join(secret.id).await;
    sam_ws.join(secret.id).await;
    sam_ws.join(lobby.id).await;
    assert_eq!(boss_ws.recv().await["msg_type"], 4);

    let me: serde_json::Value = sam.get("/api/me").await.json().await.unwrap();
    let response = boss.patch(&format!("/api/admin/users/{}", me["id"]), json!({ "is_staff": false })).await;
    assert_eq!(response.status(), 200);

    assert_eq!(sam_ws.recv().await["error"], "ROOM_ACCESS_DENIED");
    assert_eq!(sam_ws.recv().await, json!({ "leave": secret.id.to_string() }));
    assert_eq!(sam_ws.recv().await, json!({ "msg_type": 5, "room": secret.id, "username": "sam" }));
    assert_eq!(sam_ws.recv().await, json!({ "rooms": "changed" }), "sam's room list changed");
    assert_eq!(boss_ws.recv().await, json!({ "msg_type": 5, "room": secret.id, "username": "sam" }));

    boss_ws.send(json!({ "command": "send", "room": secret.id, "message": "after sam left" })).await;
    assert_eq!(boss_ws.recv().await["message"], "after sam left");
    sam_ws.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(sam_ws.join(secret.id).await["error"], "ROOM_ACCESS_DENIED");
    sam_ws.send(json!({ "command": "send", "room": lobby.id, "message": "still here" })).await;
    assert_eq!(sam_ws.recv().await["message"], "still here", "other rooms are untouched");
    server.stop().await;
}

async fn sends_are_checked_against_current_rights_even_if_changed_elsewhere(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let secret = server.room("Staff room", true).await;
    let mut sam = server.login_new("sam", staff()).await.connect().await;
    sam.join(secret.id).await;
    // Another node (or an operator) demotes sam straight in the database; this node was not told.
    db.execute("UPDATE users SET is_staff = FALSE WHERE username = 'sam'").await;
    sam.send(json!({ "command": "send", "room": secret.id, "message": "sneaky" })).await;
    assert_eq!(sam.recv().await["error"], "ROOM_ACCESS_DENIED");
    assert_eq!(sam.recv().await, json!({ "leave": secret.id.to_string() }));
    let stored = server.stored(secret.id).await;
    assert!(stored.is_empty(), "nothing was stored: {stored:?}");
    server.stop().await;
}

async fn a_room_made_staff_only_loses_its_non_staff_members(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let room = server.room("Soon secret", false).await;
    let boss = server.login_new("boss", admin()).await;
    let mut pat = server.login_new("pat", plain()).await.connect().await;
    pat.join(room.id).await;
    let response = boss.patch(&format!("/api/admin/rooms/{}", room.id), json!({ "staff_only": true })).await;
    assert_eq!(response.status(), 200);
    assert_eq!(pat.recv().await["error"], "ROOM_ACCESS_DENIED");
    assert_eq!(pat.recv().await, json!({ "leave": room.id.to_string() }));
    assert_eq!(pat.recv().await, json!({ "msg_type": 5, "room": room.id, "username": "pat" }));
    assert_eq!(pat.recv().await, json!({ "rooms": "changed" }), "everyone refetches the room list");
    server.stop().await;
}

on_both_backends!(
    anonymous_and_forged_handshakes_are_refused,
    browsers_authenticate_by_cookie_or_subprotocol_from_allowed_origins_only,
    non_staff_are_refused_staff_rooms_and_never_see_their_messages,
    unknown_rooms_are_invalid,
    a_demoted_user_is_removed_from_staff_rooms_at_once,
    sends_are_checked_against_current_rights_even_if_changed_elsewhere,
    a_room_made_staff_only_loses_its_non_staff_members,
);
