//! `fanout`: senders talk at a fixed rate into rooms of `members` sockets each; every socket reads. Deliveries
//! per second, end-to-end latency (each message carries the time it was sent), the server's CPU, and whether
//! every member got every message, in order.
//!
//! The latency is also split at the server's own stamp (`ts`, the time it gives a message: MultiChat as it
//! stores it, the baseline as it publishes it), to tell the time a message took to reach the server and be
//! taken up from the time it took from there to every member.

use std::any::Any;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{stream, SinkExt, Stream, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{join, provision, Connector};
use crate::report::Report;
use crate::target::{cpu_of, Target};

/// The message body's length, as the targets are stated for.
pub const BODY_BYTES: usize = 100;
/// How long members may take to receive what was sent, once sending stops.
const DRAIN: Duration = Duration::from_secs(10);

pub struct Fanout {
    pub rooms: usize,
    pub members: usize,
    pub senders: usize,
    /// Target deliveries per second (messages per second × members).
    pub rate: f64,
    pub duration: Duration,
    pub users: usize,
    /// All senders send at the same instants; otherwise sender `n` of `S` is `n/S` of a period later than
    /// sender 0, so that the target rate is a steady rate, not bursts of one message per sender.
    pub in_step: bool,
    /// Each send carries a nonce (as the web client's do), which the server stores and acknowledges.
    pub nonces: bool,
}

/// What one member saw.
struct Seen {
    deliveries: u64,
    /// Each delivery's latency in µs. A plain list, merged into one histogram at the end: a histogram per member
    /// (128 KiB at three significant digits) cost 1.3 GB with 10,000 members, allocated as the run began.
    latency: Vec<u32>,
    /// Of each delivery's latency, the part after the server's stamp, in µs (same order as `latency`).
    after_stamp: Vec<u32>,
    out_of_order: u64,
    closed: bool,
    /// Error frames (a refused send, say), and the first of them.
    errors: u64,
    first_error: Option<String>,
    /// Acknowledgements of this member's own sends (with nonces).
    acks: u64,
}

pub async fn run(target: &Target, fanout: Fanout) -> anyhow::Result<Report> {
    let sockets = fanout.rooms * fanout.members;
    let senders = fanout.senders.clamp(1, sockets);
    let per_sender = fanout.rate / fanout.members as f64 / senders as f64;
    let parameters = json!({
        "rooms": fanout.rooms, "members": fanout.members, "senders": senders, "target_deliveries_per_s": fanout.rate,
        "messages_per_s_per_sender": per_sender, "seconds": fanout.duration.as_secs_f64(), "body_bytes": BODY_BYTES,
        "senders_in_step": fanout.in_step, "nonces": fanout.nonces,
    });
    let mut report = Report::new("fanout", &target.description, parameters);
    let accounts = provision(target, fanout.users, fanout.rooms).await?;
    let connector = Connector::new(target.addr);

    // Socket n is a member of room n % rooms; the first `senders` sockets also send.
    let joined: Vec<_> = stream::iter(0..sockets)
        .map(|n| {
            let (connector, token, room) =
                (connector.clone(), accounts.token(n).to_owned(), accounts.rooms[n % fanout.rooms]);
            async move {
                let mut socket = connector.connect(n, &token).await?;
                join(&mut socket, room).await?;
                anyhow::Ok((n, room, socket))
            }
        })
        .buffer_unordered(128)
        .try_collect()
        .await?;

    let origin = Instant::now();
    let clock = Clock::starting_now(origin);
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..fanout.rooms).map(|_| AtomicU64::new(0)).collect());
    let mut readers = Vec::with_capacity(sockets);
    let mut sending = Vec::with_capacity(senders);
    let stop = origin + Duration::from_millis(200) + fanout.duration;
    let start = origin + Duration::from_millis(200);
    // Set once every sender has stopped: a member that has everything sent to its room then stops reading.
    let (done, sending_over) = watch::channel(false);
    for (n, room, socket) in joined {
        let room_index = n % fanout.rooms;
        let (all_sent, over) = (sent.clone(), sending_over.clone());
        let deadline = stop + DRAIN;
        if n >= senders {
            // A member that only reads keeps its socket whole (no lock shared with a writing half).
            readers.push(tokio::spawn(async move {
                let mut socket = socket;
                let seen = read(&mut socket, clock, deadline, &all_sent[room_index], None, over).await;
                (room_index, seen, Box::new(socket) as Box<dyn Any + Send>)
            }));
            continue;
        }
        let (mut sink, mut stream) = socket.split();
        // With nonces, a sender also waits for the acknowledgement of each of its own sends.
        let own_sent = Arc::new(AtomicU64::new(0));
        let acks_due = fanout.nonces.then(|| own_sent.clone());
        readers.push(tokio::spawn(async move {
            let seen = read(&mut stream, clock, deadline, &all_sent[room_index], acks_due, over).await;
            (room_index, seen, Box::new(stream) as Box<dyn Any + Send>)
        }));
        let (sent, in_step, nonces) = (sent.clone(), fanout.in_step, fanout.nonces);
        sending.push(tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / per_sender.max(1e-3));
            let mut next = start + first_send(period, n, senders, in_step);
            let mut seq = 0u64;
            while next < stop {
                tokio::time::sleep_until(next.into()).await;
                let at = origin.elapsed().as_micros() as u64;
                let message = body(at, n, seq);
                let frame = if nonces {
                    json!({ "command": "send", "room": room, "message": message, "nonce": format!("{n}-{seq}") })
                } else {
                    json!({ "command": "send", "room": room, "message": message })
                };
                let frame = frame.to_string();
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
                sent[room_index].fetch_add(1, Ordering::Relaxed);
                own_sent.fetch_add(1, Ordering::Relaxed);
                seq += 1;
                next += period;
            }
            sink
        }));
    }

    tokio::time::sleep_until(start.into()).await;
    let (cpu_before, own_cpu_before) = (target.cpu(), cpu_of("/proc/self/stat"));
    let mut sinks = Vec::with_capacity(sending.len());
    for task in sending {
        sinks.push(task.await?);
    }
    let window = start.elapsed();
    let (cpu_after, own_cpu_after) = (target.cpu(), cpu_of("/proc/self/stat"));
    done.send_replace(true);

    let (mut latency, mut before_stamp, mut after_stamp) = (histogram(), histogram(), histogram());
    let (mut delivered, mut missing, mut closed, mut out_of_order) = (0u64, 0u64, 0usize, 0u64);
    let (mut errors, mut first_error, mut acks) = (0u64, None, 0u64);
    let mut open = Vec::with_capacity(readers.len());
    for reader in readers {
        // Sockets stay open until every member is done: one leaving early would notify the others.
        let (room_index, seen, socket) = reader.await?;
        open.push(socket);
        let expected = sent[room_index].load(Ordering::Relaxed);
        missing += expected.saturating_sub(seen.deliveries);
        delivered += seen.deliveries;
        closed += usize::from(seen.closed);
        out_of_order += seen.out_of_order;
        errors += seen.errors;
        first_error = first_error.or(seen.first_error);
        acks += seen.acks;
        for (&total, &after) in seen.latency.iter().zip(&seen.after_stamp) {
            let _ = latency.record(u64::from(total));
            let _ = after_stamp.record(u64::from(after));
            let _ = before_stamp.record(u64::from(total.saturating_sub(after).max(1)));
        }
    }
    drop((sinks, open));
    let messages: u64 = sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    report.figure("messages_sent", messages as f64, "messages");
    report.figure("deliveries", delivered as f64, "deliveries");
    report.figure("deliveries_per_second", delivered as f64 / window.as_secs_f64(), "deliveries/s");
    if fanout.nonces {
        report.figure("acks", acks as f64, "acks");
    }
    for (name, quantile) in [("latency_p50", 0.5), ("latency_p99", 0.99), ("latency_p999", 0.999)] {
        report.figure(name, latency.value_at_quantile(quantile) as f64 / 1000.0, "ms");
    }
    report.figure("latency_max", latency.max() as f64 / 1000.0, "ms");
    if !after_stamp.is_empty() {
        let quantiles = [("before_stamp_p50", &before_stamp, 0.5), ("before_stamp_p99", &before_stamp, 0.99)];
        let after = [("after_stamp_p50", &after_stamp, 0.5), ("after_stamp_p99", &after_stamp, 0.99)];
        for (name, histogram, quantile) in quantiles.into_iter().chain(after) {
            report.figure(name, histogram.value_at_quantile(quantile) as f64 / 1000.0, "ms");
        }
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report.figure("server_cpu", (after - before).as_secs_f64() / window.as_secs_f64() * 100.0, "% of one core");
    }
    // The load tool shares the machine's cores with the server: its own share says how much was left.
    if let (Some(before), Some(after)) = (own_cpu_before, own_cpu_after) {
        report.figure("load_tool_cpu", (after - before).as_secs_f64() / window.as_secs_f64() * 100.0, "% of one core");
    }
    if missing > 0 {
        report.fail(format!("{missing} deliveries missing"));
    }
    if fanout.nonces && acks < messages {
        report.fail(format!("{} acknowledgements missing", messages - acks));
    }
    if errors > 0 {
        report.fail(format!("the server answered {errors} errors; the first: {}", first_error.unwrap_or_default()));
    }
    if closed > 0 {
        report.fail(format!("{closed} members were disconnected (slow readers?)"));
    }
    if out_of_order > 0 {
        report.fail(format!("{out_of_order} messages arrived out of id order"));
    }
    Ok(report)
}

