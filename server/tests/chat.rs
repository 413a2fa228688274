//! Chatting: rooms multiplexed over one socket, presence notices, message ids from the database.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use multichat_server::Config;
use serde_json::{json, Value};

async fn two_users_chat_in_a_room(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;

    let joined = json!({ "join": lobby.id.to_string(), "title": "Lobby", "members": ["ann"] });
    assert_eq!(ann.join(lobby.id).await, joined);
    assert_eq!(bob.join(lobby.id).await["join"], lobby.id.to_string());
    assert_eq!(ann.recv().await, json!({ "msg_type": 4, "room": lobby.id, "username": "bob" }));

    ann.send(json!({ "command": "send", "room": lobby.id.to_string(), "message": "hello bob" })).await;
    for ws in [&mut ann, &mut bob] {
        let msg = ws.recv().await;
        assert_eq!(msg["msg_type"], 0);
        assert_eq!(msg["room"], lobby.id);
        assert_eq!(msg["username"], "ann");
        assert_eq!(msg["message"], "hello bob");
        assert_eq!(msg["id"], 1, "the room's first message");
        assert!(msg["ts"].as_i64().unwrap() > 1_700_000_000_000, "a server timestamp in ms");
    }
    bob.send(json!({ "command": "send", "room": lobby.id, "message": "hi ann" })).await;
    assert_eq!(ann.recv().await["id"], 2);
    assert_eq!(bob.recv().await["message"], "hi ann");
    server.stop().await;
}

/// A socket's read buffer is 1 KiB: the longest message (4,000 two-byte characters, an 8 KB frame) takes several
/// reads, and the frame sent right behind it must come out whole too.
async fn the_longest_message_arrives_whole_with_the_next_one_behind_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    ann.join(lobby.id).await;
    bob.join(lobby.id).await;

    let longest = "é".repeat(test_config().max_message_chars);
    ann.send(json!({ "command": "send", "room": lobby.id, "message": longest })).await;
    ann.send(json!({ "command": "send", "room": lobby.id, "message": "and a short one" })).await;
    assert_eq!(bob.recv_message().await["message"], longest);
    assert_eq!(bob.recv_message().await["message"], "and a short one");
    server.stop().await;
}

/// Frames that reach the server in one read are all answered: nothing more will wake the connection for them, so
/// it reads on from what it already holds before it waits.
async fn commands_that_arrive_together_are_all_answered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let rooms = [server.room("A", false).await, server.room("B", false).await, server.room("C", false).await];
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let joins: Vec<_> = rooms.iter().map(|room| json!({ "command": "join", "room": room.id })).collect();
    ann.send_together(&joins).await;
    for room in &rooms {
        assert_eq!(ann.recv().await["join"], room.id.to_string());
    }
    server.stop().await;
}

async fn one_socket_carries_every_joined_room(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let (a, b, c) = (server.room("A", false).await, server.room("B", false).await, server.room("C", false).await);
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    ann.join(a.id).await;
    ann.join(b.id).await;
    for room in [a.id, b.id, c.id] {
        bob.join(room).await;
    }
    for _ in 0..2 {
        assert_eq!(ann.recv().await["msg_type"], 4, "bob entering A and B");
    }

    for (room, text) in [(a.id, "in A"), (c.id, "in C"), (b.id, "in B")] {
        bob.send(json!({ "command": "send", "room": room, "message": text })).await;
    }
    let first = ann.recv().await;
    let second = ann.recv().await;
    assert_eq!((first["room"].as_i64(), first["message"].as_str()), (Some(a.id), Some("in A")));
    assert_eq!((second["room"].as_i64(), second["message"].as_str()), (Some(b.id), Some("in B")));
    assert_eq!(first["id"], 1);
    assert_eq!(second["id"], 1, "ids count per room");
    ann.expect_nothing(Duration::from_millis(300)).await;
    server.stop().await;
}

