//! The `multichat-server` binary: manage.py-style commands and the headless server's lifecycle.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn run(db: &TestDb, args: &[&str], stdin: &str) -> Output {
    let mut child = binary(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Starts `serve` on port 0 with `env` set, its log (uncoloured) piped to be read.
fn serve_logging(db: &TestDb, env: &[(&str, &str)]) -> std::process::Child {
    let mut command = binary(db);
    command.args(["--bind", "127.0.0.1:0", "serve"]).env("NO_COLOR", "1");
    command.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn createsuperuser_makes_an_admin_who_can_log_in(backend: Backend) {
    let db = TestDb::new(backend).await;
    let made = run(&db, &["createsuperuser", "--username", "root", "--password-stdin"], "s3cret pass\n");
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(stdout(&made).contains("root"));

    let server = TestServer::start(&db).await;
    let root = server.login("root", "s3cret pass").await;
    let me: serde_json::Value = root.get("/api/me").await.json().await.unwrap();
    assert_eq!((me["is_admin"].as_bool(), me["is_staff"].as_bool()), (Some(true), Some(true)));
    assert_eq!(root.get("/api/admin/users").await.status(), 200);
    server.stop().await;
}

/// Runs `createsuperuser` with no flags on a pseudo-terminal (through util-linux `script`), typing `typed`.
fn createsuperuser_at_a_terminal(db: &TestDb, typed: &str) -> Output {
    let program = env!("CARGO_BIN_EXE_multichat-server");
    let mut command = Command::new("script");
    command.args(["-qec", &format!("{program} createsuperuser"), "/dev/null"]);
    command.env("MULTICHAT_DATA_DIR", db.data_dir.path()).env_remove("DATABASE_URL");
    if db.url.starts_with("postgres") {
        command.env("DATABASE_URL", &db.url);
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(typed.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

async fn createsuperuser_prompts_at_a_terminal_and_confirms_the_password(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mismatch = createsuperuser_at_a_terminal(&db, "root\nhunter22\nhunter23\n");
    assert!(!mismatch.status.success());
    assert!(stdout(&mismatch).contains("Password (again)"), "{}", stdout(&mismatch));
    assert!(stdout(&mismatch).contains("passwords do not match"), "{}", stdout(&mismatch));

    let made = createsuperuser_at_a_terminal(&db, "root\nhunter22\nhunter22\n");
    assert!(made.status.success(), "{}", stdout(&made));
    let server = TestServer::start(&db).await;
    let root = server.login("root", "hunter22").await;
    assert_eq!(root.get("/api/admin/users").await.status(), 200);
    server.stop().await;
}

async fn rooms_and_users_are_created_and_listed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let room = run(&db, &["createroom", "--title", "Ops", "--staff-only"], "");
    assert!(room.status.success(), "{}", stderr(&room));
    let id: i64 = stdout(&room).trim().parse().expect("the new room's id alone");
    let user = run(&db, &["createuser", "--username", "sam", "--password-stdin", "--staff"], "pw\n");
    assert!(user.status.success(), "{}", stderr(&user));

    let rooms = stdout(&run(&db, &["listrooms"], ""));
    assert!(rooms.lines().any(|l| l.contains(&id.to_string()) && l.contains("true") && l.contains("Ops")), "{rooms}");
    let users = stdout(&run(&db, &["listusers"], ""));
    assert!(users.lines().any(|l| l.contains("sam") && l.contains("true")), "{users}");
}

async fn cli_mistakes_get_clear_errors(backend: Backend) {
    let db = TestDb::new(backend).await;
    run(&db, &["createuser", "--username", "ann", "--password-stdin"], "pw\n");
    let duplicate = run(&db, &["createuser", "--username", "ANN", "--password-stdin"], "pw\n");
    assert!(!duplicate.status.success());
    assert!(stderr(&duplicate).contains("username is taken"), "{}", stderr(&duplicate));
    assert!(!stderr(&duplicate).contains("backtrace"), "no backtrace for a user mistake");

    let empty = run(&db, &["createuser", "--username", "bob", "--password-stdin"], "\n");
    assert!(!empty.status.success());
    assert!(stderr(&empty).contains("password must not be empty"), "{}", stderr(&empty));

    let unknown = run(&db, &["createroom", "--title", "x", "--sekret"], "");
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("--sekret"), "{}", stderr(&unknown));
}

/// Reads `child`'s stderr lines into a channel, so a test can wait for one with a deadline.
fn log_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    rx
}

fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("no log line with {wanted:?} in time"));
        if line.contains(wanted) {
            return line;
        }
    }
}

