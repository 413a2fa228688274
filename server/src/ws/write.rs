//! Writing frames to a chat socket: all of them, one flush, under the write timeout, and given up at once if the
//! server closes the connection meanwhile.
//!
//! A hand-written future rather than nested `async fn`s, for memory: every connection's task is as large as the
//! largest thing it ever awaits, and an `async fn` that takes a future by value and wraps it (in a timeout, in a
//! `select!`) holds it twice. The three layers that did this made an idle socket's task 4.3 KiB.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::Sink;
use tokio::sync::oneshot;
use tokio::time::Sleep;

use crate::hub::CloseReason;

use super::wakes::{Input, Wakes};

/// Why a write did not finish.
#[derive(Debug)]
pub enum Unwritten {
    /// The peer is gone, or read nothing for the whole write timeout.
    Peer,
    /// The server closed the connection while the write waited, for this reason.
    Closed(CloseReason),
}

/// The close signal a write watches, polled through the connection's [`Wakes`] like the loop polls it.
pub type Closed<'a> = (&'a mut oneshot::Receiver<CloseReason>, &'a Wakes);

/// Writes `frames` to `socket` and flushes once (see [`Write`]). With `closed`, the write is given up as soon
/// as the server closes the connection: a reader that stops reading blocks a write, and that is just when its
/// queue fills and the hub drops it, so it must leave its rooms then, not when the timeout gives up the write.
pub fn write<'a, I: IntoIterator<Item = Message>>(
    socket: &'a mut WebSocket,
    frames: I,
    timeout: Duration,
    closed: Option<Closed<'a>>,
) -> Write<'a, I::IntoIter> {
    Write { socket, frames: frames.into_iter(), next: None, fed: false, timeout, deadline: None, closed }
}

/// The future of [`write`].
pub struct Write<'a, I> {
    socket: &'a mut WebSocket,
    frames: I,
    /// A frame taken from `frames` that the socket had no room for yet.
    next: Option<Message>,
    /// Whether any frame went to the socket: with none (a `send` has no reply), there is nothing to flush.
    fed: bool,
    timeout: Duration,
    /// Armed only once the write has to wait: nearly every write finishes on its first poll, and arming and
    /// disarming a timer for each cost 2 % of the server's CPU at 100 × 100. Boxed, as only slow sockets get one.
    deadline: Option<Pin<Box<Sleep>>>,
    closed: Option<Closed<'a>>,
}

impl<I: Iterator<Item = Message> + Unpin> Write<'_, I> {
    /// Feeds every frame, then flushes.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        while let Some(frame) = self.next.take().or_else(|| self.frames.next()) {
            match Pin::new(&mut *self.socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    Pin::new(&mut *self.socket).start_send(frame)?;
                    self.fed = true;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    self.next = Some(frame);
                    return Poll::Pending;
                }
            }
        }
        if !self.fed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *self.socket).poll_flush(cx)
    }
}

impl<I: Iterator<Item = Message> + Unpin> Future for Write<'_, I> {
    type Output = Result<(), Unwritten>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(written) = this.poll_write(cx) {
            return Poll::Ready(written.map_err(|_| Unwritten::Peer));
        }
        // The write waits: the socket's buffer is full.
        if let Some((closed, wakes)) = this.closed.as_mut() {
            if let Poll::Ready(reason) = wakes.poll(Input::Closed, |cx| Pin::new(&mut **closed).poll(cx)) {
                return Poll::Ready(Err(Unwritten::Closed(reason.unwrap_or(CloseReason::Shutdown))));
            }
        }
        let timeout = this.timeout;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        deadline.as_mut().poll(cx).map(|()| Err(Unwritten::Peer))
    }
}