async fn rooms_hear_who_enters_and_leaves(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let bob_session = server.login_new("bob", plain()).await;
    let mut bob = bob_session.connect().await;
    ann.join(lobby.id).await;
    bob.join(lobby.id).await;
    assert_eq!(ann.recv().await, json!({ "msg_type": 4, "room": lobby.id, "username": "bob" }));

    bob.send(json!({ "command": "leave", "room": lobby.id })).await;
    assert_eq!(bob.recv().await, json!({ "leave": lobby.id.to_string() }));
    assert_eq!(bob.recv().await, json!({ "msg_type": 5, "room": lobby.id, "username": "bob" }), "the leaver too");
    assert_eq!(ann.recv().await, json!({ "msg_type": 5, "room": lobby.id, "username": "bob" }));

    // Disconnecting counts as leaving.
    let mut bob = bob_session.connect().await;
    bob.join(lobby.id).await;
    assert_eq!(ann.recv().await["msg_type"], 4);
    drop(bob);
    assert_eq!(ann.recv().await, json!({ "msg_type": 5, "room": lobby.id, "username": "bob" }));
    server.stop().await;
}

async fn presence_notices_can_be_turned_off(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, Config { presence_notices: false, ..test_config() }).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    ann.join(lobby.id).await;
    bob.join(lobby.id).await;
    bob.send(json!({ "command": "send", "room": lobby.id, "message": "quietly" })).await;
    assert_eq!(ann.recv().await["message"], "quietly", "the first frame is the message, no enter notice");
    drop(bob);
    ann.expect_nothing(Duration::from_millis(300)).await;
    server.stop().await;
}

async fn each_connection_of_a_user_gets_what_its_own_joins_ask_for(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let (a, b) = (server.room("A", false).await, server.room("B", false).await);
    let ann = server.login_new("ann", plain()).await;
    let (mut window1, mut window2) = (ann.connect().await, ann.connect().await);
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    bob.join(a.id).await;
    window1.join(a.id).await;
    assert_eq!(bob.recv().await, json!({ "msg_type": 4, "room": a.id, "username": "ann" }));
    window2.join(a.id).await;
    window2.join(b.id).await;
    bob.expect_nothing(Duration::from_millis(200)).await; // ann was already present in A

    bob.send(json!({ "command": "send", "room": a.id, "message": "to A" })).await;
    assert_eq!(bob.recv().await["message"], "to A", "the sender gets its own message too");
    assert_eq!(window1.recv().await["message"], "to A");
    assert_eq!(window2.recv().await["message"], "to A");
    window2.send(json!({ "command": "send", "room": b.id, "message": "to B" })).await;
    assert_eq!(window2.recv().await["message"], "to B");
    window1.expect_nothing(Duration::from_millis(300)).await;

    // Ann closing one window does not make her leave A: she is still there in the other.
    window1.send(json!({ "command": "leave", "room": a.id })).await;
    assert_eq!(window1.recv().await, json!({ "leave": a.id.to_string() }));
    bob.expect_nothing(Duration::from_millis(300)).await;
    drop(window2);
    assert_eq!(bob.recv().await, json!({ "msg_type": 5, "room": a.id, "username": "ann" }));
    server.stop().await;
}

async fn message_ids_continue_after_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    server.user("ann", "pw-ann", plain()).await;
    let mut ann = server.login("ann", "pw-ann").await.connect().await;
    ann.join(lobby.id).await;
    for n in 1..=3 {
        ann.send(json!({ "command": "send", "room": lobby.id, "message": format!("m{n}") })).await;
        assert_eq!(ann.recv().await["id"], n);
    }
    server.stop().await;

    let server = TestServer::start(&db).await;
    let mut ann = server.login("ann", "pw-ann").await.connect().await;
    ann.join(lobby.id).await;
    ann.send(json!({ "command": "send", "room": lobby.id, "message": "after restart" })).await;
    assert_eq!(ann.recv().await["id"], 4);
    server.stop().await;
}

