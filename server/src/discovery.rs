//! LAN discovery over mDNS / DNS-SD: a server announces itself as `_multichat._tcp.local.` and clients
//! browse for it, so that nobody on a LAN has to type an IP address.
//!
//! Both sides run `mdns-sd`'s daemon (a thread of its own, UDP 5353). Discovery is best effort: a machine
//! without multicast or without an interface gets an error here, which callers log and carry on without.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The DNS-SD service type MultiChat servers announce.
pub const SERVICE_TYPE: &str = "_multichat._tcp.local.";

/// TXT `proto`: the chat protocol's version, raised only by an incompatible change, so that a client can
/// tell a server it cannot talk to before trying.
pub const PROTOCOL_VERSION: u32 = 1;

/// DNS-SD caps an instance name at 63 bytes; the display name travels whole in TXT `name`.
const INSTANCE_NAME_MAX: usize = 63;

/// How long a stopping advertiser waits for its goodbye packets to go out.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// Which kind of MultiChat announces itself (TXT `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The desktop app's "Host server".
    Desktop,
    /// The headless `multichat-server`.
    Server,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Desktop => "desktop",
            Kind::Server => "server",
        }
    }
}

/// Where mDNS runs: every interface the machine has, or only the named ones (a laptop on a VPN may not
/// want to announce there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces(pub Vec<String>);

/// What a server says about itself.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// What people see in the list (TXT `name`; the instance name too, shortened if need be).
    pub name: String,
    pub kind: Kind,
    /// The address the server listens on: all of a machine's addresses are announced when it listens on all
    /// of them, else that one only.
    pub bind: SocketAddr,
    pub interfaces: Interfaces,
}

/// The name a host announces unless told otherwise: "MultiChat on <this computer's name>".
pub fn default_name() -> String {
    match whoami::fallible::devicename().or_else(|_| whoami::fallible::hostname()) {
        Ok(device) if !device.trim().is_empty() => format!("MultiChat on {}", device.trim()),
        _ => "MultiChat".to_owned(),
    }
}

/// A server's announcement on the LAN, withdrawn (with goodbye packets) by [`Advertiser::stop`] or on drop.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Advertiser {
    /// Starts announcing. Fails when mDNS cannot run here (no usable interface, port 5353 refused).
    pub fn start(announcement: &Announcement) -> Result<Advertiser, Error> {
        let name = announcement.name.trim();
        if name.is_empty() {
            return Err(Error::Config("the name to announce on the LAN is empty".into()));
        }
        let daemon = daemon(&announcement.interfaces)?;
        let properties = [
            ("proto", PROTOCOL_VERSION.to_string()),
            ("name", truncate(name, 240).to_owned()),
            ("kind", announcement.kind.as_str().to_owned()),
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ];
        let host = format!("{}.local.", host_label());
        let bind = announcement.bind;
        let ips: Vec<IpAddr> = if bind.ip().is_unspecified() { Vec::new() } else { vec![bind.ip()] };
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            truncate(name, INSTANCE_NAME_MAX),
            &host,
            &ips[..],
            bind.port(),
            &properties[..],
        )
        .map_err(mdns_error)?;
        // Listening on every address: announce every address, and follow them as they come and go.
        let info = if ips.is_empty() { info.enable_addr_auto() } else { info };
        let fullname = info.get_fullname().to_owned();
        daemon.register(info).map_err(mdns_error)?;
        tracing::info!(name, port = bind.port(), "announcing this server on the LAN ({SERVICE_TYPE})");
        Ok(Advertiser { daemon, fullname })
    }

    /// The announced service's full DNS-SD name (how browsers key it).
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraws the announcement: browsers drop the server at once instead of when its records expire.
    pub async fn stop(self) {
        if let Ok(status) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(GOODBYE_WAIT, status.recv_async()).await;
        }
        tracing::info!("no longer announcing this server on the LAN");
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        // Already shut down by `stop`, or going without waiting: either way the daemon sends its goodbyes.
        let _ = self.daemon.shutdown();
    }
}

/// A MultiChat server found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The service's full DNS-SD name: unique on the LAN, and what [`Change::Lost`] names.
    pub id: String,
    pub name: String,
    pub kind: Option<Kind>,
    /// Its protocol version (TXT `proto`); a client should not offer one it cannot talk to.
    pub protocol: Option<u32>,
    pub version: Option<String>,
    pub port: u16,
    /// Every address it was seen at (IPv6 link-local ones with their `%interface`).
    pub addresses: Vec<String>,
    /// The address to open, if one is usable: a LAN IPv4 address first, then loopback, then a routable IPv6 one.
    pub url: Option<String>,
}

impl Found {
    /// Whether this client speaks the found server's protocol.
    pub fn compatible(&self) -> bool {
        self.protocol == Some(PROTOCOL_VERSION)
    }
}

/// What a browser learns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Change {
    /// A server appeared, or one already found showed more addresses.
    Found(Found),
    /// A server withdrew its announcement, or its records expired.
    Lost { id: String },
}

