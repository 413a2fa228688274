//! The app's login: which server, whose token, and the one chat socket that goes with it. Logging in opens
//! the socket and (with "remember me") files the token in the keyring; logging out undoes both and ends the
//! session on the server. Free of Tauri, so the whole flow is tested against a real server.

use std::sync::{Arc, Mutex, MutexGuard};

use rustls::ClientConfig;
use serde::Serialize;
use serde_json::Value;

use crate::address;
use crate::api::Server;
use crate::connection::{Connection, Windows};
use crate::credentials::{CredentialStore, Login};
use crate::error::{Error, Result};
use crate::settings::{Remembered, Settings};

/// A logged-in session.
struct Current {
    server: Server,
    token: String,
    user: Value,
    login: Login,
    connection: Connection,
}

/// What a window learns of the session: never the token.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub server: String,
    pub user: Value,
    /// Something to tell the person (the login could not be remembered, say).
    pub warning: Option<String>,
}

pub struct Sessions {
    credentials: Arc<dyn CredentialStore>,
    windows: Arc<dyn Windows>,
    tls: Arc<ClientConfig>,
    current: Mutex<Option<Current>>,
}

impl Sessions {
    pub fn new(credentials: Arc<dyn CredentialStore>, windows: Arc<dyn Windows>, tls: Arc<ClientConfig>) -> Sessions {
        Sessions { credentials, windows, tls, current: Mutex::new(None) }
    }

    /// Uses the keyring off the async threads: it may block on D-Bus, or on a prompt to unlock it.
    async fn keyring<T: Send + 'static>(
        &self,
        use_it: impl FnOnce(&dyn CredentialStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.credentials.clone();
        tokio::task::spawn_blocking(move || use_it(&*store)).await.unwrap_or(Err(Error::KeyringUnavailable))
    }

    fn current(&self) -> MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Logs in to `server` (as typed) and opens the chat socket. With `remember`, the token goes into the
    /// keyring and `settings` remember who; without a keyring the login still works, with a warning.
    pub async fn login(
        &self,
        settings: &mut Settings,
        server: &str,
        username: &str,
        password: &str,
        remember: bool,
    ) -> Result<SessionInfo> {
        let server = Server::new(address::normalize(server)?, &self.tls);
        let logged_in = match server.login(username, password).await {
            Err(Error::NotLoggedIn) if server.setup_needed().await.unwrap_or(false) => {
                return Err(Error::Refused {
                    status: 409,
                    message: "This server has no accounts yet. Open it in a browser to create its administrator."
                        .into(),
                    retry_after: None,
                })
            }
            other => other?,
        };
        // The server's spelling of the name (it folds case and width), so the keyring entry is found again.
        let username = logged_in.user["username"].as_str().unwrap_or(username).to_owned();
        let login = Login { server: server.base().to_owned(), username };
        settings.used_server(server.base());
        let mut warning = None;
        if remember {
            let (entry, token) = (login.clone(), logged_in.token.clone());
            match self.keyring(move |store| store.save(&entry, &token)).await {
                Ok(()) => {
                    settings.remembered =
                        Some(Remembered { server: login.server.clone(), username: login.username.clone() });
                }
                Err(err) => warning = Some(err.to_string()),
            }
        } else if settings.remembered.as_ref().is_some_and(|r| r.server == login.server && r.username == login.username)
        {
            // Logging in again without "remember me" takes back an earlier "remember me".
            let entry = login.clone();
            let _ = self.keyring(move |store| store.forget(&entry)).await;
            settings.remembered = None;
        }
        let info = self.begin(server, logged_in.token, logged_in.user, login).await;
        Ok(SessionInfo { warning, ..info })
    }

    /// Logs in with the remembered token, if there is one and the server still honours it. A token the
    /// server refuses is forgotten; an unreachable server keeps it for next time.
    pub async fn restore(&self, settings: &mut Settings) -> Result<Option<SessionInfo>> {
        if let Some(info) = self.info() {
            return Ok(Some(info));
        }
        let Some(remembered) = settings.remembered.clone() else { return Ok(None) };
        let login = Login { server: remembered.server, username: remembered.username };
        let entry = login.clone();
        let Some(token) = self.keyring(move |store| store.load(&entry)).await? else {
            settings.remembered = None;
            return Ok(None);
        };
        let server = Server::new(login.server.clone(), &self.tls);
        match server.me(&token).await {
            Ok(user) => Ok(Some(self.begin(server, token, user, login).await)),
            Err(Error::NotLoggedIn) => {
                let _ = self.keyring(move |store| store.forget(&login)).await;
                settings.remembered = None;
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    async fn begin(&self, server: Server, token: String, user: Value, login: Login) -> SessionInfo {
        // A session replaced (not logged out) closes its socket first, so its "closed" comes before the
        // new socket's states.
        let previous = self.current().take();
        if let Some(previous) = previous {
            previous.connection.close().await;
        }
        let url = address::chat_url(server.base());
        let connection = Connection::open(url, token.clone(), self.tls.clone(), self.windows.clone());
        let info = SessionInfo { server: server.base().to_owned(), user: user.clone(), warning: None };
        *self.current() = Some(Current { server, token, user, login, connection });
        info
    }

    /// The session as windows see it, if logged in.
    pub fn info(&self) -> Option<SessionInfo> {
        let current = self.current();
        let current = current.as_ref()?;
        Some(SessionInfo { server: current.server.base().to_owned(), user: current.user.clone(), warning: None })
    }

    /// The session's account as settings name it: `ann@http://lan:8000`.
    pub fn account(&self) -> Option<String> {
        self.current().as_ref().map(|c| format!("{}@{}", c.login.username, c.login.server))
    }

    /// Runs `f` with the session's server, token and connection.
    pub fn with<T>(&self, f: impl FnOnce(&Server, &str, &Connection) -> T) -> Result<T> {
        let current = self.current();
        let current = current.as_ref().ok_or(Error::NotLoggedIn)?;
        Ok(f(&current.server, &current.token, &current.connection))
    }

    /// Logs out: closes the socket, forgets the remembered token, and ends the session on the server
    /// (a server that cannot be reached then lets the session expire by itself).
    pub async fn logout(&self, settings: &mut Settings) {
        let Some(current) = self.current().take() else { return };
        if settings
            .remembered
            .as_ref()
            .is_some_and(|r| r.server == current.login.server && r.username == current.login.username)
        {
            settings.remembered = None;
        }
        let entry = current.login.clone();
        if let Err(err) = self.keyring(move |store| store.forget(&entry)).await {
            tracing::warn!(cause = %err, "could not forget the remembered login");
        }
        current.connection.close().await;
        if let Err(err) = current.server.logout(&current.token).await {
            tracing::info!(cause = %err, "the server did not take the logout");
        }
    }
}
