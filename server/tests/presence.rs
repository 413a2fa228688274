//! Presence and typing: who is in a room (the join reply's member list, kept current by enter and leave
//! notices), per user and across nodes; and "is typing" signals, which reach the others in the room only,
//! are limited, and are never stored.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use multichat_server::hub::presence::NODE_TTL;
use multichat_server::Config;
use serde_json::{json, Value};

/// The names a join reply lists.
fn members(reply: &Value) -> Vec<&str> {
    reply["members"].as_array().expect("a member list").iter().map(|n| n.as_str().unwrap()).collect()
}

/// Reads frames until one matches `wanted`; fails after the usual wait.
async fn until(ws: &mut Ws, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let frame = ws.recv().await;
        if wanted(&frame) {
            return frame;
        }
    }
}

async fn the_join_reply_lists_who_is_in_the_room(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await.id;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    assert_eq!(ann.join(lobby).await, json!({ "join": lobby.to_string(), "title": "Lobby", "members": ["ann"] }));
    assert_eq!(members(&bob.join(lobby).await), ["ann", "bob"]);
    assert_eq!(ann.recv().await, json!({ "msg_type": 4, "room": lobby, "username": "bob" }));

    // After a leave and a disconnect, a newcomer sees only who is still there.
    ann.send(json!({ "command": "leave", "room": lobby })).await;
    assert_eq!(bob.recv().await, json!({ "msg_type": 5, "room": lobby, "username": "ann" }));
    let mut cy = server.login_new("cy", plain()).await.connect().await;
    assert_eq!(members(&cy.join(lobby).await), ["bob", "cy"]);
    drop(bob);
    assert_eq!(cy.recv().await, json!({ "msg_type": 5, "room": lobby, "username": "bob" }));
    let mut dan = server.login_new("dan", plain()).await.connect().await;
    assert_eq!(members(&dan.join(lobby).await), ["cy", "dan"]);
    server.stop().await;
}

async fn a_user_with_two_connections_is_listed_once_and_leaves_with_the_last(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await.id;
    let ann = server.login_new("ann", plain()).await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    bob.join(lobby).await;
    let (mut window1, mut window2) = (ann.connect().await, ann.connect().await);
    assert_eq!(members(&window1.join(lobby).await), ["ann", "bob"]);
    assert_eq!(members(&window2.join(lobby).await), ["ann", "bob"], "listed once");
    assert_eq!(bob.recv().await, json!({ "msg_type": 4, "room": lobby, "username": "ann" }), "entered once");

    window1.send(json!({ "command": "leave", "room": lobby })).await;
    assert_eq!(window1.recv().await, json!({ "leave": lobby.to_string() }));
    bob.expect_nothing(Duration::from_millis(300)).await; // ann is still there in window 2
    drop(window2);
    assert_eq!(bob.recv().await, json!({ "msg_type": 5, "room": lobby, "username": "ann" }));
    server.stop().await;
}

async fn without_presence_the_join_reply_lists_nobody(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, Config { presence_notices: false, ..test_config() }).await;
    let lobby = server.room("Lobby", false).await.id;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    assert_eq!(ann.join(lobby).await, json!({ "join": lobby.to_string(), "title": "Lobby" }));
    server.stop().await;
}

async fn typing_reaches_the_others_in_the_room_only_and_is_never_stored(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let (lobby, other) = (server.room("Lobby", false).await.id, server.room("Other", false).await.id);
    let ann = server.login_new("ann", plain()).await;
    let (mut ann1, mut ann2) = (ann.connect().await, ann.connect().await);
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    let mut cy = server.login_new("cy", plain()).await.connect().await;
    cy.join(other).await;
    bob.join(lobby).await;
    ann1.join(lobby).await;
    ann2.join(lobby).await;
    until(&mut bob, |f| f["msg_type"] == 4).await;

    ann1.send(json!({ "command": "typing", "room": lobby.to_string() })).await;
    assert_eq!(bob.recv().await, json!({ "typing": lobby.to_string(), "username": "ann", "ttl_ms": 5000 }));
    for ws in [&mut ann1, &mut ann2, &mut cy] {
        ws.expect_nothing(Duration::from_millis(200)).await; // not the typist, not their other window, not elsewhere
    }
    assert!(server.stored(lobby).await.is_empty(), "a typing signal is not a message");
    server.stop().await;
}

async fn typing_is_refused_outside_a_joined_room_and_limited(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let (lobby, staff) = (server.room("Lobby", false).await.id, server.room("Staff", true).await.id);
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;

    for room in [lobby, staff] {
        ann.send(json!({ "command": "typing", "room": room })).await;
        let refused = ann.recv().await;
        assert_eq!((refused["error"].as_str(), refused["room"].as_i64()), (Some("ROOM_ACCESS_DENIED"), Some(room)));
    }
    ann.send(json!({ "command": "typing", "room": "nope" })).await;
    assert_eq!(ann.recv().await["error"], "ROOM_INVALID");

    bob.join(lobby).await;
    ann.join(lobby).await;
    until(&mut bob, |f| f["msg_type"] == 4).await;
    for _ in 0..10 {
        ann.send(json!({ "command": "typing", "room": lobby })).await;
    }
    let mut heard = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), bob.recv()).await {
            Ok(frame) if frame.get("typing").is_some() => heard += 1,
            Ok(frame) => panic!("unexpected {frame}"),
            Err(_) => break,
        }
    }
    let mut limited = 0;
    while let Ok(refused) = tokio::time::timeout(Duration::from_millis(300), ann.recv()).await {
        assert_eq!(refused["error"], "RATE_LIMITED", "{refused}");
        limited += 1;
    }
    // Bursts of 4, then 2 a second: ten signals sent at once get 4 (5 if half a second passed) through,
    // and every other one is refused, not dropped.
    assert!((4..=5).contains(&heard), "{heard} of 10 typing signals passed");
    assert_eq!(heard + limited, 10, "{limited} refused");
    server.stop().await;
}