// Multi-threaded: the test thread blocks reading the log while the forwarder runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_not_up_yet_is_waited_for_and_one_that_never_comes_is_a_clear_error() {
    let db = TestDb::new(Backend::Postgres).await;
    // A free port stands for a PostgreSQL still starting: a forwarder to the real one opens there later.
    let late = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = late.local_addr().unwrap().port();
    drop(late);
    let (head, tail) = db.url.split_once('@').unwrap();
    let (upstream, database) = tail.split_once('/').unwrap();
    let late_url = format!("{head}@127.0.0.1:{port}/{database}");

    let mut child = binary(&db)
        .args(["--bind", "127.0.0.1:0", "serve"])
        .env("DATABASE_URL", &late_url)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(&mut child);
    wait_for_line(&lines, "the database is not reachable yet; retrying");
    let forwarder = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let upstream = upstream.to_owned();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = forwarder.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    wait_for_line(&lines, "listening on http://");
    child.kill().unwrap();
    child.wait().unwrap();

    let never = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let never_url = format!("{head}@{}/{database}", never.local_addr().unwrap());
    drop(never);
    let started = std::time::Instant::now();
    let output =
        binary(&db).args(["--db-wait-seconds", "2", "listrooms"]).env("DATABASE_URL", never_url).output().unwrap();
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(15), "gives up after the wait");
    let message = stderr(&output);
    assert!(message.contains("could not open the database at DATABASE_URL"), "{message}");
    assert!(!message.contains("panicked") && !message.contains("backtrace"), "{message}");
}

#[test]
fn env_example_lists_every_variable_the_server_reads() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.env.example")).unwrap();
    for variable in server_variables() {
        let listed = example.lines().any(|line| line.trim_start_matches("# ").starts_with(&format!("{variable}=")));
        assert!(listed, ".env.example lists {variable}");
    }
}

#[test]
fn help_documents_every_command_and_option() {
    let help = Command::new(env!("CARGO_BIN_EXE_multichat-server")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "serve",
        "migrate",
        "createsuperuser",
        "createuser",
        "createroom",
        "listrooms",
        "listusers",
        "healthcheck",
        "discover",
        "--advertise",
        "MULTICHAT_ADVERTISE",
        "--bind",
        "MULTICHAT_BIND",
        "--data-dir",
        "MULTICHAT_DATA_DIR",
        "--database-url",
        "DATABASE_URL",
        "--redis-url",
        "REDIS_URL",
    ] {
        assert!(text.contains(word), "--help mentions {word}:\n{text}");
    }
}

async fn sigterm_and_ctrl_c_close_sockets_with_going_away_and_exit_zero(backend: Backend) {
    let db = TestDb::new(backend).await;
    run(&db, &["createuser", "--username", "ann", "--password-stdin"], "pw\n");
    for signal in ["-TERM", "-INT"] {
        stop_with_signal(&db, signal).await;
    }
}

async fn stop_with_signal(db: &TestDb, signal: &str) {
    let (mut child, addr) = serve_binary(db, &[]);
    let login = http_client()
        .post(format!("http://{addr}/api/login"))
        .json(&json!({ "username": "ann", "password": "pw" }))
        .send()
        .await
        .unwrap();
    let token = login.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let session = Session { token, addr: addr.parse().unwrap(), http: http_client() };
    let mut ws = session.connect().await;

    let killed = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    assert_eq!(ws.closed().await.expect("a close frame").code, CloseCode::Away, "on {signal}");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status} on {signal}");
}

async fn healthcheck_succeeds_only_while_a_server_answers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut child, addr) = serve_binary(&db, &[]);
    let alive = run(&db, &["--bind", &addr, "healthcheck"], "");
    assert!(alive.status.success(), "{}", stderr(&alive));
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = run(&db, &["--bind", &addr, "healthcheck"], "");
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains(&format!("no server answers at {addr}")), "{}", stderr(&gone));
    assert!(!stderr(&gone).contains("backtrace"), "a message, not a panic");
}

