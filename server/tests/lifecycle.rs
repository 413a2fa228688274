//! Connections that go quiet, read too slowly, or meet a server shutting down.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use multichat_server::Config;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Polls `check` every 20 ms until it holds, failing the test after [`WAIT`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_socket_that_stops_answering_pings_is_closed_and_leaves_its_rooms(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server =
        TestServer::start_with(&db, Config { ping_interval: Duration::from_millis(200), ..test_config() }).await;
    let lobby = server.room("Lobby", false).await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    let mut sleepy = server.login_new("sleepy", plain()).await.connect().await;
    bob.join(lobby.id).await;
    sleepy.join(lobby.id).await;
    assert_eq!(bob.recv().await["msg_type"], 4);

    // `sleepy` now reads nothing, so its client never answers the server's pings (a laptop lid closed).
    assert_eq!(bob.recv().await, json!({ "msg_type": 5, "room": lobby.id, "username": "sleepy" }));
    // Bob keeps reading, so his client answers every ping: still connected after several intervals.
    bob.expect_nothing(Duration::from_millis(1500)).await;
    bob.send(json!({ "command": "send", "room": lobby.id, "message": "still here" })).await;
    assert_eq!(bob.recv().await["message"], "still here");
    drop(sleepy);
    server.stop().await;
}

/// Bob floods the Lobby with ~12 MB, far more than the socket buffers between the server and `reader` (in the
/// room too) hold, while `reader` reads nothing; Bob's own stream goes on in order throughout. Returns once Bob
/// has all his messages back, with both sockets (Bob's, and `reader`'s, still open on this side).
async fn flood_past(server: &TestServer, reader: &str) -> (Ws, Ws) {
    let lobby = server.room("Lobby", false).await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    let mut silent = server.login_new(reader, plain()).await.connect().await;
    bob.join(lobby.id).await;
    silent.join(lobby.id).await;
    assert_eq!(bob.recv().await["msg_type"], 4);

    let big = "x".repeat(40_000);
    for n in 1..=300 {
        bob.send(json!({ "command": "send", "room": lobby.id, "message": big })).await;
        let echo = bob.recv().await;
        if echo["msg_type"] == 5 {
            assert_eq!(echo["username"], reader);
            assert_eq!(bob.recv().await["id"], n, "bob's own stream goes on in order");
        } else {
            assert_eq!(echo["id"], n, "bob's own stream goes on in order");
        }
    }
    (bob, silent)
}

/// Settings for [`flood_past`]: messages that large, senders that fast, writes given up after a second.
fn flood_config(outbound_queue: usize) -> Config {
    Config {
        outbound_queue,
        write_timeout: Duration::from_secs(1),
        max_message_chars: 40_000,
        max_frame_bytes: 64 * 1024,
        messages_per_second: 100_000,
        ..test_config()
    }
}

async fn a_slow_reader_is_disconnected_without_stalling_the_room(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_with(&db, flood_config(8)).await;
    let (_bob, _slow) = flood_past(&server, "slow").await;
    eventually("the slow reader is disconnected", || server.state.hub.connections() == 1).await;
    let metrics = http_client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "multichat_slow_clients_dropped_total 1"), "{metrics}");
    server.stop().await;
}

async fn a_reader_whose_socket_stays_full_is_dropped_after_the_write_timeout(backend: Backend) {
    let db = TestDb::new(backend).await;
    // A queue long enough to hold everything, and pings far apart: only the write timeout can drop it.
    let server = TestServer::start_with(&db, flood_config(100_000)).await;
    let (_bob, _stuck) = flood_past(&server, "stuck").await;
    eventually("the stuck reader is disconnected", || server.state.hub.connections() == 1).await;
    server.stop().await;
}

async fn a_slow_reader_leaves_its_rooms_at_once_and_hears_why_when_it_reads_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    // A write timeout far beyond the test's patience: only the full queue can end the slow reader's membership.
    let server =
        TestServer::start_with(&db, Config { write_timeout: Duration::from_secs(120), ..flood_config(8) }).await;
    let (_bob, mut slow) = flood_past(&server, "slow").await;
    // Out of the hub (and so out of the room's presence) while its socket is still full: a write blocked on a
    // reader that stopped reading does not hold the connection up.
    eventually("the slow reader is let go", || server.state.hub.connections() == 1).await;
    // When it reads again, it gets what was already on its way, then the reason it was disconnected.
    let close = slow.closed().await.expect("a close frame after the frames already sent");
    assert_eq!(close.code, CloseCode::Policy, "1008");
    assert_eq!(close.reason.as_str(), "too slow reading messages");
    server.stop().await;
}

async fn shutdown_closes_sockets_with_going_away(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    ann.join(lobby.id).await;
    let addr = server.addr;
    server.stop().await;
    let close = ann.closed().await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Away, "1001");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

on_both_backends!(
    a_socket_that_stops_answering_pings_is_closed_and_leaves_its_rooms,
    a_slow_reader_is_disconnected_without_stalling_the_room,
    a_reader_whose_socket_stays_full_is_dropped_after_the_write_timeout,
    a_slow_reader_leaves_its_rooms_at_once_and_hears_why_when_it_reads_again,
    shutdown_closes_sockets_with_going_away,
);
