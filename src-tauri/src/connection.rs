//! The app's ONE chat socket: a task that holds it for every window, reconnects with backoff, and after each
//! reconnect rejoins and resumes the windows' rooms and resends their unacknowledged messages (the
//! [`Router`] knows what). Windows reach it through [`Connection`]; it reaches them through [`Windows`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::routing::{Router, To, View};

/// How the socket is doing, as the client's transport names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Connecting,
    Open,
    Reconnecting,
    /// For good: the session is over (or the app logged out).
    Closed,
}

/// Where frames, state changes and notifications go: the app's windows (Tauri events), or a test.
pub trait Windows: Send + Sync + 'static {
    /// One server frame for one window, as the server sent it.
    fn deliver(&self, window: &str, frame: &str);
    /// One server frame for every window.
    fn deliver_to_all(&self, frame: &str);
    /// The socket's state, for every window.
    fn state(&self, state: State, why: Option<&str>);
    /// A desktop notification.
    fn notify(&self, title: &str, body: &str);
}

/// A message a window thinks deserves a notification (it is new, and not the person's own).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Notice {
    pub room: i64,
    pub id: i64,
    pub username: String,
    pub message: String,
}

enum Input {
    Command { window: String, text: String },
    View { window: String, view: View },
    Notify(Notice),
    WindowClosed(String),
}

/// The handle windows use; dropping it (or [`Connection::close`]) closes the socket.
pub struct Connection {
    inputs: mpsc::UnboundedSender<Input>,
    task: JoinHandle<()>,
}

