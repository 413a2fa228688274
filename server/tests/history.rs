//! History and loss-free reconnect: pages of stored messages, resume with replay, idempotent sends,
//! retention and ephemeral rooms.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use multichat_server::db::{History, NewMessage, NewUser, Page, Stored, User, UserPatch};
use multichat_server::error::Error;
use multichat_server::Config;
use serde_json::{json, Value};

fn ids(messages: &Value) -> Vec<i64> {
    messages.as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect()
}

/// Joins a fresh room and says `count` numbered messages in it.
async fn room_with_messages(server: &TestServer, count: usize) -> (i64, Ws) {
    let room = server.room("History", false).await;
    let mut ws = server.login_new("writer", plain()).await.connect().await;
    ws.join(room.id).await;
    for n in 1..=count {
        assert_eq!(ws.send_acked(room.id, &format!("m{n}"), &format!("k{n}")).await["id"], n as i64);
    }
    (room.id, ws)
}

/// Asks for a page of `room`'s history with the extra fields `args`; returns its ids, `more`, and the frame.
async fn page(ws: &mut Ws, room: i64, args: Value) -> (Vec<i64>, bool, Value) {
    let mut command = json!({ "command": "history", "room": room });
    command.as_object_mut().unwrap().extend(args.as_object().unwrap().clone());
    ws.send(command).await;
    loop {
        let frame = ws.recv().await;
        if frame.get("history").is_some() {
            assert_eq!(frame["history"], room.to_string());
            return (ids(&frame["messages"]), frame["more"].as_bool().unwrap(), frame);
        }
    }
}

fn fast() -> Config {
    Config { messages_per_second: 100_000, ..test_config() }
}

async fn history_pages_back_and_forth_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, fast()).await;
    let (room, mut ws) = room_with_messages(&server, 7).await;
    let (newest, more, frame) = page(&mut ws, room, json!({ "limit": 3 })).await;
    assert_eq!((newest, more), (vec![5, 6, 7], true), "no cursor: the newest page, oldest first");
    assert_eq!(
        frame["messages"][0],
        json!({ "msg_type": 0, "room": room, "username": "writer", "message": "m5", "id": 5, "ts": frame["messages"][0]["ts"] })
    );
    assert_eq!(page(&mut ws, room, json!({ "before": 5, "limit": 3 })).await.0, vec![2, 3, 4]);
    let (oldest, more, _) = page(&mut ws, room, json!({ "before": 2, "limit": 3 })).await;
    assert_eq!((oldest, more), (vec![1], false), "nothing older");
    let (forward, more, _) = page(&mut ws, room, json!({ "after": 4, "limit": 2 })).await;
    assert_eq!((forward, more), (vec![5, 6], true), "after alone: catching up, oldest first");
    assert_eq!(page(&mut ws, room, json!({ "after": 6, "limit": 2 })).await.0, vec![7]);
    assert_eq!(page(&mut ws, room, json!({ "after": 2, "before": 6 })).await.0, vec![3, 4, 5]);

    let http = server.login("writer", "writer-password").await;
    let body: Value = http.get(&format!("/api/rooms/{room}/messages?before=7&limit=2")).await.json().await.unwrap();
    assert_eq!((ids(&body["messages"]), body["more"].as_bool()), (vec![5, 6], Some(true)));
    assert_eq!(body["messages"][1]["message"], "m6");
    assert_eq!(http.get(&format!("/api/rooms/{room}/messages?limit=0")).await.status(), 400);
    assert_eq!(http.get("/api/rooms/999/messages").await.status(), 404);
    let rooms: Value = http.get("/api/rooms").await.json().await.unwrap();
    assert_eq!(rooms[0]["last_message_id"], 7);
    server.stop().await;
}

