//! Several server nodes as one: with `REDIS_URL`, each node sends every change it makes to its own
//! connections (a [`Change`]: a stored message, someone entering, a room closed to non-staff…) to one Redis
//! pub/sub channel, and applies the other nodes' changes to its own connections.
//!
//! Redis only relays. Messages are stored in the shared database before they are sent out, so a node that
//! misses some (Redis down, a change dropped on a jammed relay) catches up from there. Losing Redis never
//! stops a node serving its own users: it logs it, reconnects with backoff, resubscribes, and then checks
//! against the database what it may have missed meanwhile: messages, logouts, changes of rights and rooms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::error::Error;
use crate::hub::presence::ALIVE_EVERY;
use crate::hub::{Change, CloseReason, Hub};

/// Changes waiting to go out to Redis; beyond that they are dropped and the other nodes catch up from the
/// database (a node never waits for Redis).
const RELAY_QUEUE: usize = 16_384;
/// Changes sent to Redis in one round trip.
const RELAY_BATCH: usize = 256;
/// How long a connection attempt or a command may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the subscription is pinged, to notice a Redis that went away without closing the connection.
const PING_EVERY: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Where the nodes of one deployment meet.
pub struct RedisOptions {
    /// `redis://[:password@]host:port[/db]`; it may hold a password, so it is never logged.
    pub url: String,
    /// Starts the channel's name, so that several deployments (or tests) can share one Redis.
    pub prefix: String,
}

/// This node's place among the others: alone, or linked to them through Redis.
#[derive(Clone, Default)]
pub struct Cluster {
    link: Option<Arc<AtomicBool>>,
}

impl Cluster {
    /// Whether this node relays through Redis at all.
    pub fn is_linked(&self) -> bool {
        self.link.is_some()
    }

    /// Whether this node is alone or currently connected to Redis (a node that lost Redis should not
    /// get new users: they would not hear the other nodes').
    pub fn is_whole(&self) -> bool {
        self.link.as_ref().is_none_or(|connected| connected.load(Ordering::Relaxed))
    }
}

/// The channel every node of a deployment publishes to and subscribes to.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:changes")
}

/// A change as it crosses Redis: which node made it, so that a node skips its own.
#[derive(Serialize, Deserialize)]
pub struct Envelope {
    pub node: String,
    pub change: Change,
}

/// Links this node to the others through Redis: from now on the hub's changes go out and the other nodes'
/// come in, until `shutdown`. Fails only on a URL that cannot be used; an unreachable Redis is retried.
pub fn link(
    hub: Arc<Hub>,
    db: Db,
    options: RedisOptions,
    shutdown: CancellationToken,
) -> Result<(Cluster, impl std::future::Future<Output = ()>), Error> {
    let client = redis::Client::open(options.url.as_str()).map_err(|e| Error::Config(format!("REDIS_URL: {e}")))?;
    if options.prefix.is_empty() || options.prefix.chars().any(char::is_whitespace) {
        return Err(Error::Config("the Redis channel prefix must be a non-empty word".into()));
    }
    let (relay, outbox) = mpsc::channel(RELAY_QUEUE);
    hub.relay_to(relay);
    let connected = Arc::new(AtomicBool::new(false));
    let node = format!("{:016x}", rand::random::<u64>());
    let link =
        Link { client, channel: channel(&options.prefix), node, hub: hub.clone(), db, connected: connected.clone() };
    let run = async move {
        tokio::join!(link.run(outbox, shutdown.clone()), expire_silent_nodes(hub, shutdown));
    };
    Ok((Cluster { link: Some(connected) }, run))
}

/// Forgets, every second, the nodes that went silent (see [`Hub::expire_nodes`]); also while Redis is
/// lost, when every other node goes silent.
async fn expire_silent_nodes(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => hub.expire_nodes(),
        }
    }
}

struct Link {
    client: redis::Client,
    channel: String,
    node: String,
    hub: Arc<Hub>,
    db: Db,
    connected: Arc<AtomicBool>,
}

