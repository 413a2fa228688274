//! The shell's chat socket against a real server (the embedded host on an ephemeral port), reached through a
//! loopback proxy that counts connections and can cut them: one socket for every window, each window gets
//! its rooms' frames, and a lost connection is rejoined and resumed without losing or repeating anything.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use multichat_desktop::connection::{Connection, Notice, State, Windows};
use multichat_desktop::credentials::{CredentialStore, Login, NoKeyring};
use multichat_desktop::error::Result as DesktopResult;
use multichat_desktop::host::{Host, HostSettings};
use multichat_desktop::routing::View;
use multichat_desktop::session::Sessions;
use multichat_desktop::settings::Settings;
use multichat_desktop::tls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// A server with an admin (`ann`, staff) and a user (`bob`), and the rooms asked for.
struct Server {
    host: Host,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let settings =
            HostSettings { bind: "127.0.0.1:0".parse().unwrap(), data_dir: dir.path().to_owned(), announce: None };
        let host = Host::start(&settings).await.unwrap();
        host.create_admin("ann", "ann-pw").await.unwrap();
        let server = Server { host, _dir: dir, http: reqwest::Client::builder().timeout(WAIT).build().unwrap() };
        let admin = server.login("ann", "ann-pw").await;
        let bob = json!({ "username": "bob", "password": "bob-pw", "is_staff": false, "is_admin": false });
        server.call("POST", "/api/admin/users", &admin, Some(bob)).await;
        server
    }

    fn url(&self) -> String {
        format!("http://{}", self.host.addr())
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url())).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn login(&self, username: &str, password: &str) -> String {
        let body = json!({ "username": username, "password": password });
        let answer: Value =
            self.http.post(format!("{}/api/login", self.url())).json(&body).send().await.unwrap().json().await.unwrap();
        answer["token"].as_str().unwrap().to_owned()
    }

    async fn room(&self, title: &str) -> i64 {
        let admin = self.login("ann", "ann-pw").await;
        let (_, room) = self.call("POST", "/api/admin/rooms", &admin, Some(json!({ "title": title }))).await;
        room["id"].as_i64().unwrap()
    }

    /// The texts stored in `room`, oldest first.
    async fn stored(&self, room: i64) -> Vec<String> {
        let admin = self.login("ann", "ann-pw").await;
        let (_, page) = self.call("GET", &format!("/api/rooms/{room}/messages?limit=200"), &admin, None).await;
        page["messages"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap().to_owned()).collect()
    }
}

/// A loopback TCP proxy in front of the server: counts connections, cuts them all on demand, and while
/// `down` refuses new ones (accepts and drops them), like a server or network that is away.
struct Proxy {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    cut: broadcast::Sender<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = broadcast::channel(4);
        let (count, is_down, cuts) = (accepted.clone(), down.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    continue; // dropped: the connect fails
                }
                count.fetch_add(1, Ordering::SeqCst);
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Proxy { addr, accepted, down, cut }
    }

    fn chat_url(&self) -> String {
        format!("ws://{}/chat/stream/", self.addr)
    }

    /// Cuts every connection and refuses new ones until [`Proxy::up`].
    fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// What reached the windows, as the shell's windows would get it.
#[derive(Debug)]
enum Seen {
    Frame(String, Value),
    State(State, Option<String>),
    Notified(String, String),
}

struct Recorder(mpsc::UnboundedSender<Seen>);

impl Windows for Recorder {
    fn deliver(&self, window: &str, frame: &str) {
        let _ = self.0.send(Seen::Frame(window.to_owned(), serde_json::from_str(frame).unwrap()));
    }
    fn deliver_to_all(&self, frame: &str) {
        self.deliver("everyone", frame);
    }
    fn state(&self, state: State, why: Option<&str>) {
        let _ = self.0.send(Seen::State(state, why.map(str::to_owned)));
    }
    fn notify(&self, title: &str, body: &str) {
        let _ = self.0.send(Seen::Notified(title.to_owned(), body.to_owned()));
    }
}

struct Watch(mpsc::UnboundedReceiver<Seen>);