async fn non_staff_cannot_read_a_staff_only_history_by_any_path(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, fast()).await;
    let secret = server.room("Staff room", true).await;
    let mut sam = server.login_new("sam", staff()).await.connect().await;
    sam.join(secret.id).await;
    sam.send_acked(secret.id, "classified", "k1").await;
    assert_eq!(sam.recv_message().await["message"], "classified", "the ack comes first, then the event");

    let pat = server.login_new("pat", plain()).await;
    let mut pat_ws = pat.connect().await;
    pat_ws.send(json!({ "command": "history", "room": secret.id })).await;
    assert_eq!(pat_ws.recv().await["error"], "ROOM_ACCESS_DENIED");
    pat_ws.send(json!({ "command": "join", "room": secret.id, "after": 0 })).await;
    assert_eq!(pat_ws.recv().await["error"], "ROOM_ACCESS_DENIED", "no replay either");
    assert_eq!(pat.get(&format!("/api/rooms/{}/messages", secret.id)).await.status(), 403);
    pat_ws.expect_nothing(Duration::from_millis(200)).await;

    // Losing staff rights closes the door to history too.
    db.execute("UPDATE users SET is_staff = FALSE WHERE username = 'sam'").await;
    sam.send(json!({ "command": "history", "room": secret.id })).await;
    assert_eq!(sam.recv().await["error"], "ROOM_ACCESS_DENIED");
    server.stop().await;
}

async fn a_reconnecting_client_gets_exactly_what_it_missed_then_live(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, fast()).await;
    let (room, mut writer) = room_with_messages(&server, 3).await;
    let reader = server.login_new("reader", plain()).await;
    let mut ws = reader.connect().await;
    ws.send(json!({ "command": "join", "room": room, "after": 0 })).await;
    assert_eq!(ws.recv().await["join"], room.to_string());
    for id in 1..=3 {
        assert_eq!(ws.recv().await["id"], id, "a fresh client replays from the start");
    }
    drop(ws);
    for n in 4..=8 {
        writer.send_acked(room, &format!("m{n}"), &format!("k{n}")).await;
    }
    let mut ws = reader.connect().await;
    ws.send(json!({ "command": "join", "room": room, "after": 3 })).await;
    assert_eq!(ws.recv().await["join"], room.to_string());
    for id in 4..=8 {
        let message = ws.recv().await;
        assert_eq!((message["id"].as_i64(), message["message"].as_str()), (Some(id), Some(format!("m{id}").as_str())));
    }
    writer.send_acked(room, "live", "k-live").await;
    assert_eq!(ws.recv_message().await["id"], 9, "then live, nothing twice");
    ws.expect_nothing(Duration::from_millis(200)).await;

    // A client that claims more than the room has (its server was restored from a backup) still gets
    // what comes next.
    let mut confused = reader.connect().await;
    confused.send(json!({ "command": "join", "room": room, "after": 1000 })).await;
    assert_eq!(confused.recv().await["join"], room.to_string());
    writer.send_acked(room, "after the restore", "k-restore").await;
    assert_eq!(confused.recv_message().await["id"], 10);
    server.stop().await;
}

async fn resume_has_no_gap_and_no_duplicate_while_messages_keep_coming(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, fast()).await;
    let writer = server.login_new("writer", plain()).await;
    let reader = server.login_new("reader", plain()).await;
    const TOTAL: i64 = 60;
    for round in 0..40 {
        let room = server.room(&format!("race {round}"), false).await.id;
        let mut w = writer.connect().await;
        w.join(room).await;
        let sender = tokio::spawn(async move {
            for n in 1..=TOTAL {
                assert_eq!(w.send_acked(room, &format!("m{n}"), &format!("{room}-{n}")).await["id"], n);
            }
            w
        });
        // Read a while, drop the connection at a point that moves each round, reconnect with the last id
        // seen, and carry on: every id must arrive exactly once, in order.
        let mut seen = 0;
        let mut connection = 0;
        while seen < TOTAL {
            let mut ws = reader.connect().await;
            ws.send(json!({ "command": "join", "room": room, "after": seen })).await;
            assert_eq!(ws.recv().await["join"], room.to_string());
            let stop_at = (seen + 3 + (round + connection) % 9).min(TOTAL);
            while seen < stop_at {
                let message = ws.recv_message().await;
                assert_eq!(message["id"], seen + 1, "round {round}: no gap, no duplicate, in order");
                seen += 1;
            }
            connection += 1;
        }
        sender.await.unwrap();
    }
    server.stop().await;
}

