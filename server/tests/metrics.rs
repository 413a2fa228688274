//! `GET /metrics`: what an operator's Prometheus reads off one node.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use common::*;

/// The value of one sample line (`name value`) of the metrics text.
async fn sample(server: &TestServer, name: &str) -> String {
    let response = http_client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    let line = text.lines().find(|l| l.split(' ').next() == Some(name));
    line.unwrap_or_else(|| panic!("no {name} in:\n{text}")).split(' ').nth(1).unwrap().to_owned()
}

/// Waits (a few seconds at most) until sample `name` reads `value`.
async fn until_sample(server: &TestServer, name: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while sample(server, name).await != value {
        assert!(tokio::time::Instant::now() < deadline, "{name} never reached {value}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn metrics_count_this_nodes_sockets_rooms_and_messages(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    server.room("Empty", false).await;
    let mut ann = server.login_new("ann", plain()).await.connect().await;
    let mut bob = server.login_new("bob", plain()).await.connect().await;
    ann.join(lobby.id).await;
    bob.join(lobby.id).await;
    assert_eq!(sample(&server, "multichat_connections").await, "2");
    assert_eq!(sample(&server, "multichat_rooms").await, "1", "only rooms someone is in");

    for n in 1..=3 {
        ann.send_acked(lobby.id, &format!("hello {n}"), &format!("n{n}")).await;
        assert_eq!(bob.recv_message().await["message"], format!("hello {n}"));
    }
    assert_eq!(sample(&server, "multichat_messages_received_total").await, "3");
    // Each message to both members; ann's own copies may still be on their way when bob has his.
    until_sample(&server, "multichat_messages_delivered_total", "6").await;
    assert_eq!(sample(&server, "multichat_slow_clients_dropped_total").await, "0");
    drop(bob);
    until_sample(&server, "multichat_connections", "1").await;
    server.stop().await;
}

on_both_backends!(metrics_count_this_nodes_sockets_rooms_and_messages);
