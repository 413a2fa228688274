//! Test helpers: a fresh database per test (a SQLite file in a temp dir, or a Postgres database with a
//! random name that is dropped afterwards), the real server on port 0, and real HTTP and WebSocket
//! clients. Every network wait is bounded, so no test can hang.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use multichat_server::accounts::{self, Rights};
use multichat_server::db::{Room, User};
use multichat_server::{AppState, Config, Db};
use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long any single network wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The Postgres server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("MULTICHAT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn NAME(backend: Backend)` as two tests, `sqlite::NAME` and `postgres::NAME`.
#[allow(unused_macros)] // not every test crate runs on both backends
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A database of its own for one test; a Postgres one is dropped when this is.
pub struct TestDb {
    pub url: String,
    pub data_dir: tempfile::TempDir,
    postgres_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let data_dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = multichat_server::db::sqlite_url(&data_dir.path().join(multichat_server::db::SQLITE_FILE));
                TestDb { url, data_dir, postgres_name: None }
            }
            Backend::Postgres => {
                let name = format!("multichat_test_{:016x}", rand_u64());
                let mut admin = PgConnection::connect(&postgres_admin_url())
                    .await
                    .expect("Postgres at 127.0.0.1:5432 (.ci/run starts it)");
                admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
                let _ = admin.close().await;
                let base = postgres_admin_url();
                let url = format!("{}/{name}", base.rsplit_once('/').expect("a database in the URL").0);
                TestDb { url, data_dir, postgres_name: Some(name) }
            }
        }
    }

    /// Runs `sql` directly against this database (to change what another server node would change).
    pub async fn execute(&self, sql: &str) {
        let pool = sqlx::AnyPool::connect(&self.url).await.expect("connect");
        pool.execute(sql).await.expect("execute");
        pool.close().await;
    }

    /// Holds the lock that storing a message needs, until the returned connection is dropped or committed:
    /// a database that is slow to write, as under another writer's long transaction.
    pub async fn hold_write_lock(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.expect("connect");
        let lock = if self.postgres_name.is_some() {
            // SHARE mode blocks inserts, not reads.
            "BEGIN; LOCK TABLE messages IN SHARE MODE"
        } else {
            "BEGIN IMMEDIATE"
        };
        conn.execute(lock).await.expect("take the write lock");
        conn
    }

    /// A new, migrated connection pool to this database.
    pub async fn open(&self) -> Db {
        let db = Db::connect(&self.url).await.expect("connect");
        db.migrate().await.expect("migrate");
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        // Drop runs outside async; a short-lived runtime on its own thread drops the database.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&postgres_admin_url()).await {
                    let _ = admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// The real `multichat-server` binary, pointed at this test's database.
pub fn binary(db: &TestDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_multichat-server"));
    // As on a developer machine: backtraces on, so a user mistake must still print only a message.
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("RUST_BACKTRACE", "1");
    command.arg("--data-dir").arg(db.data_dir.path());
    if db.url.starts_with("postgres") {
        command.env("DATABASE_URL", &db.url);
    }
    command
}

/// Every environment variable the server reads: those `--help` names, and the log setup's two.
pub fn server_variables() -> Vec<String> {
    let help = Command::new(env!("CARGO_BIN_EXE_multichat-server")).arg("--help").output().expect("--help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut variables: Vec<String> =
        help.split("[env: ").skip(1).map(|rest| rest.split(['=', ']']).next().unwrap_or_default().to_owned()).collect();
    assert!(variables.len() > 15, "{variables:?}");
    variables.extend(["RUST_LOG".to_owned(), "LOG_FORMAT".to_owned()]); // read by the log setup, not by clap
    variables
}

/// Starts the real binary's `serve` on port 0 (with `extra` options) and returns the child process and
/// the address it logged.
pub fn serve_binary(db: &TestDb, extra: &[&str]) -> (Child, String) {
    let mut child = binary(db)
        .args(["--bind", "127.0.0.1:0"])
        .args(extra)
        .arg("serve")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve logs before exiting").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop)); // keep draining the log
    (child, addr)
}

/// The machine's shared Redis (never restarted by a test: fault tests start their own, see [`RedisServer`]).
pub fn redis_url() -> String {
    std::env::var("MULTICHAT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A channel prefix of its own for one test, so that tests sharing a Redis do not hear each other.
pub fn unique_prefix() -> String {
    format!("multichat-test-{:016x}", rand_u64())
}

/// A `redis-server` of a test's own, on a free loopback port, to kill and start again; killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port) and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (.ci/run installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "redis-server listens in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings that make timing-based behaviour quick to observe in tests.
pub fn test_config() -> Config {
    Config { ping_interval: Duration::from_secs(30), hash_concurrency: 2, ..Config::default() }
}

/// The real server, serving on an ephemeral loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub db: Db,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(test_db: &TestDb) -> TestServer {
        TestServer::start_with(test_db, test_config()).await
    }

    pub async fn start_with(test_db: &TestDb, config: Config) -> TestServer {
        let db = test_db.open().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = AppState::new(db.clone(), config, CancellationToken::new()).expect("state");
        let task = tokio::spawn(multichat_server::serve(listener, state.clone()));
        TestServer { addr, state, db, task }
    }

    /// A node of a deployment: this test's database, linked to the other nodes through Redis at `redis`
    /// on channel prefix `prefix`.
    pub async fn start_linked(test_db: &TestDb, config: Config, redis: &str, prefix: &str) -> TestServer {
        let db = test_db.open().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut state = AppState::new(db.clone(), config, CancellationToken::new()).expect("state");
        let options = multichat_server::cluster::RedisOptions { url: redis.into(), prefix: prefix.into() };
        state.link(options).expect("link");
        let task = tokio::spawn(multichat_server::serve(listener, state.clone()));
        TestServer { addr, state, db, task }
    }

    /// Waits (a few seconds at most) until `GET /readyz` answers `status`.
    pub async fn until_ready_is(&self, status: u16) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let response = http_client().get(self.url("/readyz")).send().await.expect("GET /readyz");
            if response.status() == status {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "/readyz never answered {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn stop(self) {
        self.state.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("server stops in time").expect("task").expect("serve");
        self.db.close().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn user(&self, name: &str, password: &str, rights: Rights) -> User {
        accounts::create(&self.db, &self.state.passwords, name, password, rights).await.expect("create user")
    }

    pub async fn room(&self, title: &str, staff_only: bool) -> Room {
        self.db.create_room(title, staff_only, false).await.expect("create room")
    }

    /// Every message stored for `room`, oldest first, read straight from the database.
    pub async fn stored(&self, room: i64) -> Vec<multichat_server::db::Message> {
        let page = multichat_server::db::Page { limit: 100_000, ..Default::default() };
        self.db.history(room, page).await.expect("history").messages
    }

    /// Creates an account and logs it in over HTTP.
    pub async fn login_new(&self, name: &str, rights: Rights) -> Session {
        let password = format!("{name}-password");
        self.user(name, &password, rights).await;
        self.login(name, &password).await
    }

    pub async fn login(&self, name: &str, password: &str) -> Session {
        let http = http_client();
        let response = http
            .post(self.url("/api/login"))
            .json(&json!({ "username": name, "password": password }))
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), 200, "login of {name}");
        let body: Value = response.json().await.expect("login body");
        Session { token: body["token"].as_str().expect("token").to_owned(), addr: self.addr, http }
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).timeout(WAIT).build().expect("http client")
}

pub fn staff() -> Rights {
    Rights { is_staff: true, is_admin: false }
}

pub fn admin() -> Rights {
    Rights { is_staff: true, is_admin: true }
}

pub fn plain() -> Rights {
    Rights::default()
}

/// A logged-in user: their token, and an HTTP client holding their session cookie.
pub struct Session {
    pub token: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

impl Session {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Opens the chat socket the way a native client does: the token in `Authorization`, no Origin.
    pub async fn connect(&self) -> Ws {
        let mut request = format!("ws://{}/chat/stream/", self.addr).into_client_request().expect("request");
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(&format!("Bearer {}", self.token)).expect("header"));
        Ws::open(request).await.expect("socket opens")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(&self.token).send().await.expect("GET")
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(&self.token).json(&body).send().await.expect("POST")
    }

    pub async fn patch(&self, path: &str, body: Value) -> reqwest::Response {
        self.http.patch(self.url(path)).bearer_auth(&self.token).json(&body).send().await.expect("PATCH")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http.delete(self.url(path)).bearer_auth(&self.token).send().await.expect("DELETE")
    }
}

/// A client's WebSocket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A real WebSocket client.
pub struct Ws {
    stream: Socket,
}

impl Ws {
    pub async fn open(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let (stream, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("handshake in time")?;
        Ok(Ws { stream })
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_raw(Message::text(text)).await;
    }

    /// Sends `frames` with one write (fed, then flushed once), so that they reach the server together.
    pub async fn send_together(&mut self, frames: &[Value]) {
        let write = async {
            for frame in frames {
                self.stream.feed(Message::text(frame.to_string())).await?;
            }
            self.stream.flush().await
        };
        tokio::time::timeout(WAIT, write).await.expect("send in time").expect("send");
    }

    /// Sends without failing the test if the server has closed the connection meanwhile.
    pub async fn try_send_text(&mut self, text: &str) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        tokio::time::timeout(WAIT, self.stream.send(Message::text(text))).await.expect("send in time")
    }

    pub async fn send_raw(&mut self, message: Message) {
        tokio::time::timeout(WAIT, self.stream.send(message)).await.expect("send in time").expect("send");
    }

    /// The next JSON frame; fails the test if none comes in time or the socket closes.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("frame");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON frame"),
                Message::Close(frame) => panic!("socket closed unexpectedly: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Asserts that nothing arrives for `quiet` (proof of absence within a window the server has long
    /// since had to deliver in; the positive cases use the same server path and arrive in milliseconds).
    /// Reading all the while, so that pings are answered as a live client would.
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected no frame, got {other:?}"),
            }
        }
    }

    /// Sends a WebSocket ping and says whether its pong came back within `within` (any other frame first
    /// fails the test).
    pub async fn pings_back_within(&mut self, within: Duration) -> bool {
        self.send_raw(Message::Ping(b"still there?".to_vec().into())).await;
        match tokio::time::timeout(within, self.stream.next()).await {
            Err(_) => false,
            Ok(Some(Ok(Message::Pong(payload)))) => payload.as_ref() == b"still there?",
            Ok(other) => panic!("expected a pong, got {other:?}"),
        }
    }

    /// The next chat message (`msg_type` 0), skipping presence notices.
    pub async fn recv_message(&mut self) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["msg_type"] == 0 || frame.get("error").is_some() {
                return frame;
            }
        }
    }

    /// Sends `text` to `room` with `nonce` and returns the `ack` (or the error), skipping other frames.
    pub async fn send_acked(&mut self, room: i64, text: &str, nonce: &str) -> Value {
        self.send(json!({ "command": "send", "room": room, "message": text, "nonce": nonce })).await;
        loop {
            let frame = self.recv().await;
            if frame["ack"] == nonce || frame["nonce"] == nonce {
                return frame;
            }
        }
    }

    /// Joins `room` and returns the reply.
    pub async fn join(&mut self, room: i64) -> Value {
        self.send(json!({ "command": "join", "room": room })).await;
        self.recv().await
    }

    /// Splits the socket, to send on one half while another task reads the other.
    pub fn split(
        self,
    ) -> (futures_util::stream::SplitSink<Socket, Message>, futures_util::stream::SplitStream<Socket>) {
        self.stream.split()
    }

    /// Waits for the server to close the socket; returns its close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.stream.next()).await.expect("close in time") {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}