async fn a_gap_larger_than_the_replay_cap_is_announced_and_paged(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, Config { replay_max: 3, ..fast() }).await;
    let (room, _writer) = room_with_messages(&server, 8).await;
    let mut ws = server.login_new("reader", plain()).await.connect().await;
    ws.send(json!({ "command": "join", "room": room, "after": 1 })).await;
    assert_eq!(ws.recv().await["join"], room.to_string());
    assert_eq!(ws.recv().await, json!({ "gap": room.to_string(), "after": 1, "before": 6 }));
    for id in 6..=8 {
        assert_eq!(ws.recv().await["id"], id);
    }
    ws.send(json!({ "command": "history", "room": room, "after": 1, "before": 6 })).await;
    let page = ws.recv().await;
    assert_eq!((ids(&page["messages"]), page["more"].as_bool()), (vec![2, 3, 4, 5], Some(false)));
    server.stop().await;
}

async fn a_retried_send_is_stored_once_wherever_it_is_retried(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, fast()).await;
    let lobby = server.room("Lobby", false).await.id;
    server.user("ann", "pw", plain()).await;
    let ann = server.login("ann", "pw").await;
    let mut ws = ann.connect().await;
    ws.join(lobby).await;
    let first = ws.send_acked(lobby, "hello once", "nonce-1").await;
    assert_eq!((first["room"].as_i64(), first["id"].as_i64()), (Some(lobby), Some(1)));
    assert_eq!(ws.send_acked(lobby, "hello once", "nonce-1").await, first, "same connection");
    let mut again = ann.connect().await;
    again.join(lobby).await;
    assert_eq!(again.send_acked(lobby, "hello once", "nonce-1").await, first, "a new connection");
    server.stop().await;

    let server = TestServer::start_with(&db, fast()).await;
    let mut ws = server.login("ann", "pw").await.connect().await;
    ws.join(lobby).await;
    assert_eq!(ws.send_acked(lobby, "hello once", "nonce-1").await, first, "after a restart");
    assert_eq!(ws.send_acked(lobby, "something new", "nonce-2").await["id"], 2);
    let stored = server.stored(lobby).await;
    assert_eq!(stored.iter().map(|m| m.message.as_str()).collect::<Vec<_>>(), ["hello once", "something new"]);

    // Another author may use the same nonce: nonces are per author.
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    bob.join(lobby).await;
    assert_eq!(bob.send_acked(lobby, "bob's", "nonce-1").await["id"], 3);
    // A refused send says which nonce it refused.
    let refused = bob.send_acked(lobby, " ", "nonce-x").await;
    assert_eq!((refused["error"].as_str(), refused["nonce"].as_str()), (Some("MESSAGE_EMPTY"), Some("nonce-x")));
    server.stop().await;
}

async fn a_retry_on_another_node_is_stored_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Two server processes on one database: two nodes (fan-out between them is Redis's job, not needed here).
    let node_a = TestServer::start_with(&db, fast()).await;
    let node_b = TestServer::start_with(&db, fast()).await;
    let room = node_a.room("Lobby", false).await.id;
    node_a.user("ann", "pw", plain()).await;
    let mut on_a = node_a.login("ann", "pw").await.connect().await;
    let mut on_b = node_b.login("ann", "pw").await.connect().await;
    on_a.join(room).await;
    on_b.join(room).await;
    // The same send reaches both nodes at once (a client that timed out on one and retried on the other).
    for k in 0..40 {
        let (nonce, text) = (format!("k{k}"), format!("m{k}"));
        let (a, b) = tokio::join!(on_a.send_acked(room, &text, &nonce), on_b.send_acked(room, &text, &nonce));
        assert!(a["id"].is_i64(), "{a}");
        assert_eq!(a["id"], b["id"], "both nodes answer {nonce} with one id");
    }
    let stored = node_a.stored(room).await;
    assert_eq!(stored.len(), 40, "each message stored once");
    node_a.stop().await;
    node_b.stop().await;
}