on_both_backends!(
    the_join_reply_lists_who_is_in_the_room,
    a_user_with_two_connections_is_listed_once_and_leaves_with_the_last,
    without_presence_the_join_reply_lists_nobody,
    typing_reaches_the_others_in_the_room_only_and_is_never_stored,
    typing_is_refused_outside_a_joined_room_and_limited,
);

/// Two nodes of one deployment: one database, one Redis channel.
async fn two_nodes(db: &TestDb) -> (TestServer, TestServer) {
    let prefix = unique_prefix();
    let a = TestServer::start_linked(db, test_config(), &redis_url(), &prefix).await;
    let b = TestServer::start_linked(db, test_config(), &redis_url(), &prefix).await;
    a.until_ready_is(200).await;
    b.until_ready_is(200).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_typing_span_the_nodes() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = two_nodes(&db).await;
    let lobby = a.room("Lobby", false).await.id;
    let ann = a.login_new("ann", plain()).await;
    let mut ann_a = ann.connect().await;
    ann_a.join(lobby).await;
    let mut bob = b.login_new("bob", plain()).await.connect().await;
    // A join reply lists who this node has heard of; ann's entering crosses Redis, so it may come after.
    let listed = members(&bob.join(lobby).await).len();
    if listed == 1 {
        until(&mut bob, |f| f == &json!({ "msg_type": 4, "room": lobby, "username": "ann" })).await;
    }
    assert_eq!(ann_a.recv().await, json!({ "msg_type": 4, "room": lobby, "username": "bob" }), "enter crosses nodes");
    let mut cy = a.login_new("cy", plain()).await.connect().await;
    assert_eq!(members(&cy.join(lobby).await), ["ann", "bob", "cy"], "the list spans both nodes");
    until(&mut bob, |f| f["msg_type"] == 4 && f["username"] == "cy").await;

    // ann on the other node too: listed once, no second "entered"; leaving one node is not leaving.
    let mut ann_b = Session { addr: b.addr, ..ann }.connect().await;
    assert_eq!(members(&ann_b.join(lobby).await), ["ann", "bob", "cy"]);
    bob.send(json!({ "command": "typing", "room": lobby })).await;
    // B's changes cross Redis in order: once bob's typing is on A, so is ann's joining through B.
    assert_eq!(
        until(&mut cy, |f| f.get("typing").is_some()).await,
        json!({ "typing": lobby.to_string(), "username": "bob", "ttl_ms": 5000 }),
        "typing crosses nodes"
    );
    drop(ann_a);
    bob.expect_nothing(Duration::from_millis(500)).await;
    cy.expect_nothing(Duration::from_millis(100)).await;
    drop(ann_b);
    assert_eq!(until(&mut cy, |f| f["msg_type"] == 5).await["username"], "ann", "gone from both nodes");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_of_a_node_that_dies_leave_after_its_ttl() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = unique_prefix();
    let a = TestServer::start_linked(&db, test_config(), &redis_url(), &prefix).await;
    a.until_ready_is(200).await;
    let lobby = a.room("Lobby", false).await.id;
    let mut ann = a.login_new("ann", plain()).await.connect().await;
    ann.join(lobby).await;
    let bob_session = a.login_new("bob", plain()).await;
    let (mut node_b, b_addr) = serve_binary(&db, &["--redis-url", &redis_url(), "--redis-prefix", &prefix]);
    let mut bob = Session { addr: b_addr.parse().unwrap(), ..bob_session }.connect().await;
    bob.join(lobby).await;
    assert_eq!(ann.recv().await, json!({ "msg_type": 4, "room": lobby, "username": "bob" }));

    // Killed, as a crash would: no goodbye. Its members stay listed for the TTL, then leave.
    node_b.kill().unwrap();
    node_b.wait().unwrap();
    let killed = tokio::time::Instant::now();
    let left = tokio::time::timeout(NODE_TTL + Duration::from_secs(5), until(&mut ann, |f| f["msg_type"] == 5))
        .await
        .expect("bob leaves once his node is forgotten");
    assert_eq!(left, json!({ "msg_type": 5, "room": lobby, "username": "bob" }));
    assert!(killed.elapsed() >= NODE_TTL - Duration::from_secs(3), "not before the TTL: {:?}", killed.elapsed());
    let mut cy = a.login_new("cy", plain()).await.connect().await;
    assert_eq!(members(&cy.join(lobby).await), ["ann", "cy"]);
    a.stop().await;
}
