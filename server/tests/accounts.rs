//! Accounts over HTTP: login, throttling, logout, first-run setup, the admin API.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

async fn try_login(server: &TestServer, username: &str, password: &str) -> reqwest::Response {
    http_client()
        .post(server.url("/api/login"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap()
}

async fn login_sets_an_httponly_cookie_and_names_are_case_insensitive(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.user("Zoë", "secret", plain()).await;
    let response = try_login(&server, "ZOË", "secret").await;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["username"], "Zoë");
    assert!(body["token"].as_str().unwrap().len() >= 43, "at least 256 bits");

    let duplicate = multichat_server::accounts::create(&server.db, &server.state.passwords, "zoë", "x", plain()).await;
    assert!(matches!(duplicate, Err(multichat_server::Error::UsernameTaken)));
    server.stop().await;
}

async fn wrong_credentials_get_one_generic_error_whether_or_not_the_user_exists(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.user("ann", "right", plain()).await;
    let wrong_password = try_login(&server, "ann", "wrong").await;
    let no_such_user = try_login(&server, "nobody", "wrong").await;
    assert_eq!(wrong_password.status(), 401);
    assert_eq!(no_such_user.status(), 401);
    assert_eq!(wrong_password.text().await.unwrap(), no_such_user.text().await.unwrap());

    // Both take the path through argon2. The fastest of several tries is compared: load only ever adds
    // time, so the minimum shows the work done. Each name is tried once, so the throttle stays out of it.
    let mut known = Duration::MAX;
    let mut unknown = Duration::MAX;
    for n in 0..5 {
        server.user(&format!("real{n}"), "right", plain()).await;
        for (name, fastest) in [(format!("real{n}"), &mut known), (format!("ghost{n}"), &mut unknown)] {
            let start = Instant::now();
            assert_eq!(try_login(&server, &name, "wrong").await.status(), 401);
            *fastest = (*fastest).min(start.elapsed());
        }
    }
    assert!(unknown * 2 > known, "unknown user answered in {unknown:?}, known in {known:?}");
    server.stop().await;
}

async fn repeated_failures_back_off_alike_for_real_and_unknown_names(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.user("ann", "right", plain()).await;
    for name in ["ann", "ghost"] {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(try_login(&server, name, "wrong").await.status().as_u16());
        }
        assert_eq!(seen, [401, 401, 401, 401, 429], "for {name}");
        let throttled = try_login(&server, name, "wrong").await;
        assert_eq!(throttled.status(), 429);
        assert!(throttled.headers().contains_key("retry-after"));
    }
    // Even the right password waits out the backoff, then works.
    assert_eq!(try_login(&server, "ann", "right").await.status(), 429);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(try_login(&server, "ann", "right").await.status(), 200);
    server.stop().await;
}

async fn a_burst_of_concurrent_guesses_is_throttled_too(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.user("ann", "right", plain()).await;
    let guesses = (0..10).map(|n| {
        let server = &server;
        async move { try_login(server, "ann", &format!("guess {n}")).await.status().as_u16() }
    });
    let mut statuses = futures_util::future::join_all(guesses).await;
    statuses.sort();
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429, 429, 429, 429, 429], "only the free attempts are tried");
    server.stop().await;
}

/// Failed logins (a new name each time, so only the per-address limit is in play), each claiming to come
/// from `from(n)`, until one is throttled; returns how many were answered 401 first.
async fn failures_until_throttled(server: &TestServer, from: impl Fn(u32) -> String) -> u32 {
    for n in 0..40 {
        let request = http_client().post(server.url("/api/login")).header("x-forwarded-for", from(n));
        let body = json!({ "username": format!("u{n}"), "password": "x" });
        match request.json(&body).send().await.unwrap().status().as_u16() {
            401 => continue,
            429 => return n,
            other => panic!("answered {other}"),
        }
    }
    panic!("never throttled")
}

