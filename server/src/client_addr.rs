//! Who is asking: the peer's address, or — when the peer is a reverse proxy this server was told to trust —
//! the client address the proxy passed on in `X-Forwarded-For`. Without trusted proxies the header is
//! ignored, so a client cannot pick its own address (and escape the login throttle) by sending one.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address of the client behind `peer`.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.ip();
    if !is_trusted(&peer) {
        return peer;
    }
    // Each proxy appends the address it saw; read from the right, the first one not a trusted proxy is the
    // client (what is further left was written by the client itself and proves nothing).
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    forwarded.iter().rev().find(|ip| !is_trusted(ip)).or(forwarded.first()).copied().unwrap_or(peer)
}

/// A trusted proxy as configured: a network (`10.0.0.0/8`) or a single address (`172.18.0.5`).
pub fn parse_trusted(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an address nor a network like 10.0.0.0/8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let spoofed = headers(&["1.2.3.4"]);
        assert_eq!(client_ip(proxy, &spoofed, &[]), ip("10.0.0.2"), "no trusted proxies: the peer");
        let trusted = [parse_trusted("10.0.0.0/8").unwrap()];
        assert_eq!(client_ip(proxy, &spoofed, &trusted), ip("1.2.3.4"));
        let outsider: SocketAddr = "192.0.2.9:5000".parse().unwrap();
        assert_eq!(client_ip(outsider, &spoofed, &trusted), ip("192.0.2.9"), "an untrusted peer's header is ignored");
    }

    #[test]
    fn the_client_is_the_rightmost_address_not_a_trusted_proxy() {
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let trusted = [parse_trusted("10.0.0.0/8").unwrap()];
        let chain = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.3"]);
        assert_eq!(client_ip(proxy, &chain, &trusted), ip("198.51.100.7"), "6.6.6.6 was written by the client");
        assert_eq!(client_ip(proxy, &headers(&["garbage"]), &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn trusted_proxies_are_networks_or_single_addresses() {
        assert!(parse_trusted("172.18.0.5").is_ok());
        assert!(parse_trusted("fd00::/8").is_ok());
        assert!(parse_trusted("proxy.local").unwrap_err().contains("neither an address nor a network"));
    }
}