/// Reads one member's frames until it has everything sent to its room once sending is over (and, given
/// `acks_due`, an acknowledgement of each of its own sends), or until `deadline`. The socket is polled first,
/// the end of sending and the deadline only when it has nothing, and neither wakes the reader on its own before
/// then: the tool must spend as little of the machine's CPU per delivery as it can, since the server shares it
/// (a 50 ms check per reader cost 200,000 wake-ups a second with 10,000 members).
async fn read<S>(
    stream: &mut S,
    clock: Clock,
    deadline: Instant,
    all_sent: &AtomicU64,
    acks_due: Option<Arc<AtomicU64>>,
    mut sending: watch::Receiver<bool>,
) -> Seen
where
    S: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut seen = Seen {
        deliveries: 0,
        latency: Vec::new(),
        after_stamp: Vec::new(),
        out_of_order: 0,
        closed: false,
        errors: 0,
        first_error: None,
        acks: 0,
    };
    let acks_done = |seen: &Seen| acks_due.as_ref().is_none_or(|due| seen.acks >= due.load(Ordering::Relaxed));
    let mut last_id = 0i64;
    // Over when the flag is set, or when the tool is gone (nothing more will be sent either way).
    let over = async move {
        let _ = sending.wait_for(|&over| over).await;
    };
    let mut over = pin!(over);
    let mut deadline = pin!(tokio::time::sleep_until(deadline.into()));
    let mut sending_over = false;
    loop {
        if sending_over && seen.deliveries >= all_sent.load(Ordering::Relaxed) && acks_done(&seen) {
            break;
        }
        let frame = tokio::select! {
            biased;
            frame = stream.next() => frame,
            () = &mut over, if !sending_over => {
                sending_over = true;
                continue;
            }
            () = &mut deadline => break,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                if text.starts_with(r#"{"error""#) {
                    seen.errors += 1;
                    seen.first_error.get_or_insert_with(|| text.to_string());
                    continue;
                }
                if text.starts_with(r#"{"ack""#) {
                    seen.acks += 1;
                    continue;
                }
                let Some(Delivered { sent_at, id, stamped_at }) = parse(text.as_str()) else { continue };
                let now = clock.origin.elapsed().as_micros() as u64;
                seen.latency.push(now.saturating_sub(sent_at).clamp(1, u64::from(u32::MAX)) as u32);
                let after = now.saturating_sub(clock.since_origin(stamped_at));
                seen.after_stamp.push(after.clamp(1, u64::from(u32::MAX)) as u32);
                seen.deliveries += 1;
                if id <= last_id {
                    seen.out_of_order += 1;
                }
                last_id = id;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                seen.closed = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    seen
}

/// When sender `n` of `senders` sends first, after the start: all at once `in_step`, else spread evenly over
/// one `period`, so that the room hears a steady rate.
fn first_send(period: Duration, n: usize, senders: usize, in_step: bool) -> Duration {
    if in_step {
        Duration::ZERO
    } else {
        period.mul_f64(n as f64 / senders.max(1) as f64)
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds, up to a minute, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("a histogram"))
}

/// A message of exactly [`BODY_BYTES`]: the time it was sent (µs since the run began), then who sent it and
/// its number, padded.
pub fn body(sent_at_us: u64, sender: usize, seq: u64) -> String {
    let mut body = format!("{sent_at_us:016}|{sender:08}|{seq:012}|");
    body.extend(std::iter::repeat_n('x', BODY_BYTES.saturating_sub(body.len())));
    body
}

/// The run's origin on both clocks: the tool's (`Instant`, for sends and receipts) and the wall clock's (for
/// the server's stamps, in milliseconds since 1970).
#[derive(Clone, Copy)]
struct Clock {
    origin: Instant,
    origin_unix_us: u64,
}

impl Clock {
    fn starting_now(origin: Instant) -> Clock {
        let origin_unix_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Clock { origin, origin_unix_us }
    }

    /// A server stamp (ms since 1970) in µs since the origin, at the middle of its millisecond: a stamp is
    /// truncated to the millisecond, on average half a millisecond early.
    fn since_origin(&self, stamped_at_ms: i64) -> u64 {
        (stamped_at_ms.max(0) as u64 * 1000 + 500).saturating_sub(self.origin_unix_us)
    }
}

/// What the tool reads of a message frame.
#[derive(Debug, PartialEq)]
pub struct Delivered {
    /// When it was sent, in µs since the run began (from the body).
    pub sent_at: u64,
    pub id: i64,
    /// The server's stamp (`ts`), in ms since 1970.
    pub stamped_at: i64,
}

/// A message frame's send time, id and stamp, found without parsing the whole JSON (the load tool must keep
/// up with the server); `None` for any other frame.
pub fn parse(frame: &str) -> Option<Delivered> {
    if !frame.starts_with(r#"{"msg_type":0"#) {
        return None;
    }
    let at = frame.find(r#""message":""#)? + r#""message":""#.len();
    let sent_at = frame.get(at..at + 16)?.parse().ok()?;
    let number_after = |key: &str| -> Option<i64> {
        let at = frame.rfind(key)? + key.len();
        frame[at..].split([',', '}']).next()?.parse().ok()
    };
    Some(Delivered { sent_at, id: number_after(r#""id":"#)?, stamped_at: number_after(r#""ts":"#)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_spread_evenly_over_a_period_unless_in_step() {
        let period = Duration::from_millis(20);
        let steady: Vec<_> = (0..4).map(|n| first_send(period, n, 4, false).as_millis()).collect();
        assert_eq!(steady, [0, 5, 10, 15]);
        assert!((0..4).all(|n| first_send(period, n, 4, true).is_zero()));
    }

    #[test]
    fn a_body_is_exactly_the_stated_size_and_its_time_is_read_back_from_the_frame() {
        let message = body(1234, 7, 42);
        assert_eq!(message.len(), BODY_BYTES);
        let frame = format!(r#"{{"msg_type":0,"room":3,"username":"b","message":"{message}","id":17,"ts":99}}"#);
        assert_eq!(parse(&frame), Some(Delivered { sent_at: 1234, id: 17, stamped_at: 99 }));
        assert_eq!(parse(r#"{"msg_type":4,"room":3,"username":"b"}"#), None);
    }

    #[test]
    fn a_server_stamp_is_placed_on_the_run_clock_at_the_middle_of_its_millisecond() {
        let clock = Clock { origin: Instant::now(), origin_unix_us: 1_700_000_000_123_400 };
        assert_eq!(clock.since_origin(1_700_000_000_125), 2_100);
        assert_eq!(clock.since_origin(1_700_000_000_100), 0, "a stamp from before the run is at its start");
    }
}
