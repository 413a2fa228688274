//! `multichat-server`: the headless server and its admin commands, shaped after Django's `manage.py`.

use std::io::{BufRead, IsTerminal, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use multichat_server::accounts::{self, Rights};
use multichat_server::auth::Passwords;
use multichat_server::client_addr;
use multichat_server::cluster::RedisOptions;
use multichat_server::db::{is_unreachable, PoolOptions};
use multichat_server::discovery::{self, Advertiser, Announcement, Browser, Interfaces, Kind};
use multichat_server::{open_database_with, AppState, Config, Db};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "multichat-server", version, about = "MultiChat: a self-hostable multi-room chat server")]
struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand accepts, each also from an environment variable.
#[derive(Args)]
struct Options {
    /// Address to listen on.
    #[arg(long, env = "MULTICHAT_BIND", default_value = "127.0.0.1:8000", global = true)]
    bind: SocketAddr,
    /// Where the embedded SQLite database lives [default: the per-user data directory, e.g. ~/.local/share/multichat].
    #[arg(long, env = "MULTICHAT_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Use this database instead of the embedded SQLite file (postgres://… or sqlite://…).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Most database connections in the pool [default: 8 for SQLite, 16 for PostgreSQL].
    #[arg(long, env = "MULTICHAT_DB_MAX_CONNECTIONS", global = true)]
    db_max_connections: Option<u32>,
    /// Seconds a query waits for a database connection before the request fails with 503.
    #[arg(long, env = "MULTICHAT_DB_ACQUIRE_TIMEOUT_SECONDS", default_value_t = 5, global = true)]
    db_acquire_timeout_seconds: u64,
    /// Seconds to keep retrying a database that is not reachable at start (down, or still starting).
    #[arg(long, env = "MULTICHAT_DB_WAIT_SECONDS", default_value_t = 60, global = true)]
    db_wait_seconds: u64,
    /// Redis through which several server nodes (sharing one PostgreSQL) serve as one, e.g. redis://redis:6379.
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    redis_url: Option<String>,
    /// Starts the name of the Redis channel the nodes meet on, so that several deployments can share one Redis.
    #[arg(long, env = "MULTICHAT_REDIS_PREFIX", default_value = "multichat", global = true)]
    redis_prefix: String,
    /// Extra web origins allowed to open the chat socket (comma-separated), besides the server's own and the desktop app's.
    #[arg(long, env = "MULTICHAT_ALLOWED_ORIGINS", value_delimiter = ',', global = true)]
    allowed_origin: Vec<String>,
    /// Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the client, e.g. for the login throttle.
    #[arg(long, env = "MULTICHAT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = client_addr::parse_trusted, global = true)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest client frame, in bytes, answered normally (larger ones get FRAME_TOO_LARGE).
    #[arg(long, env = "MULTICHAT_MAX_FRAME_BYTES", default_value_t = Config::default().max_frame_bytes, global = true)]
    max_frame_bytes: usize,
    /// Longest message, in characters.
    #[arg(long, env = "MULTICHAT_MAX_MESSAGE_CHARS", default_value_t = Config::default().max_message_chars, global = true)]
    max_message_chars: usize,
    /// Frames queued for one connection before it is disconnected as a slow reader.
    #[arg(long, env = "MULTICHAT_OUTBOUND_QUEUE", default_value_t = Config::default().outbound_queue, global = true)]
    outbound_queue: usize,
    /// Messages one connection may send per second.
    #[arg(long, env = "MULTICHAT_MESSAGES_PER_SECOND", default_value_t = Config::default().messages_per_second, global = true)]
    messages_per_second: u32,
    /// Seconds between pings of an idle socket; one that leaves a ping unanswered that long is closed.
    #[arg(long, env = "MULTICHAT_PING_SECONDS", default_value_t = Config::default().ping_interval.as_secs(), global = true)]
    ping_seconds: u64,
    /// Do not announce users entering and leaving rooms.
    #[arg(long, env = "MULTICHAT_NO_PRESENCE_NOTICES", global = true)]
    no_presence_notices: bool,
    /// Announce this server on the LAN (mDNS / DNS-SD, as `_multichat._tcp.local.`) so that the desktop app lists it.
    #[arg(long, env = "MULTICHAT_ADVERTISE", global = true)]
    advertise: bool,
    /// The name the LAN sees [default: "MultiChat on <this computer's name>"].
    #[arg(long, env = "MULTICHAT_ADVERTISE_NAME", global = true)]
    advertise_name: Option<String>,
    /// Run mDNS (announcing and `discover`) only on these network interfaces (comma-separated names) [default: all].
    #[arg(long, env = "MULTICHAT_DISCOVERY_INTERFACES", value_delimiter = ',', global = true)]
    discovery_interfaces: Vec<String>,
    /// Days a login lasts.
    #[arg(long, env = "MULTICHAT_SESSION_DAYS", default_value_t = 30, global = true)]
    session_days: u64,
    /// Mark the session cookie Secure (when served over HTTPS).
    #[arg(long, env = "MULTICHAT_SECURE_COOKIES", global = true)]
    secure_cookies: bool,
    /// Delete messages older than this many days [default: keep them].
    #[arg(long, env = "MULTICHAT_RETENTION_DAYS", global = true)]
    retention_days: Option<u64>,
    /// Keep only this many of each room's newest messages [default: all].
    #[arg(long, env = "MULTICHAT_RETENTION_PER_ROOM", global = true)]
    retention_per_room: Option<u64>,
    /// The most messages replayed to a client resuming a room (beyond that it pages through history).
    #[arg(long, env = "MULTICHAT_REPLAY_MAX", default_value_t = Config::default().replay_max, global = true)]
    replay_max: i64,
    /// The largest page of history one request returns.
    #[arg(long, env = "MULTICHAT_HISTORY_PAGE_MAX", default_value_t = Config::default().history_page_max, global = true)]
    history_page_max: i64,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an admin account (also staff), prompting for what is not given.
    Createsuperuser {
        #[arg(long)]
        username: Option<String>,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create an account.
    Createuser {
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Let the user into staff-only rooms.
        #[arg(long)]
        staff: bool,
        /// Let the user manage rooms and accounts.
        #[arg(long)]
        admin: bool,
    },
    /// Create a room and print its id.
    Createroom {
        #[arg(long)]
        title: String,
        /// Only staff may join the room.
        #[arg(long)]
        staff_only: bool,
        /// Store nothing said in the room (no history, as in the original multichat).
        #[arg(long)]
        ephemeral: bool,
    },
    /// List the rooms.
    Listrooms,
    /// List the accounts.
    Listusers,
    /// Exit 0 if the server listening at --bind answers GET /healthz, else 1 (a container's HEALTHCHECK).
    Healthcheck,
    /// List the MultiChat servers announced on the LAN, one JSON object per line as they come and go.
    Discover {
        /// Stop after this many seconds [default: run until interrupted].
        #[arg(long)]
        seconds: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match start(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` gives the causes on one line; a backtrace would only bury the message.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let default_filter = match cli.command {
        Command::Serve => "info,sqlx=warn",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // One JSON object per line for log collectors; the readable form otherwise.
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().init(),
        Ok("text") | Err(_) => logs.init(),
        Ok(other) => {
            logs.init();
            tracing::warn!(format = other, "LOG_FORMAT is json or text; using text");
        }
    }
    // These two need no database.
    match cli.command {
        Command::Healthcheck => return healthcheck(cli.options.bind).await,
        Command::Discover { seconds } => return discover(&cli.options, seconds).await,
        _ => {}
    }
    let data_dir = match &cli.options.data_dir {
        Some(dir) => dir.clone(),
        None => dirs::data_dir().map(|d| d.join("multichat")).unwrap_or_else(|| PathBuf::from("multichat-data")),
    };
    let db = open_with_retry(&cli.options, &data_dir).await.with_context(|| match &cli.options.database_url {
        Some(_) => "could not open the database at DATABASE_URL".to_owned(),
        None => format!("could not open the database in {}", data_dir.display()),
    })?;
    let result = run(cli, &db).await;
    db.close().await;
    result
}

async fn run(cli: Cli, db: &Db) -> anyhow::Result<()> {
    let config = config(&cli.options);
    let passwords = || Passwords::new(1).context("password hashing is unavailable");
    match cli.command {
        Command::Serve => {
            let redis =
                cli.options.redis_url.clone().map(|url| RedisOptions { url, prefix: cli.options.redis_prefix.clone() });
            let announce = cli.options.advertise.then(|| Announcement {
                name: cli.options.advertise_name.clone().unwrap_or_else(discovery::default_name),
                kind: Kind::Server,
                bind: cli.options.bind,
                interfaces: Interfaces(cli.options.discovery_interfaces.clone()),
            });
            serve(cli.options.bind, db.clone(), config, redis, announce).await?
        }
        Command::Migrate => println!("migrations applied"),
        Command::Createsuperuser { username, password_stdin } => {
            let username = match username {
                Some(name) => name,
                None => prompt("Username: ")?,
            };
            let password = read_password(password_stdin, true)?;
            let rights = Rights { is_staff: true, is_admin: true };
            let user = accounts::create(db, &passwords()?, &username, &password, rights).await?;
            println!("Superuser {} created.", user.username);
        }
        Command::Createuser { username, password_stdin: _, staff, admin } => {
            let password = read_password(true, false)?;
            let rights = Rights { is_staff: staff, is_admin: admin };
            let user = accounts::create(db, &passwords()?, &username, &password, rights).await?;
            println!("User {} created.", user.username);
        }
        Command::Createroom { title, staff_only, ephemeral } => {
            let room = db.create_room(accounts::room_title(&title)?, staff_only, ephemeral).await?;
            println!("{}", room.id);
        }
        Command::Listrooms => {
            println!("{:>6}  {:<10}  {:<9}  {:>8}  TITLE", "ID", "STAFF_ONLY", "EPHEMERAL", "MESSAGES");
            for r in db.list_rooms(true).await? {
                println!(
                    "{:>6}  {:<10}  {:<9}  {:>8}  {}",
                    r.id, r.staff_only, r.ephemeral, r.last_message_id, r.title
                );
            }
        }
        // (answered before opening the database)
        Command::Healthcheck | Command::Discover { .. } => unreachable!("handled in start"),
        Command::Listusers => {
            println!("{:>6}  {:<5}  {:<5}  {:<6}  USERNAME", "ID", "STAFF", "ADMIN", "ACTIVE");
            for u in db.list_users().await? {
                println!("{:>6}  {:<5}  {:<5}  {:<6}  {}", u.id, u.is_staff, u.is_admin, u.is_active, u.username);
            }
        }
    }
    Ok(())
}

/// Opens the database, waiting (up to --db-wait-seconds, with a log line per attempt) for one that is not
/// reachable yet: in a compose file the database often starts after the server.
async fn open_with_retry(options: &Options, data_dir: &std::path::Path) -> Result<Db, multichat_server::Error> {
    let pool = PoolOptions {
        max_connections: options.db_max_connections,
        acquire_timeout: Duration::from_secs(options.db_acquire_timeout_seconds.max(1)),
    };
    let give_up = tokio::time::Instant::now() + Duration::from_secs(options.db_wait_seconds);
    let mut delay = Duration::from_millis(500);
    loop {
        match open_database_with(options.database_url.as_deref(), data_dir, pool).await {
            Err(multichat_server::Error::Database(err))
                if is_unreachable(&err) && tokio::time::Instant::now() + delay < give_up =>
            {
                tracing::warn!(cause = %err, retry_in = ?delay, "the database is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

/// Asks the server at `bind` (on this machine) whether it is alive.
async fn healthcheck(bind: SocketAddr) -> anyhow::Result<()> {
    let mut addr = bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let response = client.get(format!("http://{addr}/healthz")).send().await;
    let response = response.with_context(|| format!("no server answers at {addr}"))?;
    if !response.status().is_success() {
        bail!("the server at {addr} answered {}", response.status());
    }
    Ok(())
}

fn config(options: &Options) -> Config {
    Config {
        max_frame_bytes: options.max_frame_bytes,
        max_message_chars: options.max_message_chars,
        outbound_queue: options.outbound_queue,
        messages_per_second: options.messages_per_second,
        ping_interval: Duration::from_secs(options.ping_seconds.max(1)),
        presence_notices: !options.no_presence_notices,
        allowed_origins: options.allowed_origin.clone(),
        trusted_proxies: options.trusted_proxies.clone(),
        session_ttl: Duration::from_secs(options.session_days.max(1) * 24 * 3600),
        secure_cookies: options.secure_cookies,
        retention_max_age: options.retention_days.map(|days| Duration::from_secs(days * 24 * 3600)),
        retention_per_room: options.retention_per_room,
        replay_max: options.replay_max.max(1),
        history_page_max: options.history_page_max.max(1),
        ..Config::default()
    }
}

/// Prints each server found on the LAN (and each that goes away) as a JSON line, until `seconds` pass.
async fn discover(options: &Options, seconds: Option<u64>) -> anyhow::Result<()> {
    let mut browser = Browser::start(&Interfaces(options.discovery_interfaces.clone()))?;
    let until = seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut out = std::io::stdout();
    loop {
        let next = async {
            match until {
                Some(until) => tokio::time::timeout_at(until, browser.next()).await.ok().flatten(),
                None => tokio::select! {
                    change = browser.next() => change,
                    _ = wait_for_signal() => None,
                },
            }
        };
        let Some(change) = next.await else { return Ok(()) };
        // Line by line, flushed: a script (or a test) reads each as it comes.
        writeln!(out, "{}", serde_json::to_string(&change)?)?;
        out.flush()?;
    }
}

async fn serve(
    bind: SocketAddr,
    db: Db,
    config: Config,
    redis: Option<RedisOptions>,
    announce: Option<Announcement>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("could not listen on {bind}"))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let open_files = rlimit::increase_nofile_limit(u64::MAX);
    let mut state = AppState::new(db.clone(), config, shutdown.clone())?;
    if let Some(redis) = redis {
        state.link(redis)?;
        if db.is_sqlite() {
            tracing::warn!("REDIS_URL with the embedded SQLite database: only nodes sharing this one file can be linked; use PostgreSQL for several machines");
        }
    }
    tracing::info!("listening on http://{addr}");
    // Each chat socket is an open file: the soft limit (often 1024) was raised to the hard limit above, and
    // the capacity is logged so that an operator knows where the node stops accepting.
    match open_files {
        // A few dozen descriptors go to the database pool, the listener and the log.
        Ok(limit) => tracing::info!(open_files = limit, "room for about {} chat connections", limit.saturating_sub(64)),
        Err(err) => tracing::warn!(cause = %err, "could not raise the open-files limit"),
    }
    if db.count_users().await? == 0 {
        tracing::info!(
            "no account exists yet: create the first admin at http://{addr}/ (POST /api/setup) or with `multichat-server createsuperuser`"
        );
    }
    // Announced once it listens; a LAN without multicast costs the announcement, never the server.
    let advertiser = announce.and_then(|announce| {
        let announce = Announcement { bind: addr, ..announce };
        Advertiser::start(&announce).inspect_err(|err| tracing::warn!(cause = %err, "not announced on the LAN")).ok()
    });
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    let closing = state.shutdown.clone();
    let withdraw = tokio::spawn({
        let closing = closing.clone();
        async move {
            closing.cancelled().await;
            // Withdrawn as the server starts closing: the LAN's lists drop it before its sockets are gone.
            if let Some(advertiser) = advertiser {
                advertiser.stop().await;
            }
        }
    });
    let served = multichat_server::serve(listener, state).await;
    // Serving can also end on an error, without a signal: the announcement goes all the same.
    closing.cancel();
    let _ = withdraw.await;
    served?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// The password: the first line of standard input (scripts), or typed twice at a hidden prompt.
fn read_password(from_stdin: bool, confirm: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            bail!("the password must not be empty");
        }
        return Ok(password.to_owned());
    }
    let password = rpassword::prompt_password("Password: ")?;
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    if confirm && rpassword::prompt_password("Password (again): ")? != password {
        bail!("the passwords do not match");
    }
    Ok(password)
}