async fn retention_keeps_only_what_it_is_told_to(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = Config { retention_per_room: Some(3), retention_interval: Duration::from_millis(100), ..fast() };
    let server = TestServer::start_with(&db, config).await;
    let (room, mut ws) = room_with_messages(&server, 6).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.stored(room).await.len() > 3 {
        assert!(tokio::time::Instant::now() < deadline, "the background task applies retention");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.stored(room).await.iter().map(|m| m.id).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(ws.send_acked(room, "after retention", "k7").await["id"], 7, "ids go on");

    let hour = Duration::from_secs(3600);
    assert_eq!(server.db.apply_retention(Some(hour), None, hour).await.unwrap(), 0, "by age: recent ones stay");
    assert!(!server.stored(room).await.is_empty());
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.db.apply_retention(Some(Duration::from_millis(1)), None, hour).await.unwrap();
    assert!(server.stored(room).await.is_empty(), "by age: older ones go");
    server.stop().await;
}

async fn an_ephemeral_room_stores_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, fast()).await;
    let boss = server.login_new("boss", admin()).await;
    let room: Value = boss
        .post("/api/admin/rooms", json!({ "title": "Off the record", "ephemeral": true }))
        .await
        .json()
        .await
        .unwrap();
    let room = room["id"].as_i64().unwrap();
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    ann.join(room).await;
    bob.join(room).await;
    assert_eq!(ann.send_acked(room, "gone with the wind", "k1").await["id"], 1);
    assert_eq!(bob.recv_message().await["message"], "gone with the wind", "live delivery as usual");
    assert!(server.stored(room).await.is_empty());
    assert_eq!(ann.send_acked(room, "gone with the wind", "k1").await["id"], 1, "a retry is known here too");

    drop(bob);
    let mut bob = server.login("bob", "bob-password").await.connect().await;
    bob.send(json!({ "command": "join", "room": room, "after": 0 })).await;
    assert_eq!(bob.recv().await["join"], room.to_string());
    assert_eq!(bob.recv().await, json!({ "gap": room.to_string(), "after": 0, "before": 2 }), "nothing to replay");

    // Turning a room ephemeral forgets what it had stored.
    let lobby = server.room("Lobby", false).await.id;
    ann.join(lobby).await;
    ann.send_acked(lobby, "on the record", "k2").await;
    assert_eq!(server.stored(lobby).await.len(), 1);
    let patched = boss.patch(&format!("/api/admin/rooms/{lobby}"), json!({ "ephemeral": true })).await;
    assert_eq!(patched.status(), 200);
    assert!(server.stored(lobby).await.is_empty());
    server.stop().await;
}

async fn concurrent_senders_share_transactions(backend: Backend) {
    use std::sync::atomic::Ordering;
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, fast()).await;
    let room = server.room("Busy", false).await.id;
    let mut senders = Vec::new();
    for n in 0..8 {
        let mut ws = server.login_new(&format!("s{n}"), plain()).await.connect().await;
        ws.join(room).await;
        senders.push(ws);
    }
    // Every sender puts 40 messages on the wire without waiting, then collects its acks.
    let sends = senders.iter_mut().enumerate().map(|(n, ws)| async move {
        for k in 0..40 {
            ws.send(json!({ "command": "send", "room": room, "message": "x", "nonce": format!("{n}-{k}") })).await;
        }
        let mut acks = 0;
        while acks < 40 {
            if ws.recv().await.get("ack").is_some() {
                acks += 1;
            }
        }
    });
    futures_util::future::join_all(sends).await;
    let stats = server.state.writer.stats();
    let (batches, messages) = (stats.batches.load(Ordering::Relaxed), stats.messages.load(Ordering::Relaxed));
    assert_eq!(messages, 320);
    assert!(batches < messages / 2, "{messages} messages in {batches} transactions: writes are batched under load");
    assert_eq!(server.stored(room).await.len(), 320);
    server.stop().await;
}

