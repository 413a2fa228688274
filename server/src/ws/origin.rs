//! Which web origins may open the chat socket: a defence against cross-site WebSocket hijacking, where
//! another site's page opens our socket and the browser attaches our user's cookie.

/// The origins of the desktop app's webview (Tauri v2 on Linux/macOS, and on Windows).
pub const DESKTOP_ORIGINS: [&str; 3] = ["tauri://localhost", "http://tauri.localhost", "https://tauri.localhost"];

/// True for the server's own origin (the `Host` the request was sent to), the desktop app's, and the
/// configured extras. Compared case-insensitively, as origins are.
pub fn is_allowed_origin(origin: &str, host: Option<&str>, extra: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    let same_host = host.is_some_and(|host| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
    });
    same_host
        || DESKTOP_ORIGINS.iter().any(|o| o.eq_ignore_ascii_case(origin))
        || extra.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_desktop_and_configured_origins_pass_others_do_not() {
        let extra = vec!["https://chat.example.com".to_owned()];
        assert!(is_allowed_origin("http://127.0.0.1:8000", Some("127.0.0.1:8000"), &[]));
        assert!(is_allowed_origin("https://LAN-Box:8000", Some("lan-box:8000"), &[]));
        assert!(is_allowed_origin("tauri://localhost", Some("127.0.0.1:8000"), &[]));
        assert!(is_allowed_origin("https://chat.example.com", Some("10.0.0.2:8000"), &extra));
        assert!(!is_allowed_origin("http://evil.example", Some("127.0.0.1:8000"), &extra));
        assert!(!is_allowed_origin("http://127.0.0.1:9999", Some("127.0.0.1:8000"), &[]));
        assert!(!is_allowed_origin("null", None, &[]));
    }
}
