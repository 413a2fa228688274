//! Several nodes as one: two server instances sharing a PostgreSQL database and a Redis, each on its own
//! port, with users connected to one or the other. The machine's Redis (127.0.0.1:6379) is shared with a
//! channel prefix per test; the fault tests start and kill a `redis-server` of their own.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use multichat_server::cluster::{channel, Envelope};
use multichat_server::db::NewMessage;
use multichat_server::hub::Change;
use multichat_server::protocol::{Event, MSG_MESSAGE};
use multichat_server::Config;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn fast() -> Config {
    Config { messages_per_second: 100_000, ..test_config() }
}

/// Two nodes of one deployment: one database, one Redis channel.
async fn two_nodes(db: &TestDb, redis: &str) -> (TestServer, TestServer) {
    let prefix = unique_prefix();
    let a = TestServer::start_linked(db, fast(), redis, &prefix).await;
    let b = TestServer::start_linked(db, fast(), redis, &prefix).await;
    // Linked once Redis is reached, which /readyz says.
    a.until_ready_is(200).await;
    b.until_ready_is(200).await;
    (a, b)
}

/// Reads frames until one matches `wanted` (other frames in between are skipped); fails after the usual wait.
async fn until(ws: &mut Ws, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let frame = ws.recv().await;
        if wanted(&frame) {
            return frame;
        }
    }
}

