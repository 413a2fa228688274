//! Which of a connection's quiet inputs woke its task, so that the loop polls only those.
//!
//! A connection's loop waits on its frame queue, its socket, its timer and its close signal at once, and a
//! `select!` polls every one of them each time the task wakes. Under load nearly every wake-up is a frame to
//! deliver, and polling the socket (tungstenite, hyper's upgraded stream, the I/O driver's readiness, two
//! waker registrations), the timer and the close signal found nothing: 14 % of the server's profile at
//! 1 × 1,000 went to such polls (5 % with this module; docs/performance.md). Each quiet input is instead
//! polled with a waker of its own that marks it, and skipped while it is unmarked: an input is polled again
//! only after it woke the task or after it last returned `Ready` (a socket can hold a second frame in its
//! buffer without waking anyone). The task's own waker is registered once per poll of the task, by
//! [`Task::around`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::{waker_ref, ArcWake, AtomicWaker};

/// An input polled through [`Wakes`].
#[derive(Debug, Clone, Copy)]
pub enum Input {
    Socket = 0,
    Timer = 1,
    Closed = 2,
}

impl Input {
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A connection's record of which inputs woke it since they were last polled.
pub struct Wakes {
    /// One per [`Input`], in its order; all share one [`Shared`]. Kept as `Arc`s rather than `Waker`s, which
    /// are twice the size: this is in every connection's task.
    markers: [Arc<Marker>; 3],
}

struct Shared {
    /// The connection's task, woken by any input.
    task: AtomicWaker,
    /// One bit per input: woken (or never polled, or `Ready` when last polled) since it was last polled.
    woken: AtomicU8,
}

/// The waker an input is polled with.
struct Marker {
    shared: Arc<Shared>,
    bit: u8,
}

impl ArcWake for Marker {
    fn wake_by_ref(marker: &Arc<Self>) {
        marker.shared.woken.fetch_or(marker.bit, Ordering::Release);
        marker.shared.task.wake();
    }
}

impl Wakes {
    /// Every input starts woken: each is polled once before it can be skipped.
    pub fn new() -> Wakes {
        let shared = Arc::new(Shared { task: AtomicWaker::new(), woken: AtomicU8::new(u8::MAX) });
        let marker = |input: Input| Arc::new(Marker { shared: shared.clone(), bit: input.bit() });
        Wakes { markers: [marker(Input::Socket), marker(Input::Timer), marker(Input::Closed)] }
    }

    fn shared(&self) -> &Shared {
        &self.markers[0].shared
    }

    /// What registers the task whose inputs these are: see [`Task::around`].
    pub fn task(&self) -> Task {
        Task(self.markers[0].shared.clone())
    }

    /// Polls `input` with its own waker (`poll` is how) if it woke the task or has not been polled to `Pending`
    /// since it last did; else it is `Pending` without a poll. Only inside [`Task::around`], which registers the
    /// task polling it.
    pub fn poll<T>(&self, input: Input, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        if self.shared().woken.load(Ordering::Acquire) & input.bit() == 0 {
            return Poll::Pending;
        }
        // Cleared before the poll, so that a wake-up during it is not lost.
        self.shared().woken.fetch_and(!input.bit(), Ordering::AcqRel);
        let waker = waker_ref(&self.markers[input as usize]);
        let ready = poll(&mut Context::from_waker(&waker));
        if ready.is_ready() {
            // Ready now says nothing of what comes next without a wake-up (a second buffered frame, say).
            self.shared().woken.fetch_or(input.bit(), Ordering::Release);
        }
        ready
    }

    /// [`Wakes::poll`] of a future, as a future.
    pub fn watch<'a, F: Future + Unpin>(&'a self, input: Input, future: F) -> Watch<'a, F> {
        Watch { wakes: self, input, future }
    }
}

/// The task of a connection's [`Wakes`].
pub struct Task(Arc<Shared>);

impl Task {
    /// `body`, which polls inputs through the [`Wakes`] this came from, with the task registered at each poll,
    /// before any input is polled or skipped: once per poll of the task rather than once per input, as it costs
    /// two atomic operations and skipping inputs is about saving such costs.
    pub fn around<F: Future>(self, body: F) -> Registered<F> {
        Registered { task: self.0, body }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Task::around`].
    pub struct Registered<F> {
        task: Arc<Shared>,
        #[pin]
        body: F,
    }
}

impl<F: Future> Future for Registered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.task.task.register(cx.waker());
        this.body.poll(cx)
    }
}

/// The future of [`Wakes::watch`].
pub struct Watch<'a, F> {
    wakes: &'a Wakes,
    input: Input,
    future: F,
}

impl<F: Future + Unpin> Future for Watch<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let future = &mut this.future;
        this.wakes.poll(this.input, |cx| Pin::new(future).poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    /// A task that counts its wake-ups.
    struct Counted(AtomicUsize);

    impl Counted {
        fn new() -> Arc<Counted> {
            Arc::new(Counted(AtomicUsize::new(0)))
        }

        fn woken(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// What [`Task::around`] does at each poll of the task.
    fn register(wakes: &Wakes, task: &Arc<Counted>) {
        wakes.shared().task.register(&Waker::from(task.clone()));
    }

    /// Polls `input` to `answer`: whether the poll function ran, what came of it, and the waker it was given.
    fn poll(wakes: &Wakes, input: Input, answer: Poll<u8>) -> (bool, Poll<u8>, Option<Waker>) {
        let mut given = None;
        let result = wakes.poll(input, |cx| {
            given = Some(cx.waker().clone());
            answer
        });
        (given.is_some(), result, given)
    }

    #[test]
    fn an_input_is_skipped_only_between_a_pending_poll_and_its_wake_up() {
        let wakes = Wakes::new();
        let task = Counted::new();
        register(&wakes, &task);

        let (ran, result, kept) = poll(&wakes, Input::Socket, Poll::Pending);
        assert!(ran && result.is_pending(), "never polled yet: polled");
        assert!(!poll(&wakes, Input::Socket, Poll::Ready(1)).0, "pending, not woken since: skipped");
        assert_eq!(poll(&wakes, Input::Timer, Poll::Ready(2)).1, Poll::Ready(2), "another input is not affected");

        kept.expect("the input kept its waker").wake();
        assert_eq!(task.woken(), 1, "its wake-up wakes the task");
        assert_eq!(poll(&wakes, Input::Socket, Poll::Ready(7)).1, Poll::Ready(7));
        let again = poll(&wakes, Input::Socket, Poll::Ready(8)).1;
        assert_eq!(again, Poll::Ready(8), "after Ready it is polled again, wake-up or not");
    }

    #[test]
    fn an_input_wakes_the_task_registered_last() {
        let wakes = Wakes::new();
        let (first, second) = (Counted::new(), Counted::new());
        register(&wakes, &first);
        let kept = poll(&wakes, Input::Closed, Poll::Pending).2.expect("polled");
        register(&wakes, &second);
        kept.wake();
        assert_eq!((first.woken(), second.woken()), (0, 1));
    }

    #[test]
    fn a_wake_up_during_the_poll_itself_is_kept() {
        let wakes = Wakes::new();
        register(&wakes, &Counted::new());
        let pending = wakes.poll(Input::Closed, |cx| {
            cx.waker().wake_by_ref();
            Poll::<u8>::Pending
        });
        assert!(pending.is_pending());
        assert_eq!(poll(&wakes, Input::Closed, Poll::Ready(3)).1, Poll::Ready(3));
    }
}
