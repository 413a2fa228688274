//! The message writer: one task stores what users send, in batches, and publishes each stored message.
//!
//! Connections hand their messages over and get the outcome later (see [`Outcome`]), so that a sender's
//! next messages are read while its earlier ones are being stored. Under light load a batch is a single
//! message; under heavy load everything that queued while the previous batch was being committed goes
//! into the next transaction, so the cost of a commit is shared. Publishing from this one task, in
//! commit order, is what delivers each room's messages in id order.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, NewMessage, Stored};
use crate::error::Error;
use crate::hub::Hub;
use crate::protocol::{Event, MSG_MESSAGE};

/// The most messages stored in one transaction. Each is queued for every member of its room as the batch is
/// published, with no chance for them to write in between: a connection's queue (`Config::outbound_queue`)
/// must hold several batches, or a burst disconnects members that read perfectly well.
pub const MAX_BATCH: usize = 256;
/// Messages waiting for the writer before senders wait in turn (backpressure).
const QUEUE: usize = 4096;

struct Pending {
    message: NewMessage,
    outcome: oneshot::Sender<Result<Stored, Error>>,
}

/// A handle to the writer task; cheap to clone. The task ends when the last handle is dropped.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
    stats: Arc<Stats>,
}

/// What the writer has done since it started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Messages in them (stored, or refused one by one).
    pub messages: AtomicU64,
}

impl Writer {
    /// Starts the writer: on SQLite on a thread of its own, otherwise on the current Tokio runtime.
    ///
    /// Publishing a message wakes a task per member, and on the shared runtime the writer's next wake-up (the
    /// database's answer) queued behind all of them: in the 1 × 1,000 benchmark a batch took 4 ms to store
    /// (p50), nearly all of it waiting for a turn, and on its own thread 0.2 ms. There it also runs SQLite
    /// itself, without a hand-off per statement (see `db/sqlite_direct.rs`). Only on SQLite: a Postgres
    /// connection opened there would belong to this thread's runtime, and fail once it is gone.
    pub fn spawn(db: Db, hub: Arc<Hub>) -> Writer {
        let (queue, pending) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let own_thread = db.is_sqlite();
        let task = run(db, hub, pending, stats.clone());
        if own_thread {
            spawn_on_own_thread(task);
        } else {
            tokio::spawn(task);
        }
        Writer { queue, stats }
    }

    /// The counters, to read from elsewhere (`/metrics`).
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Counters of committed batches and messages (how well writes are being batched).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Hands `message` over to be stored and published to its room, after every message handed over
    /// before it; waits only while the writer's queue is full. The [`Outcome`] resolves once it is committed.
    pub async fn submit(&self, message: NewMessage) -> Result<Outcome, Error> {
        let (outcome, result) = oneshot::channel();
        self.queue.send(Pending { message, outcome }).await.map_err(|_| Error::Unavailable)?;
        Ok(Outcome(result))
    }
}

/// A message handed to the writer: resolves with what became of it.
#[derive(Debug)]
pub struct Outcome(oneshot::Receiver<Result<Stored, Error>>);

impl Future for Outcome {
    type Output = Result<Stored, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|result| result.unwrap_or(Err(Error::Unavailable)))
    }
}

/// Runs `task` to its end on a new thread with a single-threaded runtime; on the current runtime if the
/// system will not give a thread (the task goes to the thread over a channel, so that it is still here then).
fn spawn_on_own_thread(task: impl Future<Output = ()> + Send + 'static) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::warn!(%err, "no runtime for the message writer; it shares the server's");
            tokio::spawn(task);
            return;
        }
    };
    let (start, task_back) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new().name("multichat-writer".into()).spawn(move || {
        if let Ok(task) = task_back.recv() {
            runtime.block_on(task);
        }
    });
    match thread {
        Ok(_) => {
            let _ = start.send(task);
        }
        Err(err) => {
            tracing::warn!(%err, "no thread for the message writer; it shares the server's runtime");
            tokio::spawn(task);
        }
    }
}

async fn run(db: Db, hub: Arc<Hub>, mut pending: mpsc::Receiver<Pending>, stats: Arc<Stats>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let messages: Vec<&NewMessage> = batch.iter().map(|p| &p.message).collect();
        let stored = db.store_batch(&messages).await;
        drop(messages);
        match stored {
            Ok(outcomes) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.messages.fetch_add(outcomes.len() as u64, Ordering::Relaxed);
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let published = match &outcome {
                        Ok(Stored::New(stored)) => {
                            let event = Event::Message {
                                msg_type: MSG_MESSAGE,
                                room: stored.room,
                                username: &job.message.username,
                                message: &job.message.body,
                                id: stored.id,
                                ts: stored.created_at,
                            };
                            Some((stored.room, stored.id, event.encode()))
                        }
                        _ => None,
                    };
                    // The outcome first: a sender that finds its message queued has its ack ready too, and
                    // answers with the ack before the message.
                    let _ = job.outcome.send(outcome);
                    if let Some((room, id, frame)) = published {
                        hub.publish_message(room, id, &frame);
                    }
                }
            }
            Err(err) => {
                err.log_if_internal();
                for job in batch.drain(..) {
                    let _ = job.outcome.send(Err(Error::Unavailable));
                }
            }
        }
    }
}
