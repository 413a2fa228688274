//! The desktop shell's one error type. Each message is a sentence a person can act on: commands hand it to
//! the window as it is.

use std::net::SocketAddr;

use keyring::Error as KeyringError;
use serde::ser::SerializeStruct;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Remembering logins (credentials.rs).
    #[error("No keyring is available on this computer, so this login cannot be remembered; you will be asked to log in next time.")]
    KeyringUnavailable,
    #[error("The keyring is locked; unlock it to remember this login.")]
    KeyringLocked,
    #[error("The keyring refused: {0}.")]
    Keyring(#[source] KeyringError),

    // Talking to a server (api.rs).
    #[error("That is not a server address. Write it like 192.168.1.20:8000 or https://chat.example.com.")]
    BadAddress,
    #[error("The server cannot be reached. Check the address and your connection, and try again.")]
    Unreachable,
    #[error("That address answers, but not as a MultiChat server.")]
    NotMultiChat,
    /// The server refused, with its own sentence (and a wait, for 429).
    #[error("{message}")]
    Refused { status: u16, message: String, retry_after: Option<u64> },
    #[error("You are not logged in.")]
    NotLoggedIn,
    #[error("The server's certificate is not trusted by this computer, so the connection was refused.")]
    Untrusted,
    #[error("Secure connections could not be set up: {0}.")]
    Tls(String),

    // Hosting a server (host.rs).
    #[error("Could not listen on {addr}: {cause}.")]
    Bind { addr: SocketAddr, cause: std::io::Error },
    #[error("{0}")]
    Server(#[from] multichat_server::Error),
    #[error("The app's settings could not be saved: {0}.")]
    Settings(String),
    #[error("Could not open a window: {0}.")]
    Window(String),
}

impl Error {
    /// The HTTP status behind the error, when a server gave one (0 when none did).
    pub fn status(&self) -> u16 {
        match self {
            Error::Refused { status, .. } => *status,
            Error::NotLoggedIn => 401,
            _ => 0,
        }
    }
}

/// Commands hand errors to the window as `{status, message}`: the client words 401 and 429 itself.
impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Error", 3)?;
        out.serialize_field("status", &self.status())?;
        out.serialize_field("message", &self.to_string())?;
        let retry_after = match self {
            Error::Refused { retry_after, .. } => *retry_after,
            _ => None,
        };
        out.serialize_field("retry_after", &retry_after)?;
        out.end()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