async fn concurrent_senders_get_dense_ids_delivered_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, Config { messages_per_second: 1000, ..test_config() }).await;
    let lobby = server.room("Lobby", false).await;
    let mut reader = server.login_new("reader", plain()).await.connect().await;
    reader.join(lobby.id).await;
    let mut writers = Vec::new();
    for name in ["w1", "w2", "w3"] {
        let mut ws = server.login_new(name, plain()).await.connect().await;
        ws.join(lobby.id).await;
        writers.push(ws);
    }
    for _ in 0..3 {
        assert_eq!(reader.recv().await["msg_type"], 4);
    }
    let sends = writers.iter_mut().map(|ws| async move {
        for n in 0..20 {
            ws.send(json!({ "command": "send", "room": lobby.id, "message": format!("n{n}") })).await;
        }
    });
    futures_util::future::join_all(sends).await;
    for expected in 1..=60 {
        assert_eq!(reader.recv().await["id"], expected, "ids arrive dense and in order");
    }
    server.stop().await;
}

async fn a_sender_is_answered_while_its_messages_wait_for_the_database(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    ann.join(lobby.id).await;

    let lock = db.hold_write_lock().await;
    ann.send(json!({ "command": "send", "room": lobby.id, "message": "first", "nonce": "k1" })).await;
    ann.send(json!({ "command": "send", "room": lobby.id, "message": "second", "nonce": "k2" })).await;
    // The socket is still read while both wait to be stored: pings are answered, mistakes refused at once.
    assert!(ann.pings_back_within(Duration::from_millis(500)).await, "a ping is answered while messages wait");
    ann.send(json!({ "command": "send", "room": lobby.id, "message": "  ", "nonce": "k3" })).await;
    let refusal = ann.recv().await;
    assert_eq!((&refusal["error"], &refusal["nonce"]), (&json!("MESSAGE_EMPTY"), &json!("k3")));

    drop(lock);
    // The acks come in the order the messages were sent, each before its own message (stored in one batch, the
    // second ack may come before the first message).
    let frames = [ann.recv().await, ann.recv().await, ann.recv().await, ann.recv().await];
    let acks: Vec<&Value> = frames.iter().filter_map(|frame| frame.get("ack")).collect();
    assert_eq!(acks, [&json!("k1"), &json!("k2")], "{frames:?}");
    for (nonce, text) in [("k1", "first"), ("k2", "second")] {
        let ack = frames.iter().position(|frame| frame["ack"] == nonce).expect("its ack");
        let message = frames.iter().position(|frame| frame["message"] == text).expect("the message");
        assert!(ack < message, "the ack of {text:?} before the message: {frames:?}");
        assert_eq!(frames[message]["id"], frames[ack]["id"], "{frames:?}");
    }
    server.stop().await;
}

async fn a_command_after_a_burst_of_sends_sees_them_all_stored(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, Config { messages_per_second: 100, ..test_config() }).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    ann.join(lobby.id).await;
    for n in 0..40 {
        ann.send(json!({ "command": "send", "room": lobby.id, "message": format!("m{n}"), "nonce": format!("k{n}") }))
            .await;
    }
    ann.send(json!({ "command": "history", "room": lobby.id, "limit": 100 })).await;
    let (mut acks, mut events) = (Vec::new(), 0);
    let history = loop {
        let frame = ann.recv().await;
        if frame.get("history").is_some() {
            break frame;
        }
        match frame.get("ack") {
            Some(nonce) => acks.push(nonce.as_str().unwrap().to_owned()),
            None => events += 1,
        }
    };
    let expected: Vec<String> = (0..40).map(|n| format!("k{n}")).collect();
    assert_eq!(acks, expected, "every ack, in the order sent, before the reply to the next command");
    assert!(events <= 40, "{events}");
    let texts: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 40, "the history has every message sent before it: {texts:?}");
    server.stop().await;
}

on_both_backends!(
    a_sender_is_answered_while_its_messages_wait_for_the_database,
    a_command_after_a_burst_of_sends_sees_them_all_stored,
    two_users_chat_in_a_room,
    the_longest_message_arrives_whole_with_the_next_one_behind_it,
    commands_that_arrive_together_are_all_answered,
    one_socket_carries_every_joined_room,
    rooms_hear_who_enters_and_leaves,
    presence_notices_can_be_turned_off,
    each_connection_of_a_user_gets_what_its_own_joins_ask_for,
    message_ids_continue_after_a_restart,
    concurrent_senders_get_dense_ids_delivered_in_order,
);
