//! The server's HTTP API, called from the Rust side: the webview never talks to the server itself, so the
//! server needs no CORS opening, and the session token never enters the webview.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::tls;

/// One server, by its canonical base address ([`crate::address::normalize`]).
#[derive(Clone)]
pub struct Server {
    base: String,
    client: reqwest::Client,
}

/// A server's answer as the client's `Api` reads it: the status, the JSON body (None when there is none or
/// it is not JSON) and, for 429, how long to wait.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
    pub retry_after: Option<u64>,
}

/// A successful login: the token (kept on the Rust side) and the user (for the window).
pub struct LoggedIn {
    pub token: String,
    pub user: Value,
}

/// How long any one call may take.
const TIMEOUT: Duration = Duration::from_secs(15);

impl Server {
    pub fn new(base: String, tls: &Arc<rustls::ClientConfig>) -> Server {
        let client = reqwest::Client::builder().timeout(TIMEOUT).use_preconfigured_tls((**tls).clone()).build();
        let client = client.unwrap_or_else(|err| {
            tracing::error!(cause = %err, "no HTTP client with TLS; plain HTTP only");
            reqwest::Client::default()
        });
        Server { base, client }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `method path` with an optional token and JSON body. Any answer is Ok; only no answer is an error.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Result<Answer> {
        if !path.starts_with("/api/") {
            return Err(Error::BadAddress);
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| Error::BadAddress)?;
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| {
            tracing::debug!(cause = %err, server = %self.base, "no answer");
            if tls::is_untrusted(&err) {
                Error::Untrusted
            } else {
                Error::Unreachable
            }
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.json::<Value>().await.ok();
        Ok(Answer { status, body, retry_after })
    }

    /// Logs in; a refusal carries the server's reason (the window words 401 and 429 itself).
    pub async fn login(&self, username: &str, password: &str) -> Result<LoggedIn> {
        let body = json!({ "username": username, "password": password });
        let answer = self.call("POST", "/api/login", None, Some(&body)).await?.ok()?;
        let token = answer["token"].as_str().ok_or(Error::NotMultiChat)?.to_owned();
        Ok(LoggedIn { token, user: answer["user"].clone() })
    }

    /// Who a token belongs to; [`Error::NotLoggedIn`] when the session is over.
    pub async fn me(&self, token: &str) -> Result<Value> {
        self.call("GET", "/api/me", Some(token), None).await?.ok()
    }

    /// Ends the session on the server.
    pub async fn logout(&self, token: &str) -> Result<()> {
        self.call("POST", "/api/logout", Some(token), Some(&json!({}))).await?.ok().map(drop)
    }

    /// Whether the server still needs its first admin account.
    pub async fn setup_needed(&self) -> Result<bool> {
        let answer = self.call("GET", "/api/setup", None, None).await?.ok()?;
        answer["needed"].as_bool().ok_or(Error::NotMultiChat)
    }
}

impl Answer {
    /// The body of a successful answer, or the refusal as an error.
    fn ok(self) -> Result<Value> {
        match (self.status, self.body) {
            (200..=299, Some(body)) => Ok(body),
            (204, None) => Ok(Value::Null),
            (200..=299, None) => Err(Error::NotMultiChat),
            (401, _) => Err(Error::NotLoggedIn),
            (status, body) => {
                let reason = body.as_ref().and_then(|b| b["error"].as_str()).unwrap_or("the server refused");
                Err(Error::Refused { status, message: sentence(reason), retry_after: self.retry_after })
            }
        }
    }
}

/// The server's short error texts, as sentences.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_sentences() {
        assert_eq!(sentence("that username is taken"), "That username is taken.");
        assert_eq!(sentence("Done!"), "Done!");
    }

    #[test]
    fn a_success_without_json_is_not_multichat() {
        let answer = Answer { status: 200, body: None, retry_after: None };
        assert!(matches!(answer.ok(), Err(Error::NotMultiChat)));
    }
}