impl Watch {
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.0.recv()).await.expect("something reaches the windows in time").unwrap()
    }

    async fn until_state(&mut self, wanted: State) -> Option<String> {
        loop {
            if let Seen::State(state, why) = self.next().await {
                if state == wanted {
                    return why;
                }
            }
        }
    }

    /// Frames until `done` says enough, by window.
    async fn frames_until(&mut self, mut done: impl FnMut(&str, &Value) -> bool) -> HashMap<String, Vec<Value>> {
        let mut by_window: HashMap<String, Vec<Value>> = HashMap::new();
        loop {
            if let Seen::Frame(window, frame) = self.next().await {
                let stop = done(&window, &frame);
                by_window.entry(window).or_default().push(frame);
                if stop {
                    return by_window;
                }
            }
        }
    }

    /// Nothing at all reaches the windows for a while.
    async fn quiet_for(&mut self, time: Duration) -> Vec<Seen> {
        let mut seen = vec![];
        let _ = tokio::time::timeout(time, async {
            while let Some(event) = self.0.recv().await {
                seen.push(event);
            }
        })
        .await;
        seen
    }
}

fn open(url: String, token: String) -> (Connection, Watch) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Connection::open(url, token, tls::client_config(&[]).unwrap(), Arc::new(Recorder(tx))), Watch(rx))
}

/// Bob, on a plain WebSocket of his own.
async fn bob(
    server: &Server,
    rooms: &[i64],
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let token = server.login("bob", "bob-pw").await;
    let mut request = format!("ws://{}/chat/stream/", server.host.addr()).into_client_request().unwrap();
    request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for room in rooms {
        ws.send(Message::text(json!({ "command": "join", "room": room }).to_string())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
            if frame.to_text().unwrap().contains("\"join\"") {
                break;
            }
        }
    }
    ws
}

async fn say(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    room: i64,
    text: &str,
) {
    ws.send(Message::text(json!({ "command": "send", "room": room, "message": text }).to_string())).await.unwrap();
}

fn join(room: i64, after: i64) -> String {
    json!({ "command": "join", "room": room, "after": after }).to_string()
}

fn is_message(frame: &Value, text: &str) -> bool {
    frame["msg_type"] == 0 && frame["message"] == text
}