/// The writer stores whatever queued up in one batch: each message in it fares as it would alone.
async fn each_message_of_a_batch_fares_on_its_own(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = test_db.open().await;
    let account = |username: &'static str, is_staff| NewUser {
        username,
        username_key: username,
        password_hash: "not a hash: nobody logs in here",
        is_staff,
        is_admin: false,
    };
    let ann = db.create_user(account("ann", false)).await.unwrap();
    let sam = db.create_user(account("sam", true)).await.unwrap();
    let lobby = db.create_room("Lobby", false, false).await.unwrap().id;
    let staff = db.create_room("Staff", true, false).await.unwrap().id;
    let fleeting = db.create_room("Fleeting", false, true).await.unwrap().id;
    let says = |user: &User, room: i64, body: &str, nonce: Option<&str>| NewMessage {
        room,
        user_id: user.id,
        username: user.username.as_str().into(),
        body: body.into(),
        nonce: nonce.map(Into::into),
    };
    let batch = [
        says(&ann, lobby, "one", None),
        says(&ann, staff, "not for ann", None),
        says(&ann, 999_999, "nowhere", None),
        says(&ann, lobby, "two", Some("n1")),
        says(&ann, lobby, "two, retried at once", Some("n1")),
        says(&sam, staff, "staff only", Some("n1")),
        says(&ann, fleeting, "gone with the wind", Some("n2")),
        says(&ann, staff, "not for ann either", Some("n3")),
        says(&ann, lobby, "three", None),
    ];
    let results = db.store_batch(&batch.iter().collect::<Vec<_>>()).await.unwrap();

    let stored = |result: &Result<Stored, Error>| match result {
        Ok(Stored::New(m)) => ("new", m.room, m.id),
        Ok(Stored::Duplicate(m)) => ("duplicate", m.room, m.id),
        Err(Error::RoomAccessDenied) => ("denied", 0, 0),
        Err(Error::RoomInvalid) => ("invalid", 0, 0),
        Err(e) => panic!("unexpected {e:?}"),
    };
    let outcomes: Vec<_> = results.iter().map(stored).collect();
    assert_eq!(
        outcomes,
        [
            ("new", lobby, 1),
            ("denied", 0, 0),
            ("invalid", 0, 0),
            ("new", lobby, 2),
            ("duplicate", lobby, 2),
            ("new", staff, 1),
            ("new", fleeting, 1),
            ("denied", 0, 0),
            ("new", lobby, 3),
        ],
        "ids stay dense: a refused message takes none"
    );
    let texts = |history: History| history.messages.into_iter().map(|m| (m.id, m.message)).collect::<Vec<_>>();
    let page = Page { limit: 10, ..Default::default() };
    assert_eq!(
        texts(db.history(lobby, page).await.unwrap()),
        [(1, "one".to_owned()), (2, "two".to_owned()), (3, "three".to_owned())]
    );
    assert_eq!(texts(db.history(staff, page).await.unwrap()), [(1, "staff only".to_owned())]);
    assert_eq!(texts(db.history(fleeting, page).await.unwrap()), [], "an ephemeral room keeps no text");

    // Later batches: retries are answered with the earlier ids, also the one in the ephemeral room; a nonce
    // of a refused message was not used up.
    db.update_user(ann.id, &UserPatch { is_staff: Some(true), ..Default::default() }).await.unwrap();
    let retries = [
        says(&ann, fleeting, "gone with the wind", Some("n2")),
        says(&ann, lobby, "two", Some("n1")),
        says(&ann, staff, "now ann may", Some("n3")),
    ];
    let results = db.store_batch(&retries.iter().collect::<Vec<_>>()).await.unwrap();
    let outcomes: Vec<_> = results.iter().map(stored).collect();
    assert_eq!(outcomes, [("duplicate", fleeting, 1), ("duplicate", lobby, 2), ("new", staff, 2)]);
}

on_both_backends!(
    concurrent_senders_share_transactions,
    history_pages_back_and_forth_in_order,
    non_staff_cannot_read_a_staff_only_history_by_any_path,
    a_reconnecting_client_gets_exactly_what_it_missed_then_live,
    resume_has_no_gap_and_no_duplicate_while_messages_keep_coming,
    a_gap_larger_than_the_replay_cap_is_announced_and_paged,
    a_retried_send_is_stored_once_wherever_it_is_retried,
    a_retry_on_another_node_is_stored_once,
    retention_keeps_only_what_it_is_told_to,
    an_ephemeral_room_stores_nothing,
    each_message_of_a_batch_fares_on_its_own,
);
