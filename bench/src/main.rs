//! `multichat-bench`: measures a MultiChat server (or the bare baseline) with one scenario, prints a short
//! summary, optionally writes JSON, and exits non-zero if anything was lost or anyone disconnected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use multichat_bench::comparison::Comparison;
use multichat_bench::report::Report;
use multichat_bench::scenario::{churn, fanout, idle};
use multichat_bench::target::{sibling_server, Target};

#[derive(Parser)]
#[command(name = "multichat-bench", about = "Load and measure a MultiChat server over its real protocol on loopback")]
struct Cli {
    /// Start this multichat-server binary [default: the one built next to this tool].
    #[arg(long, global = true)]
    server: Option<PathBuf>,
    /// Extra options for the server this tool starts (repeat for each).
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Measure the bare fan-out server (the ceiling) instead of MultiChat.
    #[arg(long, global = true)]
    baseline: bool,
    /// Measure the server and the bare baseline in turn (one run of each per --runs), and report each figure
    /// beside the baseline's, with their ratio.
    #[arg(long, global = true, conflicts_with = "baseline")]
    against_baseline: bool,
    /// Measure a server already running at this address (host:port) instead of starting one.
    #[arg(long, global = true)]
    url: Option<SocketAddr>,
    /// With --url: the server's process id, to read its memory and CPU.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// With --url: an admin account (NAME:PASSWORD) to create the run's users and rooms with.
    #[arg(long, global = true)]
    admin: Option<String>,
    /// Users to create and log in; sockets share their sessions.
    #[arg(long, global = true, default_value_t = 100)]
    users: usize,
    /// Run the scenario this many times, each against a freshly started server, and report each figure's median
    /// and spread.
    #[arg(long, global = true, default_value_t = 1)]
    runs: usize,
    /// Write the report here as JSON.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Hold many authenticated idle sockets: server memory per socket, and the connect rate.
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
    },
    /// Senders talk into rooms at a target rate: deliveries/s, latency, server CPU, nothing lost.
    Fanout {
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Sockets per room.
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Target deliveries per second (messages per second × members).
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Senders send at the same instants (bursts of one message per sender) instead of spread evenly over
        /// each period: the tool's behaviour before 2026-12-04, to reproduce figures taken then.
        #[arg(long)]
        in_step: bool,
        /// Every send carries a nonce and is acknowledged to its sender, as the web client's sends are.
        #[arg(long)]
        nonces: bool,
    },
    /// Connect, join, send, leave, disconnect, in a loop: cycles per second and errors.
    Churn {
        #[arg(long, default_value_t = 20)]
        workers: usize,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Run the bare baseline server (used by --baseline).
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    // Thousands of sockets on both ends; a server started here inherits the raised limit.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    if let Scenario::BaselineServer { bind } = cli.scenario {
        multichat_bench::baseline::serve(bind).await?;
        return Ok(true);
    }
    let mut server_args = cli.server_args.clone();
    if let Scenario::Fanout { members, senders, rate, .. } = &cli.scenario {
        // The default of 10 messages per second per socket would throttle the senders: raised, and said so.
        let per_sender = rate / *members as f64 / (*senders).max(1) as f64;
        if per_sender > 5.0 && !server_args.iter().any(|a| a.starts_with("--messages-per-second")) {
            server_args.push(format!("--messages-per-second={}", (per_sender * 2.0).ceil() as u64));
        }
    }
    if cli.against_baseline {
        let mut pairs = Vec::with_capacity(cli.runs.max(1));
        for _ in 0..cli.runs.max(1) {
            // Each server is stopped before the next starts, so that neither runs beside the other's load.
            let server = scenario(&cli, &target(&cli, &server_args)?).await?;
            let baseline = scenario(&cli, &Target::spawn_baseline()?).await?;
            pairs.push((server, baseline));
        }
        let comparison = Comparison::of_pairs(pairs).context("no run")?;
        print!("{}", comparison.summary());
        write_json(&cli, &comparison)?;
        return Ok(comparison.passed());
    }
    let mut reports = Vec::with_capacity(cli.runs.max(1));
    for _ in 0..cli.runs.max(1) {
        let target = target(&cli, &server_args)?;
        reports.push(scenario(&cli, &target).await?);
    }
    let report = Report::of_runs(reports).context("no run")?;
    print!("{}", report.summary());
    write_json(&cli, &report)?;
    Ok(report.failures.is_empty())
}

/// Writes the report to --json's file, if given.
fn write_json(cli: &Cli, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The server to measure: a running one, the baseline, or a `multichat-server` started for this run.
fn target(cli: &Cli, server_args: &[String]) -> anyhow::Result<Target> {
    Ok(match (cli.url, cli.baseline) {
        (Some(addr), _) => {
            let admin = match &cli.admin {
                Some(admin) => admin.split_once(':').context("--admin NAME:PASSWORD")?,
                None => bail!("--url needs --admin NAME:PASSWORD to create the run's users and rooms"),
            };
            Target::running(addr, cli.pid, Some((admin.0.to_owned(), admin.1.to_owned())))
        }
        (None, true) => Target::spawn_baseline()?,
        (None, false) => {
            let binary = match cli.server.clone().or_else(sibling_server) {
                Some(binary) => binary,
                None => bail!("no multichat-server next to this tool: build it (cargo build --release -p multichat-server) or pass --server"),
            };
            Target::spawn_server(&binary, server_args)?
        }
    })
}

/// One run of the chosen scenario against `target`.
async fn scenario(cli: &Cli, target: &Target) -> anyhow::Result<Report> {
    let seconds = |s: f64| Duration::from_secs_f64(s.max(0.1));
    Ok(match cli.scenario {
        Scenario::Idle { connections, hold } => {
            idle::run(target, idle::Idle { connections, users: cli.users, hold: seconds(hold) }).await?
        }
        Scenario::Fanout { rooms, members, senders, rate, seconds: s, in_step, nonces } => {
            let duration = seconds(s);
            let fanout = fanout::Fanout { rooms, members, senders, rate, duration, users: cli.users, in_step, nonces };
            fanout::run(target, fanout).await?
        }
        Scenario::Churn { workers, rooms, seconds: s } => {
            churn::run(target, churn::Churn { workers, rooms, duration: seconds(s), users: cli.users }).await?
        }
        Scenario::BaselineServer { .. } => bail!("baseline-server is not a scenario"),
    })
}
