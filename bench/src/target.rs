//! The server under test: one this tool starts (a `multichat-server` binary, or the bare baseline server),
//! or one already running. Its resident memory and CPU time are read from `/proc`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// The admin account the tool creates on a server it starts (to create users and rooms).
pub const ADMIN: (&str, &str) = ("bench-admin", "bench-admin-password");

/// What is being measured.
pub struct Target {
    pub addr: SocketAddr,
    /// The server's process, when known: memory and CPU are read from it.
    pub pid: Option<u32>,
    /// An admin's credentials, to create users and rooms; `None` for the baseline (no accounts at all).
    pub admin: Option<(String, String)>,
    /// How the server was started, for the report.
    pub description: String,
    child: Option<Child>,
    _data: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts `binary` (a `multichat-server`) on a fresh SQLite database in a temporary directory, with
    /// `extra` options before `serve`.
    pub fn spawn_server(binary: &Path, extra: &[String]) -> anyhow::Result<Target> {
        let data = tempfile::tempdir()?;
        let mut create = Command::new(binary)
            .arg("--data-dir")
            .arg(data.path())
            .args(["createsuperuser", "--username", ADMIN.0, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        if let Some(mut stdin) = create.stdin.take() {
            writeln!(stdin, "{}", ADMIN.1)?;
        }
        let created = create.wait_with_output()?;
        if !created.status.success() {
            bail!("createsuperuser failed: {}", String::from_utf8_lossy(&created.stderr));
        }
        let mut command = Command::new(binary);
        command.arg("--data-dir").arg(data.path()).args(["--bind", "127.0.0.1:0"]).args(extra).arg("serve");
        let description = format!("multichat-server {} serve (SQLite in a temporary directory)", extra.join(" "));
        let mut target = Target::spawn(command, description)?;
        target.admin = Some((ADMIN.0.to_owned(), ADMIN.1.to_owned()));
        target._data = Some(data);
        Ok(target)
    }

    /// Starts the bare fan-out server (this tool's `baseline-server` command).
    pub fn spawn_baseline() -> anyhow::Result<Target> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["baseline-server", "--bind", "127.0.0.1:0"]);
        Target::spawn(command, "multichat-bench baseline-server (bare tokio fan-out, no features)".into())
    }

    /// A server already running at `addr` (its `pid`, if given, for memory and CPU).
    pub fn running(addr: SocketAddr, pid: Option<u32>, admin: Option<(String, String)>) -> Target {
        Target { addr, pid, admin, description: format!("a running server at {addr}"), child: None, _data: None }
    }

    fn spawn(mut command: Command, description: String) -> anyhow::Result<Target> {
        let mut child = command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("could not start the server")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let status = child.wait()?;
                bail!("the server exited ({status}) before listening");
            };
            let line = line?;
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.trim().parse::<SocketAddr>().context("the logged address")?;
            }
        };
        // Keep draining the log, so that the server never blocks writing it.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Target { addr, pid: Some(child.id()), admin: None, description, child: Some(child), _data: None })
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's resident memory, in bytes.
    pub fn rss(&self) -> Option<u64> {
        self.pid.and_then(|pid| rss_of(&format!("/proc/{pid}/status")))
    }

    /// The server's CPU time so far (user + system).
    pub fn cpu(&self) -> Option<Duration> {
        self.pid.and_then(|pid| cpu_of(&format!("/proc/{pid}/stat")))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `VmRSS` of a `/proc/…/status` file.
pub fn rss_of(status: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system time of a `/proc/…/stat` file.
pub fn cpu_of(stat: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The `multichat-server` binary next to this one (both are built into the same target directory).
pub fn sibling_server() -> Option<PathBuf> {
    let path = std::env::current_exe().ok()?.with_file_name("multichat-server");
    path.exists().then_some(path)
}
