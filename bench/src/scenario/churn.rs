//! `churn`: workers connect, join a room, send a message and wait for its ack, leave, and disconnect, over and
//! over. Cycles per second, and every error. Sockets authenticate with session tokens from logins made
//! beforehand: password hashing is for logins, not for every socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{command, join, provision, Connector};
use crate::report::Report;
use crate::target::Target;

/// A cycle that takes longer than this counts as an error (a server that stopped answering).
const CYCLE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Churn {
    pub workers: usize,
    pub rooms: usize,
    pub duration: Duration,
    pub users: usize,
}

pub async fn run(target: &Target, churn: Churn) -> anyhow::Result<Report> {
    let parameters = json!({ "workers": churn.workers, "rooms": churn.rooms, "seconds": churn.duration.as_secs_f64() });
    let mut report = Report::new("churn", &target.description, parameters);
    let accounts = Arc::new(provision(target, churn.users, churn.rooms.max(1)).await?);
    let connector = Connector::new(target.addr);
    let (cycles, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let stop = Instant::now() + churn.duration;
    let cpu_before = target.cpu();
    let started = Instant::now();
    let workers: Vec<_> = (0..churn.workers)
        .map(|w| {
            let (connector, accounts) = (connector.clone(), accounts.clone());
            let (cycles, errors, first_error) = (cycles.clone(), errors.clone(), first_error.clone());
            tokio::spawn(async move {
                let mut n = w;
                while Instant::now() < stop {
                    let room = accounts.rooms[n % accounts.rooms.len()];
                    let cycle = async {
                        let mut socket = connector.connect(n, accounts.token(n)).await?;
                        join(&mut socket, room).await?;
                        let nonce = format!("c{w}-{n}");
                        let send = json!({ "command": "send", "room": room, "message": "churn", "nonce": nonce });
                        command(&mut socket, send, "ack").await?;
                        command(&mut socket, json!({ "command": "leave", "room": room }), "leave").await?;
                        socket.close(None).await?;
                        anyhow::Ok(())
                    };
                    let cycle = tokio::time::timeout(CYCLE_TIMEOUT, cycle);
                    match cycle.await.unwrap_or_else(|_| Err(anyhow::anyhow!("a cycle took over {CYCLE_TIMEOUT:?}"))) {
                        Ok(()) => cycles.fetch_add(1, Ordering::Relaxed),
                        Err(err) => {
                            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(format!("{err:#}"));
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    n += churn.workers;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let window = started.elapsed();
    let cycles = cycles.load(Ordering::Relaxed);
    report.figure("cycles", cycles as f64, "cycles");
    report.figure("cycles_per_second", cycles as f64 / window.as_secs_f64(), "cycles/s");
    if let (Some(before), Some(after)) = (cpu_before, target.cpu()) {
        report.figure("server_cpu", (after - before).as_secs_f64() / window.as_secs_f64() * 100.0, "% of one core");
    }
    let errors = errors.load(Ordering::Relaxed);
    report.figure("errors", errors as f64, "cycles");
    if errors > 0 {
        let first = first_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
        report.fail(format!("{errors} cycles failed; the first: {first}"));
    }
    Ok(report)
}
