//! LAN discovery, end to end: the real binary announcing (`serve --advertise`) and browsing (`discover`),
//! each inside network namespaces the test creates — one with only loopback, or two joined by a veth pair —
//! so that nothing is announced on, or sent to, the machine's real network.
//!
//! Creating namespaces needs root (as in CI). Elsewhere set MULTICHAT_SKIP_NETNS=1 to skip these tests.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_multichat-server");
/// A browser started first finds a server within about a second; a goodbye arrives at once.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_server_announced_on_loopback_is_found_with_its_name_and_port_and_lost_when_it_stops() {
    let Some(ns) = Netns::new() else { return };
    let browser = ns.discover();
    let server = ns.serve(&["--advertise", "--advertise-name", "Fourth floor"]);

    let found = browser.until(|e| e["event"] == "found" && e["port"] == server.port);
    assert_eq!(found["name"], "Fourth floor");
    assert_eq!(found["kind"], "server");
    assert_eq!(found["protocol"], 1);
    assert_eq!(found["url"], format!("http://127.0.0.1:{}", server.port));

    let id = found["id"].clone();
    server.stop();
    browser.until(|e| e["event"] == "lost" && e["id"] == id);
}

#[test]
fn a_server_on_another_machine_of_the_lan_is_found_at_an_address_that_reaches_it() {
    let Some(lan) = Lan::new() else { return };
    let server = lan.host.serve(&["--advertise", "--advertise-name", "Lab"]);
    let browser = lan.guest.discover();

    let found = browser.until(|e| e["event"] == "found" && e["port"] == server.port && e["url"].is_string());
    let url = format!("http://{}:{}", Lan::HOST_IP, server.port);
    assert_eq!(found["url"], url);
    assert!(found["addresses"].as_array().unwrap().contains(&Value::from(Lan::HOST_IP)), "{found}");
    // The guest reaches the server where the announcement said.
    let health = lan.guest.run(&["--bind", &url["http://".len()..], "healthcheck"]);
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));

    let id = found["id"].clone();
    server.stop();
    browser.until(|e| e["event"] == "lost" && e["id"] == id);
}

#[test]
fn a_server_is_not_announced_unless_asked_to() {
    let Some(ns) = Netns::new() else { return };
    let quiet = ns.serve(&[]);
    let announced = ns.serve(&["--advertise"]);
    let browser = ns.discover();

    // The browser works (it finds the announced server), and it never hears of the other.
    browser.until(|e| e["event"] == "found" && e["port"] == announced.port);
    let heard = browser.for_a_while(Duration::from_secs(2));
    assert!(heard.iter().all(|e| e["port"] != quiet.port), "{heard:?}");
}

#[test]
fn announcing_can_be_kept_to_chosen_interfaces() {
    let Some(lan) = Lan::new() else { return };
    let local_only = lan.host.serve(&["--advertise", "--discovery-interfaces", "lo"]);
    let everywhere = lan.host.serve(&["--advertise", "--advertise-name", "Everywhere"]);
    let browser = lan.guest.discover();

    browser.until(|e| e["event"] == "found" && e["port"] == everywhere.port);
    let heard = browser.for_a_while(Duration::from_secs(2));
    assert!(heard.iter().all(|e| e["port"] != local_only.port), "{heard:?}");
    // On its own machine it is announced all the same.
    let here = lan.host.discover();
    here.until(|e| e["event"] == "found" && e["port"] == local_only.port);
}

/// A network namespace of the test's own, deleted when dropped.
struct Netns {
    name: String,
    data: tempfile::TempDir,
}

impl Netns {
    /// A namespace with only loopback, up; `None` when the tests are skipped on purpose.
    fn new() -> Option<Netns> {
        if std::env::var_os("MULTICHAT_SKIP_NETNS").is_some() {
            eprintln!("skipped: MULTICHAT_SKIP_NETNS is set");
            return None;
        }
        let name = format!("mc-test-{:08x}", rand_u32());
        ip(&["netns", "add", &name]).unwrap_or_else(|err| {
            panic!("could not create a network namespace ({err}): run as root, or set MULTICHAT_SKIP_NETNS=1 to skip")
        });
        let ns = Netns { name, data: tempfile::tempdir().expect("temp dir") };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]).expect("loopback up");
        Some(ns)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, BIN]).args(args);
        command.env("NO_COLOR", "1");
        for variable in ["MULTICHAT_ADVERTISE", "MULTICHAT_DISCOVERY_INTERFACES", "DATABASE_URL", "REDIS_URL"] {
            command.env_remove(variable);
        }
        command
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().expect("run multichat-server")
    }

    /// `multichat-server serve` on a free port of this namespace, with `extra` options.
    fn serve(&self, extra: &[&str]) -> Served {
        let data = tempfile::tempdir_in(self.data.path()).expect("data dir");
        let mut child = self
            .command(&["--bind", "0.0.0.0:0"])
            .arg("--data-dir")
            .arg(data.path())
            .args(extra)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("serve logs before exiting").unwrap();
            if let Some(rest) = line.split("listening on http://0.0.0.0:").nth(1) {
                break rest.trim().parse().expect("port");
            }
        };
        std::thread::spawn(move || lines.for_each(drop)); // keep draining the log
        Served { child, port }
    }

    /// `multichat-server discover`, its lines read as they come.
    fn discover(&self) -> Events {
        let mut child =
            self.command(&["discover"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
        let (send, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if send.send(event).is_err() {
                    break;
                }
            }
        });
        Events { child, lines }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Two namespaces, a host and a guest, joined by a veth pair: a LAN of two machines.
struct Lan {
    host: Netns,
    guest: Netns,
}

impl Lan {
    const HOST_IP: &str = "10.77.0.1";

    fn new() -> Option<Lan> {
        let host = Netns::new()?;
        let guest = Netns::new()?;
        // Made inside the namespaces: the names exist nowhere else, so tests running at once do not clash.
        ip(&["-n", &host.name, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1", "netns", &guest.name])
            .expect("veth pair");
        ip(&["-n", &host.name, "addr", "add", &format!("{}/24", Lan::HOST_IP), "dev", "lan0"]).expect("host address");
        ip(&["-n", &guest.name, "addr", "add", "10.77.0.2/24", "dev", "lan1"]).expect("guest address");
        // Up before any mDNS daemon starts: a daemon uses the interfaces that are up when it starts.
        ip(&["-n", &host.name, "link", "set", "lan0", "up"]).expect("up");
        ip(&["-n", &guest.name, "link", "set", "lan1", "up"]).expect("up");
        Some(Lan { host, guest })
    }
}

struct Served {
    child: Child,
    port: u16,
}

impl Served {
    /// Stops the server as an operator does (SIGTERM), and checks that it exits cleanly.
    fn stop(mut self) {
        let term = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(term.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a `discover` prints.
struct Events {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Events {
    /// The next event that matches (those before it are passed over); fails after [`WAIT`].
    fn until(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => {}
                Err(_) => panic!("discover never printed the awaited event"),
            }
        }
    }

    /// Everything printed during `time`.
    fn for_a_while(&self, time: Duration) -> Vec<Value> {
        let deadline = Instant::now() + time;
        let mut heard = Vec::new();
        while let Ok(event) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            heard.push(event);
        }
        heard
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish() as u32
}