/// The chat message `text`, as `ws` hears it.
async fn hears(ws: &mut Ws, text: &str) -> Value {
    until(ws, |f| f["msg_type"] == 0 && f["message"] == text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_two_nodes_chat_in_one_room_as_if_on_one() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = two_nodes(&db, &redis_url()).await;
    let lobby = a.room("Lobby", false).await.id;
    let mut bob = b.login_new("bob", plain()).await.connect().await;
    let mut ann = a.login_new("ann", plain()).await.connect().await;
    assert_eq!(bob.join(lobby).await["join"], lobby.to_string());
    assert_eq!(ann.join(lobby).await["join"], lobby.to_string());
    assert_eq!(bob.recv().await, json!({ "msg_type": 4, "room": lobby, "username": "ann" }), "enter crosses nodes");

    ann.send_acked(lobby, "hello from A", "a1").await;
    let heard = hears(&mut bob, "hello from A").await;
    assert_eq!((heard["username"].as_str(), heard["id"].as_i64()), (Some("ann"), Some(1)));
    bob.send_acked(lobby, "hello from B", "b1").await;
    let heard = hears(&mut ann, "hello from B").await;
    assert_eq!((heard["username"].as_str(), heard["id"].as_i64()), (Some("bob"), Some(2)));

    ann.send(json!({ "command": "leave", "room": lobby })).await;
    let left = until(&mut bob, |f| f["msg_type"] == 5).await;
    assert_eq!(left, json!({ "msg_type": 5, "room": lobby, "username": "ann" }), "leave crosses nodes");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_only_room_stays_closed_to_non_staff_on_either_node() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = two_nodes(&db, &redis_url()).await;
    let staff_room = a.room("Staff", true).await.id;
    let lobby = a.room("Lobby", false).await.id;
    for node in [&a, &b] {
        let name = format!("pat{}", node.addr.port());
        let mut pat = node.login_new(&name, plain()).await.connect().await;
        assert_eq!(pat.join(staff_room).await["error"], "ROOM_ACCESS_DENIED", "refused on {}", node.addr);
    }

    // Rights change on node A; the user's socket is on node B.
    let admin = a.login_new("root", admin()).await;
    let sam = b.login_new("sam", staff()).await;
    let mut sam_ws = sam.connect().await;
    assert_eq!(sam_ws.join(staff_room).await["join"], staff_room.to_string());
    assert_eq!(sam_ws.join(lobby).await["join"], lobby.to_string());
    let sam_id = b.db.user_with_hash("sam").await.unwrap().unwrap().0.id;
    let demoted = admin.patch(&format!("/api/admin/users/{sam_id}"), json!({ "is_staff": false })).await;
    assert_eq!(demoted.status(), 200);
    let refused = until(&mut sam_ws, |f| f.get("error").is_some()).await;
    assert_eq!((refused["error"].as_str(), refused["room"].as_i64()), (Some("ROOM_ACCESS_DENIED"), Some(staff_room)));
    assert_eq!(sam_ws.recv().await, json!({ "leave": staff_room.to_string() }));
    // Still in the lobby, which is open to everyone.
    sam_ws.send_acked(lobby, "still here", "s1").await;

    // A room made staff-only on node B takes the non-staff out on node A.
    let mut pat_ws = a.login_new("pat", plain()).await.connect().await;
    pat_ws.join(lobby).await;
    let admin_b = b.login("root", "root-password").await;
    let closed = admin_b.patch(&format!("/api/admin/rooms/{lobby}"), json!({ "staff_only": true })).await;
    assert_eq!(closed.status(), 200);
    let refused = until(&mut pat_ws, |f| f.get("error").is_some()).await;
    assert_eq!((refused["error"].as_str(), refused["room"].as_i64()), (Some("ROOM_ACCESS_DENIED"), Some(lobby)));

    // Logging out through node A closes the session's socket on node B.
    assert_eq!(
        sam.http.post(format!("http://{}/api/logout", a.addr)).bearer_auth(&sam.token).send().await.unwrap().status(),
        204
    );
    assert_eq!(sam_ws.closed().await.map(|f| u16::from(f.code)), Some(4001));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_sent_alternately_through_both_nodes_reach_every_member_complete_and_in_order() {
    const COUNT: usize = 1000;
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = two_nodes(&db, &redis_url()).await;
    let lobby = a.room("Lobby", false).await.id;
    // Two senders and two listeners, one of each on each node.
    let mut members = Vec::new();
    for (name, node) in [("ann", &a), ("bob", &b), ("cat", &a), ("dan", &b)] {
        let mut ws = node.login_new(name, plain()).await.connect().await;
        ws.join(lobby).await;
        members.push((name, ws));
    }
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for (name, ws) in members {
        let (sink, mut stream) = ws.split();
        senders.push(sink);
        readers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut texts = Vec::new();
            while ids.len() < COUNT {
                let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
                let Ok(Some(Ok(Message::Text(text)))) = next else {
                    panic!("{name} stopped hearing after {} messages: {next:?}", ids.len());
                };
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                assert!(frame.get("error").is_none(), "{name}: {frame}");
                if frame["msg_type"] == 0 {
                    ids.push(frame["id"].as_i64().unwrap());
                    texts.push(frame["message"].as_str().unwrap().to_owned());
                }
            }
            (name, ids, texts)
        }));
    }
    senders.truncate(2); // ann (node A) and bob (node B) send; all four listen
    for n in 0..COUNT {
        let frame = json!({ "command": "send", "room": lobby, "message": format!("m{n}") }).to_string();
        senders[n % 2].send(Message::text(frame)).await.unwrap();
    }
    let expected_ids: Vec<i64> = (1..=COUNT as i64).collect();
    let expected_texts: HashSet<String> = (0..COUNT).map(|n| format!("m{n}")).collect();
    for reader in readers {
        let (name, ids, texts) = reader.await.unwrap();
        assert_eq!(ids, expected_ids, "{name} gets every id once, in order");
        assert_eq!(texts.into_iter().collect::<HashSet<_>>(), expected_texts, "{name} gets every message");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_never_crosses_redis_is_read_from_the_database_in_its_turn() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = unique_prefix();
    let a = TestServer::start_linked(&db, fast(), &redis_url(), &prefix).await;
    a.until_ready_is(200).await;
    let lobby = a.room("Lobby", false).await.id;
    let ann = a.login_new("ann", plain()).await;
    let mut ann_ws = ann.connect().await;
    ann_ws.join(lobby).await;

    // Another node stores message 1 and dies before relaying it, then a third stores and relays message 2.
    let other_node = db.open().await;
    let ann_id = other_node.user_with_hash("ann").await.unwrap().unwrap().0.id;
    for text in ["lost on the way", "relayed"] {
        let new = NewMessage { room: lobby, user_id: ann_id, username: "ann".into(), body: text.into(), nonce: None };
        other_node.store_batch(&[&new]).await.unwrap();
    }
    let stored =
        other_node.history(lobby, multichat_server::db::Page { limit: 10, ..Default::default() }).await.unwrap();
    let relayed = &stored.messages[1];
    let frame = Event::Message {
        msg_type: MSG_MESSAGE,
        room: lobby,
        username: "ann",
        message: &relayed.message,
        id: relayed.id,
        ts: relayed.ts,
    };
    let change = Change::Message { room: lobby, id: relayed.id, frame: frame.encode().to_string() };
    let redis = redis::Client::open(redis_url()).unwrap();
    let mut publisher = redis.get_multiplexed_async_connection().await.unwrap();
    // Something on the channel that is not a change is skipped, not fatal.
    let _: () =
        redis::cmd("PUBLISH").arg(channel(&prefix)).arg("not a change").query_async(&mut publisher).await.unwrap();
    let envelope = serde_json::to_string(&Envelope { node: "another".into(), change }).unwrap();
    let _: () = redis::cmd("PUBLISH").arg(channel(&prefix)).arg(envelope).query_async(&mut publisher).await.unwrap();

    let first = ann_ws.recv_message().await;
    assert_eq!((first["id"].as_i64(), first["message"].as_str()), (Some(1), Some("lost on the way")));
    let second = ann_ws.recv_message().await;
    assert_eq!((second["id"].as_i64(), second["message"].as_str()), (Some(2), Some("relayed")));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_sharing_one_redis_do_not_hear_each_other() {
    let (db_one, db_two) = (TestDb::new(Backend::Postgres).await, TestDb::new(Backend::Postgres).await);
    let one = TestServer::start_linked(&db_one, fast(), &redis_url(), &unique_prefix()).await;
    let two = TestServer::start_linked(&db_two, fast(), &redis_url(), &unique_prefix()).await;
    one.until_ready_is(200).await;
    two.until_ready_is(200).await;
    // Both databases have a room 1 and a user "ann".
    let (room_one, room_two) = (one.room("Lobby", false).await.id, two.room("Lobby", false).await.id);
    assert_eq!(room_one, room_two);
    let mut on_one = one.login_new("ann", plain()).await.connect().await;
    let mut on_two = two.login_new("ann", plain()).await.connect().await;
    on_one.join(room_one).await;
    on_two.join(room_two).await;
    on_one.send_acked(room_one, "for deployment one only", "n").await;
    on_two.expect_nothing(Duration::from_millis(500)).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_leaves_each_node_serving_its_own_users_and_both_recover_when_it_returns() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis.url()).await;
    let lobby = a.room("Lobby", false).await.id;
    let mut ann = a.login_new("ann", plain()).await.connect().await;
    let mut cat = a.login_new("cat", plain()).await.connect().await;
    let mut bob = b.login_new("bob", plain()).await.connect().await;
    let mut dan = b.login_new("dan", plain()).await.connect().await;
    for ws in [&mut ann, &mut cat, &mut bob, &mut dan] {
        ws.join(lobby).await;
    }
    ann.send_acked(lobby, "before", "a0").await;
    hears(&mut bob, "before").await;

    assert!(metrics(&a).await.contains("\nmultichat_redis_connected 1\n"));
    redis.kill();
    a.until_ready_is(503).await;
    b.until_ready_is(503).await;
    assert!(metrics(&a).await.contains("\nmultichat_redis_connected 0\n"), "an operator sees it too");
    // Each node still serves its own users.
    ann.send_acked(lobby, "from A while Redis is down", "a1").await;
    hears(&mut cat, "from A while Redis is down").await;
    bob.send_acked(lobby, "from B while Redis is down", "b1").await;
    // Node B notices the hole before its own message 3 and reads message 2 from the database.
    assert_eq!(ids_until(&mut dan, "from B while Redis is down").await, [1, 2, 3], "dan, on B");
    // New logins and sockets still work on a node cut off from the others.
    let mut eve = b.login_new("eve", plain()).await.connect().await;
    assert_eq!(eve.join(lobby).await["join"], lobby.to_string());

    redis.restart().await;
    a.until_ready_is(200).await;
    b.until_ready_is(200).await;
    // What is said now crosses nodes again, both ways.
    ann.send_acked(lobby, "after, from A", "a2").await;
    bob.send_acked(lobby, "after, from B", "b2").await;
    // And every member has everything, in id order: node A read what B said meanwhile from the database
    // on reconnecting.
    assert_eq!(ids_until(&mut cat, "after, from B").await, [3, 4, 5], "cat, on A");
    assert_eq!(ids_until(&mut dan, "after, from B").await, [4, 5], "dan, on B");
    assert_eq!(ids_until(&mut eve, "after, from B").await, [4, 5], "eve, who joined on B meanwhile");
    a.stop().await;
    b.stop().await;
}

async fn metrics(node: &TestServer) -> String {
    http_client().get(node.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The ids of the chat messages `ws` hears, up to and including `text`.
async fn ids_until(ws: &mut Ws, text: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    loop {
        let frame = ws.recv_message().await;
        ids.push(frame["id"].as_i64().unwrap());
        if frame["message"] == text {
            return ids;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_while_redis_was_down_closes_the_session_on_the_other_node_once_it_returns() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut redis = RedisServer::start().await;
    let (a, b) = two_nodes(&db, &redis.url()).await;
    let ann = a.login_new("ann", plain()).await;
    let mut on_b = Session { token: ann.token.clone(), addr: b.addr, http: http_client() }.connect().await;
    redis.kill();
    a.until_ready_is(503).await;
    b.until_ready_is(503).await;
    assert_eq!(ann.post("/api/logout", json!({})).await.status(), 204);
    on_b.expect_nothing(Duration::from_millis(300)).await;
    redis.restart().await;
    // Node B missed the logout; on reconnecting it checks its sessions again.
    assert_eq!(on_b.closed().await.map(|f| u16::from(f.code)), Some(4001));
    a.stop().await;
    b.stop().await;
}