/// Watches the LAN for MultiChat servers.
pub struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    /// One service is resolved several times (IPv4 first, then both families): its addresses are merged.
    known: HashMap<String, (BTreeSet<IpAddr>, BTreeSet<String>)>,
}

impl Browser {
    pub fn start(interfaces: &Interfaces) -> Result<Browser, Error> {
        let daemon = daemon(interfaces)?;
        let events = daemon.browse(SERVICE_TYPE).map_err(mdns_error)?;
        Ok(Browser { daemon, events, known: HashMap::new() })
    }

    /// The next change, or `None` once the daemon has stopped.
    pub async fn next(&mut self) -> Option<Change> {
        loop {
            match self.events.recv_async().await.ok()? {
                ServiceEvent::ServiceResolved(service) => {
                    let (ips, shown) = self.known.entry(service.fullname.clone()).or_default();
                    let before = shown.len();
                    for address in &service.addresses {
                        ips.insert(address.to_ip_addr());
                        shown.insert(address.to_string());
                    }
                    if shown.len() == before && before > 0 {
                        continue;
                    }
                    let txt = |key| service.get_property_val_str(key).map(str::to_owned);
                    let name = txt("name").unwrap_or_else(|| instance_name(&service.fullname));
                    return Some(Change::Found(Found {
                        id: service.fullname.clone(),
                        name,
                        kind: txt("kind").and_then(|k| serde_json::from_value(serde_json::Value::String(k)).ok()),
                        protocol: txt("proto").and_then(|p| p.parse().ok()),
                        version: txt("version"),
                        port: service.port,
                        addresses: shown.iter().cloned().collect(),
                        url: best_url(ips, service.port),
                    }));
                }
                ServiceEvent::ServiceRemoved(_, fullname) if self.known.remove(&fullname).is_some() => {
                    return Some(Change::Lost { id: fullname });
                }
                _ => {}
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

fn daemon(interfaces: &Interfaces) -> Result<ServiceDaemon, Error> {
    let daemon = ServiceDaemon::new().map_err(mdns_error)?;
    if !interfaces.0.is_empty() {
        daemon.disable_interface(IfKind::All).map_err(mdns_error)?;
        let names: Vec<IfKind> = interfaces.0.iter().map(|name| IfKind::Name(name.clone())).collect();
        daemon.enable_interface(names).map_err(mdns_error)?;
    }
    Ok(daemon)
}

fn mdns_error(err: mdns_sd::Error) -> Error {
    Error::Config(format!("LAN discovery (mDNS) is unavailable: {err}"))
}

/// This machine's name as a DNS label (what the announced addresses are filed under).
fn host_label() -> String {
    let name = whoami::fallible::hostname().unwrap_or_default().to_ascii_lowercase();
    let label: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "multichat".to_owned()
    } else {
        truncate(label, INSTANCE_NAME_MAX).to_owned()
    }
}

fn instance_name(fullname: &str) -> String {
    fullname.strip_suffix(SERVICE_TYPE).unwrap_or(fullname).trim_end_matches('.').to_owned()
}

/// The longest prefix of `s` that fits in `max` bytes without splitting a character.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn best_url(ips: &BTreeSet<IpAddr>, port: u16) -> Option<String> {
    let rank = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(1),
        IpAddr::V4(v4) if v4.is_link_local() => Some(2),
        IpAddr::V4(_) => Some(0),
        // A link-local IPv6 address needs its interface, which a URL cannot carry.
        IpAddr::V6(v6) if v6.is_unicast_link_local() => None,
        IpAddr::V6(v6) if v6.is_loopback() => Some(4),
        IpAddr::V6(_) => Some(3),
    };
    let best = ips.iter().filter_map(|ip| Some((rank(ip)?, ip))).min()?;
    Some(format!("http://{}", SocketAddr::new(*best.1, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_prefers_a_lan_ipv4_address_and_never_a_link_local_ipv6_one() {
        let ips = |list: &[&str]| list.iter().map(|ip| ip.parse().unwrap()).collect::<BTreeSet<IpAddr>>();
        let url = |list: &[&str]| best_url(&ips(list), 8000);
        assert_eq!(url(&["127.0.0.1", "192.168.1.20", "fe80::1"]).as_deref(), Some("http://192.168.1.20:8000"));
        assert_eq!(url(&["fe80::1", "127.0.0.1"]).as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(url(&["fe80::1", "2001:db8::5"]).as_deref(), Some("http://[2001:db8::5]:8000"));
        assert_eq!(url(&["fe80::1"]), None);
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let name = "é".repeat(40); // 80 bytes
        let cut = truncate(&name, INSTANCE_NAME_MAX);
        assert_eq!(cut.len(), 62);
        assert!(name.starts_with(cut));
    }

    #[test]
    fn a_host_label_is_a_dns_label() {
        let label = host_label();
        assert!(!label.is_empty() && label.len() <= INSTANCE_NAME_MAX);
        assert!(label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{label}");
    }
}