async fn logs_are_json_lines_with_log_format_json(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut child = serve_logging(&db, &[("LOG_FORMAT", "json")]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a log line").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let line: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(line["level"], "INFO");
    assert!(line["fields"]["message"].as_str().unwrap().contains("listening on http://"), "{line}");
}

async fn first_start_says_how_to_create_the_first_admin(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut child = serve_logging(&db, &[]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let hint = lines.by_ref().take(5).map_while(Result::ok).find(|l| l.contains("no account exists yet"));
    child.kill().unwrap();
    child.wait().unwrap();
    let hint = hint.expect("a first-run hint in the log");
    assert!(hint.contains("/api/setup") && hint.contains("createsuperuser"), "{hint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_url_that_cannot_be_used_is_a_clear_error_and_a_redis_that_is_down_is_waited_for() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut bad = serve_logging(&db, &[("REDIS_URL", "http://:s3cret@redis")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bad.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            bad.kill().unwrap();
            panic!("a server with an unusable REDIS_URL kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let bad = bad.wait_with_output().unwrap();
    assert!(!bad.status.success());
    let message = stderr(&bad);
    assert!(message.contains("REDIS_URL"), "{message}");
    assert!(!message.contains("s3cret") && !message.contains("backtrace"), "{message}");

    // A Redis that is not up: the node serves its own users, says it is not ready, and keeps trying.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = serve_logging(&db, &[("REDIS_URL", &format!("redis://:s3cret@127.0.0.1:{closed}"))]);
    let lines = log_lines(&mut child);
    // The two lines come in either order: the link starts trying before the listener is announced.
    let (mut addr, mut warning) = (None, None);
    while addr.is_none() || warning.is_none() {
        let line = wait_for_line(&lines, "");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = Some(rest.trim().to_owned());
        } else if line.contains("cannot reach Redis") {
            warning = Some(line);
        }
    }
    let (addr, warning) = (addr.unwrap(), warning.unwrap());
    let ready = http_client().get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.text().await.unwrap(), "redis unavailable");
    let alive = http_client().get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200, "alive all the same: restarting it would not bring Redis back");
    child.kill().unwrap();
    child.wait().unwrap();
    let logged: Vec<String> = lines.try_iter().collect();
    assert!(
        !warning.contains("s3cret") && logged.iter().all(|l| !l.contains("s3cret")),
        "the password is never logged"
    );
}

#[test]
fn serve_raises_its_open_files_limit_and_logs_how_many_connections_fit() {
    let db = tempfile::tempdir().unwrap();
    let hard = String::from_utf8(Command::new("sh").args(["-c", "ulimit -Hn"]).output().unwrap().stdout).unwrap();
    // Started the way many services are: with a soft limit of 1024, far below the hard one.
    let script = r#"ulimit -Sn 1024 && exec "$0" --data-dir "$1" --bind 127.0.0.1:0 serve"#;
    let mut child = Command::new("sh")
        .args(["-c", script, env!("CARGO_BIN_EXE_multichat-server")])
        .arg(db.path())
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = log_lines(&mut child);
    let capacity = wait_for_line(&lines, "chat connections");
    child.kill().unwrap();
    child.wait().unwrap();
    let hard = hard.trim();
    if hard != "unlimited" {
        assert!(capacity.contains(&format!("open_files={hard}")), "raised to the hard limit {hard}: {capacity}");
    }
    assert!(!capacity.contains("open_files=1024"), "{capacity}");
}

on_both_backends!(
    createsuperuser_makes_an_admin_who_can_log_in,
    createsuperuser_prompts_at_a_terminal_and_confirms_the_password,
    rooms_and_users_are_created_and_listed,
    cli_mistakes_get_clear_errors,
    sigterm_and_ctrl_c_close_sockets_with_going_away_and_exit_zero,
    first_start_says_how_to_create_the_first_admin,
    healthcheck_succeeds_only_while_a_server_answers,
    logs_are_json_lines_with_log_format_json,
);
