//! Server settings: limits and policies, each with a default a small team can run with unchanged.

use std::time::Duration;

/// Everything tunable about a running server (the CLI maps flags and env vars onto it).
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest client frame answered normally; a larger one gets `FRAME_TOO_LARGE`.
    pub max_frame_bytes: usize,
    /// The longest message, in characters; a longer one gets `MESSAGE_TOO_LONG`.
    pub max_message_chars: usize,
    /// Frames queued for one connection before it counts as a slow reader and is disconnected. The default
    /// holds four of the writer's largest batches (`writer::MAX_BATCH`), which are queued all at once: with room
    /// for only one, a burst of sends from many members cut off readers that were keeping up.
    pub outbound_queue: usize,
    /// Messages one connection may send per second (bursts up to the same number).
    pub messages_per_second: u32,
    /// How often an idle socket is pinged; one that leaves a ping unanswered for an interval is closed.
    pub ping_interval: Duration,
    /// How long one write to a socket may take before the peer counts as gone.
    pub write_timeout: Duration,
    /// Whether rooms hear "X entered" / "X left" (`msg_type` 4 and 5).
    pub presence_notices: bool,
    /// Origins allowed to open the WebSocket besides the server's own and the desktop app's.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for the login throttle).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// The longest wait the login throttle imposes.
    pub login_backoff_cap: Duration,
    /// Mark the session cookie `Secure` (serve over HTTPS, or behind a proxy that does).
    pub secure_cookies: bool,
    /// Password hashes computed at once (each takes ~19 MiB).
    pub hash_concurrency: usize,
    /// The most messages replayed to a client resuming a room; beyond that it is told of the gap.
    pub replay_max: i64,
    /// The largest `history` page.
    pub history_page_max: i64,
    /// Messages older than this are deleted (none by default: history is kept).
    pub retention_max_age: Option<Duration>,
    /// Only this many of each room's newest messages are kept (all by default).
    pub retention_per_room: Option<u64>,
    /// How often retention runs.
    pub retention_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_frame_bytes: 32 * 1024,
            max_message_chars: 4000,
            outbound_queue: 4 * crate::writer::MAX_BATCH,
            messages_per_second: 10,
            ping_interval: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            presence_notices: true,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            login_backoff_cap: Duration::from_secs(300),
            secure_cookies: false,
            hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            replay_max: 500,
            history_page_max: 200,
            retention_max_age: None,
            retention_per_room: None,
            retention_interval: Duration::from_secs(600),
        }
    }
}

impl Config {
    /// Frames over this size end the connection (close 1009) instead of getting an error reply: the
    /// transport refuses to buffer them at all.
    pub fn transport_limit(&self) -> usize {
        (self.max_frame_bytes * 4).max(1 << 20)
    }
}