/// The two connections a linked node holds: one subscribed, one to publish on.
struct Connections {
    publisher: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

impl Link {
    async fn run(self, mut outbox: mpsc::Receiver<Change>, shutdown: CancellationToken) {
        let mut retry = FIRST_RETRY;
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                attempt = timeout(REDIS_TIMEOUT, self.connect()) => attempt,
            };
            match attempt {
                Ok(Ok(connections)) => {
                    tracing::info!(node = %self.node, "connected to Redis: relaying to and from the other nodes");
                    self.connected.store(true, Ordering::Relaxed);
                    (retry, failures) = (FIRST_RETRY, 0);
                    // Whatever happened while this node was not listening (at start: nothing) is in the
                    // database; read it without holding up what comes in now.
                    tokio::spawn(check_again(self.db.clone(), self.hub.clone()));
                    // The others may have forgotten this node meanwhile (at start: never knew it).
                    self.hub.introduce();
                    let lost = self.relay(connections, &mut outbox, &shutdown).await;
                    self.connected.store(false, Ordering::Relaxed);
                    match lost {
                        None => return,
                        Some(cause) => tracing::warn!(
                            %cause,
                            "lost Redis: serving this node's users alone until it is back; reconnecting"
                        ),
                    }
                }
                Ok(Err(cause)) => self.failed(&mut failures, &cause.to_string()),
                Err(_) => self.failed(&mut failures, "timed out"),
            }
            // Meanwhile what this node's users do is not relayed: the other nodes will read it from the
            // database when this node is back.
            let until = Instant::now() + retry;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(until) => break,
                    change = outbox.recv() => if change.is_none() { return },
                }
            }
            retry = (retry * 2).min(LAST_RETRY);
        }
    }

    fn failed(&self, failures: &mut u32, cause: &str) {
        *failures += 1;
        // The first failure and then one in twenty (about one a minute and a half): loud enough, not a flood.
        if *failures % 20 == 1 {
            tracing::warn!(cause, attempts = *failures, "cannot reach Redis; retrying");
        } else {
            tracing::debug!(cause, attempts = *failures, "cannot reach Redis; retrying");
        }
    }

    async fn connect(&self) -> redis::RedisResult<Connections> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let publisher = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
        sink.subscribe(&self.channel).await?;
        Ok(Connections { publisher, sink, stream })
    }

    /// Relays until Redis is lost (returns why) or the server shuts down (returns `None`).
    async fn relay(
        &self,
        mut connections: Connections,
        outbox: &mut mpsc::Receiver<Change>,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut alive = interval(ALIVE_EVERY);
        alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(RELAY_BATCH);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                message = connections.stream.next() => match message {
                    Some(message) => self.receive(message.get_payload_bytes()),
                    None => return Some("the subscription ended".into()),
                },
                count = outbox.recv_many(&mut batch, RELAY_BATCH) => {
                    if count == 0 {
                        return None;
                    }
                    let mut pipe = redis::pipe();
                    for change in batch.drain(..) {
                        let envelope = Envelope { node: self.node.clone(), change };
                        // Serializing plain data cannot fail.
                        let payload = serde_json::to_vec(&envelope).unwrap_or_default();
                        pipe.cmd("PUBLISH").arg(&self.channel).arg(payload).ignore();
                    }
                    if let Err(cause) = pipe.query_async::<()>(&mut connections.publisher).await {
                        return Some(cause.to_string());
                    }
                }
                _ = alive.tick() => {
                    let payload = serde_json::to_vec(&Envelope { node: self.node.clone(), change: Change::Alive }).unwrap_or_default();
                    let mut publish = redis::cmd("PUBLISH");
                    publish.arg(&self.channel).arg(payload);
                    if let Err(cause) = publish.query_async::<()>(&mut connections.publisher).await {
                        return Some(cause.to_string());
                    }
                }
                _ = ping.tick() => match timeout(REDIS_TIMEOUT, connections.sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(cause)) => return Some(cause.to_string()),
                    Err(_) => return Some("no answer to a ping".into()),
                },
            }
        }
    }

    /// Applies another node's change; a payload that is not one is logged and skipped.
    fn receive(&self, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(envelope) if envelope.node == self.node => {}
            Ok(envelope) => self.hub.apply_from(&envelope.node, envelope.change),
            Err(cause) => {
                tracing::warn!(%cause, channel = %self.channel, "skipped a message on the Redis channel that is not a change")
            }
        }
    }
}

/// Brings this node's connections up to date with the database after it may have missed changes: each room
/// catches up its messages, and every session, user and room its connections depend on is read again.
async fn check_again(db: Db, hub: Arc<Hub>) {
    hub.catch_up_everything();
    let subjects = hub.subjects();
    let result: Result<(), Error> = async {
        for session in subjects.sessions {
            if db.session_user(&session).await?.is_none() {
                hub.apply(Change::CloseSession { session: session.to_string() });
            }
        }
        for user in subjects.users {
            hub.apply(match db.user(user).await? {
                Some(u) => Change::UserChanged { user, is_staff: u.is_staff, is_active: u.is_active },
                None => Change::CloseUser { user, reason: CloseReason::AccountChanged },
            });
        }
        for room in subjects.rooms {
            hub.apply(match db.room(room).await? {
                Some(r) => Change::RoomChanged { room, staff_only: r.staff_only },
                None => Change::RoomDeleted { room },
            });
        }
        Ok(())
    }
    .await;
    if let Err(cause) = result {
        tracing::warn!(%cause, "could not check this node's connections against the database after reconnecting");
    }
}
