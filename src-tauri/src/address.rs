//! Server addresses as people write them (`192.168.1.20`, `chat.lan:8000`, `https://chat.example.com/`) made
//! into the one form the app stores and connects to: `scheme://host[:port]`, no path, no trailing slash.

use crate::error::{Error, Result};

/// The port a bare host name means: the server's default (`--bind 127.0.0.1:8000`).
pub const DEFAULT_PORT: u16 = 8000;

/// The canonical base address of a server, from what a person typed.
pub fn normalize(input: &str) -> Result<String> {
    let input = input.trim();
    let (scheme, rest) = match input.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_owned(), input),
    };
    if scheme != "http" && scheme != "https" {
        return Err(Error::BadAddress);
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.chars().any(char::is_whitespace) {
        return Err(Error::BadAddress);
    }
    let has_port = match authority.rsplit_once(':') {
        // `[::1]` has colons but no port; `[::1]:8000` and `host:8000` have one.
        Some((host, port)) if !host.is_empty() && (!authority.starts_with('[') || host.ends_with(']')) => {
            port.parse::<u16>().map_err(|_| Error::BadAddress)?;
            true
        }
        Some(_) if !authority.starts_with('[') => return Err(Error::BadAddress),
        _ => false,
    };
    let authority = authority.to_ascii_lowercase();
    // A bare host over plain HTTP is a LAN server on the default port; over HTTPS it is behind a proxy on 443.
    Ok(if has_port || scheme == "https" {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}:{DEFAULT_PORT}")
    })
}

/// The chat socket of a server given by its canonical base address.
pub fn chat_url(base: &str) -> String {
    let socket = base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    format!("{socket}/chat/stream/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_one_way() {
        assert_eq!(normalize("192.168.1.20").unwrap(), "http://192.168.1.20:8000");
        assert_eq!(normalize(" Chat.LAN:9000/ ").unwrap(), "http://chat.lan:9000");
        assert_eq!(normalize("https://chat.example.com/rooms").unwrap(), "https://chat.example.com");
        assert_eq!(normalize("http://[::1]:8000").unwrap(), "http://[::1]:8000");
        assert_eq!(normalize("[::1]").unwrap(), "http://[::1]:8000");
    }

    #[test]
    fn what_is_not_an_address_says_so() {
        for bad in ["", "ftp://host", "host:port", "user@host", "two words", "host:99999"] {
            assert!(matches!(normalize(bad), Err(Error::BadAddress)), "{bad:?}");
        }
    }

    #[test]
    fn the_chat_socket_follows_the_scheme() {
        assert_eq!(chat_url("http://lan:8000"), "ws://lan:8000/chat/stream/");
        assert_eq!(chat_url("https://chat.example.com"), "wss://chat.example.com/chat/stream/");
    }
}