async fn behind_a_trusted_proxy_the_throttle_counts_per_forwarded_client(backend: Backend) {
    let db = TestDb::new(backend).await;
    let trusted = vec![multichat_server::client_addr::parse_trusted("127.0.0.1").unwrap()];
    let server =
        TestServer::start_with(&db, multichat_server::Config { trusted_proxies: trusted, ..test_config() }).await;
    let allowed = failures_until_throttled(&server, |_| "198.51.100.1".into()).await;
    assert!((20..=21).contains(&allowed), "the per-address allowance, then a wait ({allowed})");
    let other = http_client().post(server.url("/api/login")).header("x-forwarded-for", "198.51.100.2");
    let other = other.json(&json!({ "username": "someone", "password": "x" })).send().await.unwrap();
    assert_eq!(other.status(), 401, "another client behind the same proxy is not throttled");
    server.stop().await;
}

async fn without_trusted_proxies_a_forwarded_address_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    // A client that claims a new address each time is still one address: its own.
    let allowed = failures_until_throttled(&server, |n| format!("203.0.113.{n}")).await;
    assert!((20..=21).contains(&allowed), "throttled as one client ({allowed})");
    server.stop().await;
}

async fn logout_closes_only_that_sessions_sockets(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.user("ann", "pw", plain()).await;
    let laptop = server.login("ann", "pw").await;
    let phone = server.login("ann", "pw").await;
    let (mut laptop_ws, mut phone_ws) = (laptop.connect().await, phone.connect().await);

    assert_eq!(laptop.post("/api/logout", json!({})).await.status(), 204);
    assert_eq!(laptop_ws.recv().await["error"], "USER_HAS_TO_LOGIN");
    let close = laptop_ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(laptop.get("/api/me").await.status(), 401, "the token is dead");

    phone_ws.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(phone.get("/api/me").await.status(), 200);
    server.stop().await;
}

async fn the_first_run_setup_works_once_and_never_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let http = http_client();
    let needed: Value = http.get(server.url("/api/setup")).send().await.unwrap().json().await.unwrap();
    assert_eq!(needed, json!({ "needed": true }));

    let first = http.post(server.url("/api/setup")).json(&json!({ "username": "root", "password": "pw" }));
    let first = first.send().await.unwrap();
    assert_eq!(first.status(), 201);
    let body: Value = first.json().await.unwrap();
    assert_eq!((body["user"]["is_admin"].as_bool(), body["user"]["is_staff"].as_bool()), (Some(true), Some(true)));
    let me = http.get(server.url("/api/me")).send().await.unwrap();
    assert_eq!(me.status(), 200, "the cookie from setup logs the admin in");

    let again = http_client().post(server.url("/api/setup")).json(&json!({ "username": "mallory", "password": "pw" }));
    assert_eq!(again.send().await.unwrap().status(), 409);
    assert_eq!(try_login(&server, "mallory", "pw").await.status(), 401);
    let needed: Value = http.get(server.url("/api/setup")).send().await.unwrap().json().await.unwrap();
    assert_eq!(needed, json!({ "needed": false }));
    server.stop().await;
}

async fn the_admin_api_is_for_admins_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let pat = server.login_new("pat", staff()).await;
    let anonymous = http_client();
    for path in ["/api/admin/rooms", "/api/admin/users"] {
        assert_eq!(anonymous.get(server.url(path)).send().await.unwrap().status(), 401, "{path}");
        assert_eq!(pat.get(path).await.status(), 403, "{path}");
    }
    assert_eq!(pat.post("/api/admin/rooms", json!({ "title": "mine" })).await.status(), 403);
    assert_eq!(pat.post("/api/admin/users", json!({ "username": "x", "password": "y" })).await.status(), 403);
    assert_eq!(pat.delete("/api/admin/users/1").await.status(), 403);
    assert!(server.db.list_rooms(true).await.unwrap().is_empty(), "nothing was created");
    server.stop().await;
}