fn texts(frames: &[Value]) -> Vec<String> {
    frames.iter().filter(|f| f["msg_type"] == 0).map(|f| f["message"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn every_window_shares_one_socket_and_gets_only_its_rooms_frames() {
    let server = Server::start().await;
    let (lobby, games) = (server.room("Lobby").await, server.room("Games").await);
    let proxy = Proxy::start(server.host.addr()).await;
    let (connection, mut watch) = open(proxy.chat_url(), server.login("ann", "ann-pw").await);
    watch.until_state(State::Open).await;

    connection.command("main", join(lobby, 0));
    connection.command("main", join(games, 0));
    connection.command("room-games", join(games, 0));
    let joined = watch.frames_until({
        let mut joins = 0;
        move |_, frame| {
            joins += usize::from(frame.get("join").is_some());
            joins == 3 // main: lobby and games; room-games: games
        }
    });
    let joined = joined.await;
    assert_eq!(joined["room-games"].len(), 1, "{joined:?}");

    let mut bob = bob(&server, &[lobby, games]).await;
    say(&mut bob, lobby, "in the lobby").await;
    say(&mut bob, games, "in games").await;
    let mut done = 0;
    let frames = watch
        .frames_until(|_, frame| {
            done += usize::from(is_message(frame, "in games"));
            done == 2
        })
        .await;
    assert_eq!(texts(&frames["main"]), ["in the lobby", "in games"]);
    assert_eq!(texts(&frames["room-games"]), ["in games"], "not the lobby's");
    assert_eq!(proxy.accepted(), 1, "one socket for both windows");

    // What concerns no room in particular reaches every window.
    server.room("Chess").await;
    let changed = watch.frames_until(|_, frame| frame["rooms"] == "changed").await;
    assert!(changed.contains_key("everyone"), "{changed:?}");

    // A notification comes once, and not for a room a focused window shows.
    connection.view("main", View { room: Some(lobby), focused: true });
    let notice = |room, id, message: &str| Notice { room, id, username: "bob".into(), message: message.into() };
    connection.notify(notice(lobby, 1, "in the lobby"));
    connection.notify(notice(games, 1, "in games"));
    connection.notify(notice(games, 1, "in games"));
    let seen = watch.quiet_for(Duration::from_millis(500)).await;
    let notified: Vec<_> = seen.iter().filter(|s| matches!(s, Seen::Notified(..))).collect();
    assert!(
        matches!(notified.as_slice(), [Seen::Notified(title, body)] if title == "bob in Games" && body == "in games"),
        "{notified:?}"
    );
    connection.close().await;
}

#[tokio::test]
async fn after_a_lost_connection_rooms_are_rejoined_and_nothing_is_lost_or_repeated() {
    let server = Server::start().await;
    let lobby = server.room("Lobby").await;
    let proxy = Proxy::start(server.host.addr()).await;
    let (connection, mut watch) = open(proxy.chat_url(), server.login("ann", "ann-pw").await);
    connection.command("main", join(lobby, 0));
    let mut bob = bob(&server, &[lobby]).await;
    say(&mut bob, lobby, "before").await;
    watch.frames_until(|_, frame| is_message(frame, "before")).await;

    proxy.go_down();
    watch.until_state(State::Reconnecting).await;
    say(&mut bob, lobby, "while away 1").await;
    say(&mut bob, lobby, "while away 2").await;
    // Written while the connection is down: kept, and sent once it is back.
    let send = json!({ "command": "send", "room": lobby, "message": "mine, offline", "nonce": "offline-1" });
    connection.command("main", send.to_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.up();

    watch.until_state(State::Open).await;
    let mut got = (false, false);
    let frames = watch
        .frames_until(|_, frame| {
            got.0 |= frame["ack"] == "offline-1";
            got.1 |= is_message(frame, "mine, offline");
            got == (true, true)
        })
        .await;
    say(&mut bob, lobby, "after").await;
    let after = watch.frames_until(|_, frame| is_message(frame, "after")).await;
    let mut all = texts(&frames["main"]);
    all.extend(texts(&after["main"]));
    assert_eq!(all, ["while away 1", "while away 2", "mine, offline", "after"], "each once, in order");
    assert_eq!(server.stored(lobby).await, ["before", "while away 1", "while away 2", "mine, offline", "after"]);
    assert_eq!(proxy.accepted(), 2);
    connection.close().await;
}

#[tokio::test]
async fn a_session_ended_on_the_server_closes_the_socket_for_good() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.host.addr()).await;
    let token = server.login("ann", "ann-pw").await;
    let (connection, mut watch) = open(proxy.chat_url(), token.clone());
    watch.until_state(State::Open).await;
    let (status, _) = server.call("POST", "/api/logout", &token, Some(json!({}))).await;
    assert_eq!(status, 204);
    let why = watch.until_state(State::Closed).await;
    assert!(why.unwrap().contains("session has ended"));
    watch.quiet_for(Duration::from_secs(2)).await;
    assert_eq!(proxy.accepted(), 1, "no reconnecting once the session is over");
    connection.close().await;

    // A token the server no longer knows does not connect either, and says so.
    let (connection, mut watch) = open(proxy.chat_url(), token);
    assert!(watch.until_state(State::Closed).await.unwrap().contains("session has ended"));
    connection.close().await;
}

/// A keyring in memory: one map shared by every entry (as the real ones are).
#[derive(Default)]
struct MemoryKeyring(Mutex<HashMap<(String, String), String>>);

impl CredentialStore for MemoryKeyring {
    fn save(&self, login: &Login, token: &str) -> DesktopResult<()> {
        self.0.lock().unwrap().insert((login.server.clone(), login.username.clone()), token.to_owned());
        Ok(())
    }
    fn load(&self, login: &Login) -> DesktopResult<Option<String>> {
        Ok(self.0.lock().unwrap().get(&(login.server.clone(), login.username.clone())).cloned())
    }
    fn forget(&self, login: &Login) -> DesktopResult<()> {
        self.0.lock().unwrap().remove(&(login.server.clone(), login.username.clone()));
        Ok(())
    }
}

fn sessions(keyring: Arc<dyn CredentialStore>) -> (Sessions, Watch) {
    sessions_trusting(keyring, &[])
}

fn sessions_trusting(keyring: Arc<dyn CredentialStore>, roots: &[CertificateDer<'static>]) -> (Sessions, Watch) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Sessions::new(keyring, Arc::new(Recorder(tx)), tls::client_config(roots).unwrap()), Watch(rx))
}

#[tokio::test]
async fn remember_me_logs_in_again_on_the_next_start_and_logout_forgets_everywhere() {
    let server = Server::start().await;
    let keyring = Arc::new(MemoryKeyring::default());
    let mut settings = Settings::default();
    let address = server.host.addr().to_string(); // as a person types it, without http://

    let (first_start, mut watch) = sessions(keyring.clone());
    let info = first_start.login(&mut settings, &address, "ANN", "ann-pw", true).await.unwrap();
    assert_eq!(info.user["username"], "ann");
    assert_eq!(info.warning, None);
    assert_eq!(settings.recent_servers, [server.url()]);
    let login = Login { server: server.url(), username: "ann".into() };
    let token = keyring.load(&login).unwrap().expect("the token is in the keyring");
    watch.until_state(State::Open).await;
    drop(first_start);

    let (second_start, mut watch) = sessions(keyring.clone());
    let restored = second_start.restore(&mut settings).await.unwrap().expect("logged in from the keyring");
    assert_eq!(restored.user["username"], "ann");
    watch.until_state(State::Open).await;

    second_start.logout(&mut settings).await;
    assert_eq!(keyring.load(&login).unwrap(), None, "forgotten");
    assert_eq!(settings.remembered, None);
    assert_eq!(server.call("GET", "/api/me", &token, None).await.0, 401, "ended on the server too");
    let (third_start, _) = sessions(keyring);
    assert!(third_start.restore(&mut settings).await.unwrap().is_none(), "the login window is shown");
}

#[tokio::test]
async fn without_a_keyring_login_works_and_says_it_cannot_remember() {
    let server = Server::start().await;
    let mut settings = Settings::default();
    let (sessions, _watch) = sessions(Arc::new(NoKeyring));
    let info = sessions.login(&mut settings, &server.url(), "bob", "bob-pw", true).await.unwrap();
    assert_eq!(info.user["username"], "bob");
    assert!(info.warning.unwrap().contains("cannot be remembered"));
    assert_eq!(settings.remembered, None);

    let wrong = sessions.login(&mut settings, &server.url(), "bob", "nope", true).await.unwrap_err();
    assert_eq!(wrong.status(), 401);
    let nowhere = sessions.login(&mut settings, "127.0.0.1:9", "bob", "bob-pw", true).await.unwrap_err();
    assert!(nowhere.to_string().contains("cannot be reached"), "{nowhere}");
}

#[tokio::test]
async fn a_token_the_server_refuses_is_forgotten_at_start() {
    let server = Server::start().await;
    let keyring = Arc::new(MemoryKeyring::default());
    let mut settings = Settings::default();
    let (sessions, _watch) = sessions(keyring.clone());
    sessions.login(&mut settings, &server.url(), "bob", "bob-pw", true).await.unwrap();
    let login = Login { server: server.url(), username: "bob".into() };
    let token = keyring.load(&login).unwrap().unwrap();
    // Logged out elsewhere (another device, or an admin reset the password).
    server.call("POST", "/api/logout", &token, Some(json!({}))).await;

    let (next_start, _watch) = self::sessions(keyring.clone());
    assert!(next_start.restore(&mut settings).await.unwrap().is_none());
    assert_eq!(keyring.load(&login).unwrap(), None);
}

/// A TLS front for the server, as a company's reverse proxy would be: `https://localhost:PORT` with a
/// certificate of a CA of its own, which it returns.
async fn tls_front(upstream: SocketAddr) -> (u16, CertificateDer<'static>) {
    let identity = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = identity.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else { return };
                let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn an_https_server_is_reached_over_tls_and_one_with_an_untrusted_certificate_is_refused() {
    let server = Server::start().await;
    let lobby = server.room("Lobby").await;
    let (port, ca) = tls_front(server.host.addr()).await;
    let address = format!("https://localhost:{port}");
    let mut settings = Settings::default();

    let (trusting, mut watch) = sessions_trusting(Arc::new(NoKeyring), &[ca]);
    let info = trusting.login(&mut settings, &address, "bob", "bob-pw", false).await.unwrap();
    assert_eq!(info.server, address);
    watch.until_state(State::Open).await; // wss:// through the same TLS front
    trusting.with(|_, _, connection| connection.command("main", join(lobby, 0))).unwrap();
    let joined = watch.frames_until(|_, frame| frame.get("join").is_some()).await;
    assert_eq!(joined["main"][0]["title"], "Lobby");

    let (wary, _watch) = sessions(Arc::new(NoKeyring));
    let refused = wary.login(&mut settings, &address, "bob", "bob-pw", false).await.unwrap_err();
    assert!(refused.to_string().contains("certificate is not trusted"), "{refused}");
}