/// Close codes after which reconnecting cannot help (docs/protocol.md).
const SESSION_OVER: [u16; 2] = [4001, 4003];
/// How long a connect may take, and how long the server may stay silent before the socket counts as dead
/// (the client pings at a third of it, so a live server always answers in time).
const TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Connection {
    /// Opens the socket at `url` (`ws://host:port/chat/stream/`, or `wss://`) with a session token, on the
    /// current Tokio runtime.
    pub fn open(url: String, token: String, tls: Arc<ClientConfig>, windows: Arc<dyn Windows>) -> Connection {
        let (inputs, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(Task { url, token, tls, windows, router: Router::new(), inputs: rx }.run());
        Connection { inputs, task }
    }

    /// A window's command, in the protocol's JSON.
    pub fn command(&self, window: &str, text: String) {
        let _ = self.inputs.send(Input::Command { window: window.to_owned(), text });
    }

    /// What a window shows now.
    pub fn view(&self, window: &str, view: View) {
        let _ = self.inputs.send(Input::View { window: window.to_owned(), view });
    }

    /// A window asks for a notification; it is raised once, and only if no focused window shows the room.
    pub fn notify(&self, notice: Notice) {
        let _ = self.inputs.send(Input::Notify(notice));
    }

    /// A window closed: its rooms are left unless another window is in them.
    pub fn window_closed(&self, window: &str) {
        let _ = self.inputs.send(Input::WindowClosed(window.to_owned()));
    }

    /// Closes the socket (1000) and waits for the task to end.
    pub async fn close(self) {
        let Connection { inputs, task } = self;
        drop(inputs);
        let _ = task.await;
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connected socket stopped.
enum End {
    /// Lost or refused: try again.
    Lost,
    /// The session is over.
    Over(String),
    /// The app closed the connection.
    Stopped,
}

struct Task {
    url: String,
    token: String,
    tls: Arc<ClientConfig>,
    windows: Arc<dyn Windows>,
    router: Router,
    inputs: mpsc::UnboundedReceiver<Input>,
}

impl Task {
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        // Returns from inside on a session that ended; breaks out when the app closed the connection.
        loop {
            self.windows.state(if attempt == 0 { State::Connecting } else { State::Reconnecting }, None);
            let end = match self.connect().await {
                Ok(socket) => {
                    attempt = 0;
                    self.windows.state(State::Open, None);
                    self.serve(socket).await
                }
                Err(end) => end,
            };
            match end {
                End::Lost => {}
                End::Over(why) => {
                    self.windows.state(State::Closed, Some(&why));
                    return;
                }
                End::Stopped => break,
            }
            attempt += 1;
            self.windows.state(State::Reconnecting, None);
            if let End::Stopped = self.wait(backoff(attempt)).await {
                break;
            }
        }
        self.windows.state(State::Closed, Some("Logged out."));
    }

    async fn connect(&mut self) -> Result<Socket, End> {
        let mut request = self.url.as_str().into_client_request().map_err(|_| End::Over("bad address".into()))?;
        let bearer =
            HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| End::Over("bad token".into()))?;
        request.headers_mut().insert("authorization", bearer);
        let tls = Some(Connector::Rustls(self.tls.clone()));
        let connect = tokio_tungstenite::connect_async_tls_with_config(request, None, false, tls);
        match tokio::time::timeout(TIMEOUT, connect).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) if response.status() == StatusCode::UNAUTHORIZED => {
                Err(End::Over("Your session has ended. Log in again.".into()))
            }
            Ok(Err(err)) => {
                tracing::debug!(cause = %err, "chat socket: connect failed");
                Err(End::Lost)
            }
            Err(_) => Err(End::Lost),
        }
    }

    /// Runs a connected socket: resumes, then relays until it ends.
    async fn serve(&mut self, mut socket: Socket) -> End {
        for command in self.router.resume() {
            if socket.send(Message::text(command)).await.is_err() {
                return End::Lost;
            }
        }
        let mut ping = tokio::time::interval(TIMEOUT / 3);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                frame = socket.next() => {
                    heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => self.relay(text.as_str()),
                        Some(Ok(Message::Close(close))) => {
                            let code = close.as_ref().map(|c| u16::from(c.code));
                            if code.is_some_and(|c| SESSION_OVER.contains(&c)) {
                                return End::Over("Your session has ended. Log in again.".into());
                            }
                            return End::Lost;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return End::Lost,
                    }
                }
                input = self.inputs.recv() => {
                    let Some(input) = input else {
                        let _ = socket.close(Some(tungstenite::protocol::CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        })).await;
                        return End::Stopped;
                    };
                    for command in self.take(input) {
                        if socket.send(Message::text(command)).await.is_err() {
                            return End::Lost;
                        }
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() > TIMEOUT {
                        tracing::debug!("chat socket: the server went silent");
                        return End::Lost;
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return End::Lost;
                    }
                }
            }
        }
    }

    /// Waits out a backoff, still taking windows' inputs (what they send then is resent on resume).
    async fn wait(&mut self, delay: Duration) -> End {
        let until = tokio::time::sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return End::Lost,
                input = self.inputs.recv() => match input {
                    Some(input) => { self.take(input); }
                    None => return End::Stopped,
                },
            }
        }
    }

    /// Takes an input; returns what is for the server.
    fn take(&mut self, input: Input) -> Vec<String> {
        match input {
            Input::Command { window, text } => {
                let routed = self.router.command(&window, &text);
                for answer in &routed.local {
                    self.windows.deliver(&window, answer);
                }
                routed.to_server.into_iter().collect()
            }
            Input::View { window, view } => {
                self.router.view(&window, view);
                vec![]
            }
            Input::Notify(notice) => {
                if self.router.should_notify(notice.room, notice.id) {
                    let room = self.router.title(notice.room).unwrap_or("MultiChat");
                    self.windows.notify(&format!("{} in {room}", notice.username), &notice.message);
                }
                vec![]
            }
            Input::WindowClosed(window) => self.router.window_closed(&window),
        }
    }

    fn relay(&mut self, text: &str) {
        match self.router.frame(text) {
            To::Windows(windows) => windows.iter().for_each(|window| self.windows.deliver(window, text)),
            To::Everyone => self.windows.deliver_to_all(text),
        }
    }
}

/// 0.5 s doubling up to 5 s, jittered to 50–100 % so that many clients do not come back in step.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.saturating_sub(1).min(4)).min(BACKOFF_MAX);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    base.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_five_seconds_with_jitter() {
        for attempt in 1..10 {
            let delay = backoff(attempt);
            let base = Duration::from_millis(500 * (1 << (attempt - 1).min(4))).min(BACKOFF_MAX);
            assert!(delay >= base / 2 && delay <= base, "attempt {attempt}: {delay:?}");
        }
    }
}