async fn admins_manage_rooms_and_accounts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let boss = server.login_new("boss", admin()).await;

    let room: Value =
        boss.post("/api/admin/rooms", json!({ "title": "Ops", "staff_only": true })).await.json().await.unwrap();
    assert_eq!((room["title"].as_str(), room["staff_only"].as_bool()), (Some("Ops"), Some(true)));
    let bad = boss.post("/api/admin/rooms", json!({ "title": "x".repeat(256) })).await;
    assert_eq!(bad.status(), 400);
    let renamed = boss.patch(&format!("/api/admin/rooms/{}", room["id"]), json!({ "title": "Operations" })).await;
    assert_eq!(renamed.json::<Value>().await.unwrap()["title"], "Operations");

    let created = boss.post("/api/admin/users", json!({ "username": "newbie", "password": "pw1" })).await;
    assert_eq!(created.status(), 201);
    let newbie: Value = created.json().await.unwrap();
    let taken = boss.post("/api/admin/users", json!({ "username": "NEWBIE", "password": "pw" })).await;
    assert_eq!(taken.status(), 409);
    let empty = boss.post("/api/admin/users", json!({ "username": "other", "password": "" })).await;
    assert_eq!(empty.status(), 400);

    let newbie_session = server.login("newbie", "pw1").await;
    let mut newbie_ws = newbie_session.connect().await;
    let reset = boss.patch(&format!("/api/admin/users/{}", newbie["id"]), json!({ "password": "pw2" })).await;
    assert_eq!(reset.status(), 200);
    assert_eq!(u16::from(newbie_ws.closed().await.expect("close").code), 4003, "a reset closes the sockets");
    assert_eq!(try_login(&server, "newbie", "pw1").await.status(), 401);
    let mut newbie_ws = server.login("newbie", "pw2").await.connect().await;

    let off = boss.patch(&format!("/api/admin/users/{}", newbie["id"]), json!({ "is_active": false })).await;
    assert_eq!(off.json::<Value>().await.unwrap()["is_active"], false);
    assert_eq!(u16::from(newbie_ws.closed().await.expect("close").code), 4003, "deactivation closes the sockets");
    assert_eq!(try_login(&server, "newbie", "pw2").await.status(), 401);

    assert_eq!(boss.delete(&format!("/api/admin/rooms/{}", room["id"])).await.status(), 204);
    assert_eq!(boss.get(&format!("/api/admin/rooms/{}", room["id"])).await.status(), 404);
    server.stop().await;
}

async fn deleting_a_user_keeps_their_messages_under_their_name(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let lobby = server.room("Lobby", false).await;
    let boss = server.login_new("boss", admin()).await;
    let leaver = server.login_new("leaver", plain()).await;
    let mut ws = leaver.connect().await;
    ws.join(lobby.id).await;
    ws.send(json!({ "command": "send", "room": lobby.id, "message": "goodbye" })).await;
    assert_eq!(ws.recv().await["message"], "goodbye");

    let id = leaver.get("/api/me").await.json::<Value>().await.unwrap()["id"].clone();
    assert_eq!(boss.delete(&format!("/api/admin/users/{id}")).await.status(), 204);
    assert_eq!(u16::from(ws.closed().await.expect("close").code), 4003);
    let history = server.stored(lobby.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].username.as_str(), history[0].message.as_str()), ("leaver", "goodbye"));
    server.stop().await;
}

async fn the_last_admin_cannot_be_removed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let boss = server.login_new("boss", admin()).await;
    let id = boss.get("/api/me").await.json::<Value>().await.unwrap()["id"].clone();
    assert_eq!(boss.patch(&format!("/api/admin/users/{id}"), json!({ "is_admin": false })).await.status(), 409);
    assert_eq!(boss.patch(&format!("/api/admin/users/{id}"), json!({ "is_active": false })).await.status(), 409);
    assert_eq!(boss.delete(&format!("/api/admin/users/{id}")).await.status(), 409);
    assert_eq!(boss.get("/api/me").await.json::<Value>().await.unwrap()["is_admin"], true);
    server.stop().await;
}

