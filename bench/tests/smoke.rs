//! Every scenario, run briefly (a few sockets, a second or two) by the real `multichat-bench` binary: against a
//! MultiChat server started in this test, and against the baseline server the tool starts itself. These keep
//! the tool working; the full runs are benchmarks (docs/performance.md), not tests.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

use std::process::{Command, Output};
use std::time::Duration;

use multichat_server::accounts::{self, Rights};
use multichat_server::{AppState, Config};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A MultiChat server on a fresh SQLite file, with an admin; stops when the runtime ends.
async fn server() -> (std::net::SocketAddr, tempfile::TempDir) {
    server_allowing(1000).await
}

/// [`server`], letting each socket send `messages_per_second`.
async fn server_allowing(messages_per_second: u32) -> (std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = multichat_server::open_database(None, dir.path()).await.unwrap();
    let config = Config { messages_per_second, hash_concurrency: 2, ..Config::default() };
    let state = AppState::new(db.clone(), config, CancellationToken::new()).unwrap();
    accounts::create(&db, &state.passwords, "admin", "admin-password", Rights { is_staff: true, is_admin: true })
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(multichat_server::serve(listener, state));
    (addr, dir)
}

/// Runs the tool (bounded in time) and returns its output and the JSON report.
async fn bench(args: Vec<String>) -> (Output, Value) {
    let json = tempfile::NamedTempFile::new().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_multichat-bench"));
    command.args(["--users", "3", "--json"]).arg(json.path()).args(&args);
    let output = tokio::task::spawn_blocking(move || {
        let mut child =
            command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("multichat-bench {args:?} ran over a minute");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let report = serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap_or_default()).unwrap_or(Value::Null);
    (output, report)
}

fn figure(report: &Value, name: &str) -> f64 {
    value_of(&report["figures"], name)
}

/// The value of the figure called `name` in a list of figures.
fn value_of(figures: &Value, name: &str) -> f64 {
    figures.as_array().unwrap().iter().find(|f| f["name"] == name).unwrap()["value"].as_f64().unwrap()
}

fn against(addr: std::net::SocketAddr, scenario: &[&str]) -> Vec<String> {
    let pid = std::process::id().to_string();
    let mut args: Vec<String> =
        ["--url", &addr.to_string(), "--pid", &pid, "--admin", "admin:admin-password"].map(String::from).into();
    args.extend(scenario.iter().map(|s| s.to_string()));
    args
}

fn succeeded(output: &Output) {
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("OK: nothing lost, nobody disconnected"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_authenticated_sockets_and_reads_the_servers_memory() {
    let (addr, _dir) = server().await;
    let (output, report) = bench(against(addr, &["idle", "--connections", "20", "--hold", "0.5"])).await;
    succeeded(&output);
    assert_eq!(figure(&report, "connections"), 20.0);
    assert!(figure(&report, "connect_rate") > 0.0);
    assert!(figure(&report, "server_rss_after") > 0.0, "memory read from /proc of the given pid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_everything_and_measures_latency() {
    let (addr, _dir) = server().await;
    let scenario = ["fanout", "--rooms", "2", "--members", "5", "--senders", "2", "--rate", "500", "--seconds", "1"];
    let (output, report) = bench(against(addr, &scenario)).await;
    succeeded(&output);
    let sent = figure(&report, "messages_sent");
    assert!(sent > 0.0);
    assert_eq!(figure(&report, "deliveries"), sent * 5.0, "each message reaches its room's five members");
    assert!(figure(&report, "latency_p99") > 0.0);
    // The split at the server's stamp: each part is at most the whole (the stamp is read to the millisecond
    // and placed at its middle, so the part after it may be off by half a millisecond).
    let whole = figure(&report, "latency_max");
    assert!(figure(&report, "before_stamp_p99") <= whole);
    assert!(figure(&report, "after_stamp_p99") <= whole + 0.6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_with_nonces_has_every_send_acknowledged_to_its_sender() {
    let (addr, _dir) = server().await;
    let scenario = ["fanout", "--members", "4", "--senders", "2", "--rate", "400", "--seconds", "1", "--nonces"];
    let (output, report) = bench(against(addr, &scenario)).await;
    succeeded(&output);
    let sent = figure(&report, "messages_sent");
    assert!(sent > 0.0);
    assert_eq!(figure(&report, "acks"), sent, "one ack per send, and acks are not counted as deliveries");
    assert_eq!(figure(&report, "deliveries"), sent * 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_cycles_without_errors() {
    let (addr, _dir) = server().await;
    let (output, report) = bench(against(addr, &["churn", "--workers", "2", "--rooms", "2", "--seconds", "1"])).await;
    succeeded(&output);
    assert!(figure(&report, "cycles") > 0.0);
    assert_eq!(figure(&report, "errors"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_runs_every_scenario_too() {
    for scenario in [
        &["idle", "--connections", "20", "--hold", "0.5"][..],
        &["fanout", "--members", "5", "--senders", "2", "--rate", "500", "--seconds", "1"],
        &["churn", "--workers", "2", "--seconds", "1"],
    ] {
        let mut args = vec!["--baseline".to_owned()];
        args.extend(scenario.iter().map(|s| s.to_string()));
        let (output, report) = bench(args).await;
        succeeded(&output);
        assert!(report["target"].as_str().unwrap().contains("baseline"), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_runs_report_each_figures_median_and_spread() {
    let args = ["--baseline", "--runs", "2", "idle", "--connections", "10", "--hold", "0.2"].map(String::from).into();
    let (output, report) = bench(args).await;
    succeeded(&output);
    assert_eq!(report["parameters"]["runs"], 2);
    let connections = report["figures"].as_array().unwrap().iter().find(|f| f["name"] == "connections").unwrap();
    assert_eq!(connections["spread"], serde_json::json!([10.0, 10.0]), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_baseline_reports_both_sides_and_their_ratio() {
    let (addr, _dir) = server().await;
    let mut args = vec!["--against-baseline".to_owned()];
    args.extend(against(addr, &["fanout", "--members", "4", "--senders", "2", "--rate", "400", "--seconds", "1"]));
    let (output, report) = bench(args).await;
    succeeded(&output);
    assert!(report["server"]["target"].as_str().unwrap().contains(&addr.to_string()), "{report}");
    assert!(report["baseline"]["target"].as_str().unwrap().contains("baseline"), "{report}");
    for side in ["server", "baseline"] {
        let sent = figure(&report[side], "messages_sent");
        assert!(sent > 0.0, "{side}");
        assert_eq!(figure(&report[side], "deliveries"), sent * 4.0, "{side} delivered everything");
    }
    let ratio = value_of(&report["ratios"], "latency_p99");
    let expected = figure(&report["server"], "latency_p99") / figure(&report["baseline"], "latency_p99");
    assert!((ratio - expected).abs() < 1e-9, "server ÷ baseline: {ratio} against {expected}");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains(&format!("{ratio:.2}")), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_delivery_fails_the_run() {
    // A server that throttles the senders to 1 message per second refuses the rest: the tool must notice.
    let (addr, _dir) = server_allowing(1).await;
    let scenario = ["fanout", "--members", "3", "--senders", "1", "--rate", "300", "--seconds", "1"];
    let (output, _) = bench(against(addr, &scenario)).await;
    assert!(!output.status.success());
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("deliveries missing") && summary.contains("RATE_LIMITED"), "{summary}");
}