async fn users_change_their_own_password_with_the_old_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    server.user("ann", "old", plain()).await;
    let here = server.login("ann", "old").await;
    let elsewhere = server.login("ann", "old").await;
    let mut elsewhere_ws = elsewhere.connect().await;
    let wrong = here.post("/api/me/password", json!({ "old_password": "nope", "new_password": "new" })).await;
    assert_eq!(wrong.status(), 401);
    let changed = here.post("/api/me/password", json!({ "old_password": "old", "new_password": "new" })).await;
    assert_eq!(changed.status(), 204);
    assert_eq!(here.get("/api/me").await.status(), 200, "this session stays");
    assert_eq!(elsewhere.get("/api/me").await.status(), 401, "other sessions end");
    assert!(elsewhere_ws.closed().await.is_some());
    assert_eq!(try_login(&server, "ann", "new").await.status(), 200);
    server.stop().await;
}

async fn readiness_reports_the_database_and_liveness_does_not(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let status = |path: &'static str| {
        let url = server.url(path);
        async move { http_client().get(url).send().await.unwrap().status() }
    };
    assert_eq!(status("/readyz").await, 200);
    assert_eq!(status("/healthz").await, 200);
    server.db.close().await; // as good as a dead database for this server
    assert_eq!(status("/readyz").await, 503, "no traffic to a node without its database");
    assert_eq!(status("/healthz").await, 200, "but the process is alive: no restart needed");
    let login = try_login(&server, "anyone", "pw").await;
    assert_eq!(login.status(), 503, "a clear error, not a crash");
    server.stop().await;
}

async fn a_node_shutting_down_tells_the_load_balancer_it_is_not_ready(backend: Backend) {
    use tower::ServiceExt;
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let app = multichat_server::router(server.state.clone());
    let ready = |app: axum::Router| async move {
        let request = axum::http::Request::get("/readyz").body(axum::body::Body::empty()).unwrap();
        app.oneshot(request).await.unwrap().status()
    };
    assert_eq!(ready(app.clone()).await, 200);
    server.state.shutdown.cancel(); // SIGTERM: sockets are closing, the load balancer must stop sending
    assert_eq!(ready(app).await, 503);
    server.stop().await;
}

async fn a_socket_closes_when_its_session_expires(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = multichat_server::Config { session_ttl: Duration::from_secs(1), ..test_config() };
    let server = TestServer::start_with(&db, config).await;
    let session = server.login_new("ann", plain()).await;
    let mut ws = session.connect().await;
    assert_eq!(ws.recv().await["error"], "USER_HAS_TO_LOGIN");
    assert_eq!(u16::from(ws.closed().await.expect("a close frame").code), 4001);
    assert_eq!(session.get("/api/me").await.status(), 401, "the token expired with it");
    server.stop().await;
}

async fn absurd_login_input_is_refused_cheaply(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(&db).await;
    let huge_name = "n".repeat(10_000);
    assert_eq!(try_login(&server, &huge_name, "pw").await.status(), 401);
    assert_eq!(try_login(&server, "ann", &"p".repeat(5_000)).await.status(), 401);
    let body = json!({ "username": "ann", "password": "pw", "padding": "x".repeat(100_000) }).to_string();
    let too_big = http_client()
        .post(server.url("/api/login"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413, "bodies are capped");
    server.stop().await;
}

on_both_backends!(
    a_socket_closes_when_its_session_expires,
    absurd_login_input_is_refused_cheaply,
    login_sets_an_httponly_cookie_and_names_are_case_insensitive,
    wrong_credentials_get_one_generic_error_whether_or_not_the_user_exists,
    repeated_failures_back_off_alike_for_real_and_unknown_names,
    a_burst_of_concurrent_guesses_is_throttled_too,
    logout_closes_only_that_sessions_sockets,
    the_first_run_setup_works_once_and_never_again,
    the_admin_api_is_for_admins_only,
    admins_manage_rooms_and_accounts,
    deleting_a_user_keeps_their_messages_under_their_name,
    the_last_admin_cannot_be_removed,
    users_change_their_own_password_with_the_old_one,
    readiness_reports_the_database_and_liveness_does_not,
    a_node_shutting_down_tells_the_load_balancer_it_is_not_ready,
    behind_a_trusted_proxy_the_throttle_counts_per_forwarded_client,
    without_trusted_proxies_a_forwarded_address_changes_nothing,
);
